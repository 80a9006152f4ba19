"""The machine Redis database the benches use.

Every bench that touches the machine's Redis (127.0.0.1:6379) works in this database and
may flush it. It is none of the tests' (they are allocated in `tests/redis_dbs.py`, and a
unit test checks they never take this one) and not db 0, the default a developer's own
`up` uses when a Redis is already running, so a bench run beside the suite or `up`
destroys nothing of theirs.
"""

BENCH_REDIS_DB = 1
