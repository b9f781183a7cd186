"""The operating system as Coro uses it: child processes and the `git` CLI."""
