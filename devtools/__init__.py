"""Development tools: the `make run` launcher, embedded PostgreSQL and Redis, the pytest plugin.

Used by `make run`, `make test`, the benchmarks and the test suite only. Production code (jobsite/
and the apps) never imports this package (a test checks it), and the container image leaves it out
(.dockerignore).
"""
