"""The order store's Lua scripts: each change of an order is one atomic step in Redis.

`CREATE` and `COMPARE_AND_SET` write the order, append it to the outbox, keep the
unsettled and unsent indexes and the expiry, and push a queue message if given — all
or nothing. `PUSH` queues a message on its own. The KEYS/ARGV layouts are documented
beside each script; `orders.store` builds them.

Pre-trade risk counts live here too, so two gateways cannot both pass the last unit of
a limit: `CREATE` checks the trading mode, open orders, orders today and the position
(with open orders on the same side) and reserves the order in the same step; every
change then keeps the reservation at the order's open quantity and releases it when the
order becomes final. Quantities are integers of 1e-8 (`orders.risk_state.QTY_SCALE`).
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
# account's unsent index, KEYS[7] risk reservations (order id -> '<SYMBOL>:<SIDE> <units>'),
# KEYS[8] open quantity per '<SYMBOL>:<SIDE>' (units); ARGV[1] order id,
# ARGV[2] order JSON, ARGV[3] created_at, ARGV[4] 1 if settled, ARGV[5] TTL (s) once
# settled, ARGV[6] outbox MINID, ARGV[7] new fills JSON, ARGV[8] the state it was in ('' for
# a new order), ARGV[9] 1 if it is unsent, ARGV[10] the order's open quantity in units now
# (-1: final, release its reservation).
_RECORD = """
local held = redis.call('HGET', KEYS[7], ARGV[1])
if held then
  local sep = string.find(held, ' ', 1, true)
  local side_field = string.sub(held, 1, sep - 1)
  local was_units = tonumber(string.sub(held, sep + 1))
  local now_units = tonumber(ARGV[10])
  if now_units < 0 then
    redis.call('HDEL', KEYS[7], ARGV[1])
    redis.call('HINCRBY', KEYS[8], side_field, string.format('%d', -was_units))
  elseif now_units ~= was_units then
    redis.call('HSET', KEYS[7], ARGV[1], side_field .. ' ' .. ARGV[10])
    redis.call('HINCRBY', KEYS[8], side_field, string.format('%d', now_units - was_units))
  end
end
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

# The risk gate of CREATE (only if ARGV[11] is '1'). KEYS[12] trading mode hash, KEYS[13]
# positions (symbol -> signed units), KEYS[14] today's order count; ARGV[12] '<SYMBOL>:<SIDE>',
# ARGV[13] side, ARGV[14] symbol, ARGV[15] quantity (units), ARGV[16] '1' if reduce-only,
# ARGV[17] max open orders, ARGV[18] max orders per day (0 = none), ARGV[19] max position
# (units, -1 = none), ARGV[20] seconds the day counter is kept. A refusal returns
# {limit, value, allowance}; nothing is written.
_RISK_GATE = """
if ARGV[11] == '1' then
  local qty = tonumber(ARGV[15])
  local pos = tonumber(redis.call('HGET', KEYS[13], ARGV[14]) or '0')
  local open_same = tonumber(redis.call('HGET', KEYS[8], ARGV[12]) or '0')
  local shrinks = (ARGV[13] == 'SELL' and pos > 0) or (ARGV[13] == 'BUY' and pos < 0)
  local mode = redis.call('HGET', KEYS[12], 'mode') or 'ACTIVE'
  if mode == 'HALTED' then return {'trading_mode', 'HALTED', 'no new orders'} end
  if mode == 'REDUCING' and not (shrinks and open_same + qty <= math.abs(pos)) then
    return {'trading_mode', 'REDUCING', 'only orders that reduce a position'}
  end
  local max_open = tonumber(ARGV[17])
  if max_open > 0 then
    local open = redis.call('HLEN', KEYS[7])
    if open + 1 > max_open then return {'max_open_orders', tostring(open + 1), ARGV[17]} end
  end
  local max_day = tonumber(ARGV[18])
  local today = tonumber(redis.call('GET', KEYS[14]) or '0')
  if max_day > 0 and today + 1 > max_day then
    return {'max_orders_per_day', tostring(today + 1), ARGV[18]}
  end
  local max_pos = tonumber(ARGV[19])
  if max_pos >= 0 and not (ARGV[16] == '1' and shrinks) then
    local worst = open_same + qty
    if ARGV[13] == 'BUY' then worst = worst + pos else worst = worst - pos end
    if worst > max_pos then
      return {'max_position_quantity', string.format('%d', worst), ARGV[19]}
    end
  end
  redis.call('HSET', KEYS[7], ARGV[1], ARGV[12] .. ' ' .. ARGV[15])
  redis.call('HINCRBY', KEYS[8], ARGV[12], ARGV[15])
  redis.call('INCR', KEYS[14])
  redis.call('EXPIRE', KEYS[14], ARGV[20])
end
"""

# KEYS[9], KEYS[10], KEYS[11]: the time indexes (all, the symbol's, the owner's — the first
# again for an order without owner); the risk gate's KEYS[12..14] / ARGV[11..20]; push at
# KEYS[15..17] / ARGV[21..23]. Returns the winning order id, or the risk gate's refusal.
CREATE = (
    """
local existing = redis.call('GET', KEYS[2])
if existing then return existing end
"""
    + _RISK_GATE
    + """
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'version', '1')
redis.call('ZADD', KEYS[9], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[10], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[11], ARGV[3], ARGV[1])
"""
    + _RECORD
    + _push_lua(key=15, arg=21)
    + "return ARGV[1]"
)

# ARGV[11] expected version, ARGV[12] new version; push at KEYS[9..11] / ARGV[13..15].
COMPARE_AND_SET = (
    """
local current = redis.call('HGET', KEYS[1], 'version')
if not current then return -1 end
if current ~= ARGV[11] then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'version', ARGV[12])
"""
    + _RECORD
    + _push_lua(key=9, arg=13)
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
