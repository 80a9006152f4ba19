"""The order store's Lua scripts: each change of an order is one atomic step in Redis.

`CREATE` and `COMPARE_AND_SET` write the order, append it to the outbox, keep the
unsettled and unsent indexes and the expiry, and push a queue message if given — all
or nothing. `PUSH` queues a message on its own. The KEYS/ARGV layouts are documented
beside each script; `orders.store` builds them.
"""

from __future__ import annotations


def _push_lua(key: int, arg: int) -> str:
    """Lua that pushes a QueuePush passed as KEYS[key..key+2] and ARGV[arg..arg+2], if present."""
    return f"""
if #KEYS >= {key + 2} then
  redis.call('HSET', KEYS[{key}], ARGV[{arg}], ARGV[{arg + 1}])
  redis.call('RPUSH', KEYS[{key + 1}], ARGV[{arg}])
  redis.call('RPUSH', KEYS[{key + 2}], '1')
  redis.call('LTRIM', KEYS[{key + 2}], -tonumber(ARGV[{arg + 2}]), -1)
end
"""


# Shared tail of both scripts: KEYS[1] order hash, KEYS[2] client-id key, KEYS[3] outbox,
# KEYS[4] unsettled index, KEYS[5] the symbol's unsent (NEW, SUBMITTING) index, KEYS[6] the
# account's unsent index; ARGV[1] order id,
# ARGV[2] order JSON, ARGV[3] created_at, ARGV[4] 1 if settled, ARGV[5] TTL (s) once
# settled, ARGV[6] outbox MINID, ARGV[7] new fills JSON, ARGV[8] the state it was in ('' for
# a new order), ARGV[9] 1 if it is unsent.
_RECORD = """
if ARGV[7] ~= '' then
  redis.call('XADD', KEYS[3], 'MINID', '~', ARGV[6], '*', 'order', ARGV[2], 'was', ARGV[8], 'fills', ARGV[7])
else
  redis.call('XADD', KEYS[3], 'MINID', '~', ARGV[6], '*', 'order', ARGV[2], 'was', ARGV[8])
end
if ARGV[4] == '1' then
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
else
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
if ARGV[9] == '1' then
  redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
  redis.call('ZADD', KEYS[6], ARGV[3], ARGV[1])
else
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('ZREM', KEYS[6], ARGV[1])
end
"""

# KEYS[7], KEYS[8], KEYS[9]: the time indexes (all, the symbol's, the owner's — the first
# again for an order without owner); push at KEYS[10..12] / ARGV[10..12].
CREATE = (
    """
local existing = redis.call('GET', KEYS[2])
if existing then return existing end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'version', '1')
redis.call('ZADD', KEYS[7], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[8], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[9], ARGV[3], ARGV[1])
"""
    + _RECORD
    + _push_lua(key=10, arg=10)
    + "return ARGV[1]"
)

# ARGV[10] expected version, ARGV[11] new version; push at KEYS[7..9] / ARGV[12..14].
COMPARE_AND_SET = (
    """
local current = redis.call('HGET', KEYS[1], 'version')
if not current then return -1 end
if current ~= ARGV[10] then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'version', ARGV[11])
"""
    + _RECORD
    + _push_lua(key=7, arg=12)
    + "return 1"
)

PUSH = _push_lua(key=1, arg=1) + "return 1"

# The order a client order id names, in one round trip. KEYS[1] the client-id key;
# ARGV[1] the order keys' prefix. Returns the order's data, or false.
FIND_BY_CLIENT_ID = """
local order_id = redis.call('GET', KEYS[1])
if not order_id then return false end
return redis.call('HGET', ARGV[1] .. order_id, 'data')
"""
