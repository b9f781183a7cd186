"""`python -m coro`: the `coro` command line."""

from coro.cli.main import main

if __name__ == "__main__":
    main()
