"""The `coro` command line: a Typer app over the runner's HTTP API (SPEC §5).

`coro.cli.main:main` is the console-script entry point; `coro.cli.client` is the
synchronous HTTP/SSE client the commands share; `coro.cli.demo` is `coro demo`.
"""
