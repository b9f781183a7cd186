"""Acme's Coro plugins: an in-memory issue tracker and an echo executor."""
