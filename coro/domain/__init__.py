"""The domain kernel: jobs, logs, workflows and the rules on them.

It imports nothing else of `coro`; every other package builds on it.
"""
