"""Benchmarks of the SPEC §7 quality bars: run `python -m bench.<name>` (or `bench.all`).

Each benchmark prints a short table and writes `bench/results/<name>.json`.
"""
