"""The order store's Lua scripts: each change of an order is one atomic step in Redis.

`CREATE` and `COMPARE_AND_SET` write the order, append it to the outbox, keep the
unsettled and unsent indexes and the expiry, and push a queue message if given — all
or nothing. `PUSH` queues a message on its own. The KEYS/ARGV layouts are documented
beside each script; `orders.store` builds them.

Pushing a queue message is written here once, for every producer: the message goes into
Dramatiq's Redis layout (its `.msgs` hash and its queue list, so Dramatiq's tooling reads
it) and its queue's doorbell rings: one entry per push, capped at `DOORBELL_CAP`, which an
idle worker blocks on (`tasks.redis_queues`). It lives below `tasks` because the order's
write and its message must be one script (exactly once); `tasks` uses the same doorbell cap
and `RING` for the messages it moves itself (retries, requeues) with Dramatiq's own script.

A version can be held back from the outbox (`orders.store` holds the worker's claim,
NEW -> SUBMITTING): the order hash then remembers it (`held_was`, the state it came from),
and the next change appends it to the outbox right before its own entry. Every version
still reaches the outbox once and in order, and the claim costs its readers no wake-up
of their own.

Pre-trade risk counts live here too, so two gateways cannot both pass the last unit of
a limit: `CREATE` checks the trading mode (the stricter of the account's kill switch and the
switch for every account), open orders, orders today and the position
(with open orders on the same side) and reserves the order in the same step; every
change then keeps the reservation at the order's open quantity and releases it when the
order becomes final. Quantities are integers of 1e-8 (`orders.risk_layout.QTY_SCALE`).

`FIND_FOR_REPORT` is the user-data stream's lookup: it answers "already reflected" instead
of the order when the stored order already shows everything an exchange report says, so
the listener does not ship, decode and re-apply an order for news it has (see the script).
"""

from __future__ import annotations

# A busy queue's doorbell stops growing here: a worker takes every entry at once (BLMPOP /
# LMPOP count), and one entry is enough to wake it.
DOORBELL_CAP = 16


def _ring_lua(bell: str) -> str:
    """Lua that rings the doorbell list `bell` (a Lua expression naming its key)."""
    return f"""  redis.call('RPUSH', {bell}, '1')
  redis.call('LTRIM', {bell}, -{DOORBELL_CAP}, -1)
"""


def _push_lua(key: int, arg: int) -> str:
    """Lua that pushes a QueuePush passed as KEYS[key..key+2] (its messages hash, queue list and
    doorbell) and ARGV[arg..arg+1] (message id, payload), if present."""
    return f"""
if #KEYS >= {key + 2} then
  redis.call('HSET', KEYS[{key}], ARGV[{arg}], ARGV[{arg + 1}])
  redis.call('RPUSH', KEYS[{key + 1}], ARGV[{arg}])
{_ring_lua(f"KEYS[{key + 2}]")}end
"""


# Shared tail of both scripts: KEYS[1] order hash, KEYS[2] client-id key, KEYS[3] outbox,
# KEYS[4] unsettled index, KEYS[5] the symbol's unsent (NEW, SUBMITTING) index, KEYS[6] the
# account's unsent index, KEYS[7] risk reservations (order id -> '<SYMBOL>:<SIDE> <units>'),
# KEYS[8] open quantity per '<SYMBOL>:<SIDE>' (units); ARGV[1] order id,
# ARGV[2] order JSON, ARGV[3] created_at, ARGV[4] 1 if settled, ARGV[5] TTL (s) once
# settled, ARGV[6] outbox MINID, ARGV[7] new fills JSON, ARGV[8] the state it was in ('' for
# a new order), ARGV[9] 1 if it is unsent, ARGV[10] the order's open quantity in units now
# (-1: final, release its reservation), ARGV[11] 1 to hold this version back from the outbox
# until the next change (see the module docstring).
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
if ARGV[11] == '1' then
  redis.call('HSET', KEYS[1], 'held_was', ARGV[8])
elseif ARGV[7] ~= '' then
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

# The risk gate of CREATE (only if ARGV[12] is '1'). KEYS[12] the account's trading mode hash,
# KEYS[13] its positions (symbol -> signed units), KEYS[14] its order count today, KEYS[15] the
# trading mode hash of the switch for every account; ARGV[13] '<SYMBOL>:<SIDE>', ARGV[14] side,
# ARGV[15] symbol, ARGV[16] quantity (units), ARGV[17] '1' if reduce-only, ARGV[18] max open
# orders, ARGV[19] max orders per day (0 = none), ARGV[20] max position (units, -1 = none),
# ARGV[21] seconds the day counter is kept. The mode in force is the stricter of the account's
# and every account's (HALTED > REDUCING > ACTIVE). A refusal returns {limit, value,
# allowance} ({'trading_mode', mode, rule, 'all' or 'account'} for the mode); nothing is written.
_RISK_GATE = """
if ARGV[12] == '1' then
  local qty = tonumber(ARGV[16])
  local pos = tonumber(redis.call('HGET', KEYS[13], ARGV[15]) or '0')
  local open_same = tonumber(redis.call('HGET', KEYS[8], ARGV[13]) or '0')
  local shrinks = (ARGV[14] == 'SELL' and pos > 0) or (ARGV[14] == 'BUY' and pos < 0)
  local strictness = {ACTIVE = 0, REDUCING = 1, HALTED = 2}
  local mode = redis.call('HGET', KEYS[12], 'mode') or 'ACTIVE'
  local switch = 'account'
  local every = redis.call('HGET', KEYS[15], 'mode') or 'ACTIVE'
  if (strictness[every] or 0) > (strictness[mode] or 0) then mode, switch = every, 'all' end
  if mode == 'HALTED' then return {'trading_mode', 'HALTED', 'no new orders', switch} end
  if mode == 'REDUCING' and not (shrinks and open_same + qty <= math.abs(pos)) then
    return {'trading_mode', 'REDUCING', 'only orders that reduce a position', switch}
  end
  local max_open = tonumber(ARGV[18])
  if max_open > 0 then
    local open = redis.call('HLEN', KEYS[7])
    if open + 1 > max_open then return {'max_open_orders', tostring(open + 1), ARGV[18]} end
  end
  local max_day = tonumber(ARGV[19])
  local today = tonumber(redis.call('GET', KEYS[14]) or '0')
  if max_day > 0 and today + 1 > max_day then
    return {'max_orders_per_day', tostring(today + 1), ARGV[19]}
  end
  local max_pos = tonumber(ARGV[20])
  if max_pos >= 0 and not (ARGV[17] == '1' and shrinks) then
    local worst = open_same + qty
    if ARGV[14] == 'BUY' then worst = worst + pos else worst = worst - pos end
    if worst > max_pos then
      return {'max_position_quantity', string.format('%d', worst), ARGV[20]}
    end
  end
  redis.call('HSET', KEYS[7], ARGV[1], ARGV[13] .. ' ' .. ARGV[16])
  redis.call('HINCRBY', KEYS[8], ARGV[13], ARGV[16])
  redis.call('INCR', KEYS[14])
  redis.call('EXPIRE', KEYS[14], ARGV[21])
end
"""

# KEYS[9], KEYS[10], KEYS[11]: the time indexes (all, the symbol's, the owner's — the first
# again for an order without owner); the risk gate's KEYS[12..15] / ARGV[12..21]; push at
# KEYS[16..18] / ARGV[22..23]. Returns the winning order id, or the risk gate's refusal.
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
    + _push_lua(key=16, arg=22)
    + "return ARGV[1]"
)

# ARGV[12] expected version, ARGV[13] new version; push at KEYS[9..11] / ARGV[14..15].
# A version held back goes to the outbox first. Returns 1 when written, -1 when there is no
# order, and the stored order's data when its version is not the expected one: the caller
# re-applies its change to that without a read of its own.
COMPARE_AND_SET = (
    """
local current = redis.call('HGET', KEYS[1], 'version')
if not current then return -1 end
if current ~= ARGV[12] then return redis.call('HGET', KEYS[1], 'data') end
local held_was = redis.call('HGET', KEYS[1], 'held_was')
if held_was then
  local held_data = redis.call('HGET', KEYS[1], 'data')
  redis.call('XADD', KEYS[3], 'MINID', '~', ARGV[6], '*', 'order', held_data, 'was', held_was)
  redis.call('HDEL', KEYS[1], 'held_was')
end
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'version', ARGV[13])
"""
    + _RECORD
    + _push_lua(key=9, arg=14)
    + "return 1"
)

PUSH = _push_lua(key=1, arg=1) + "return 1"

# Ring the doorbells KEYS[1..n], for messages queued by Dramatiq's own script (see above).
RING = "for _, bell in ipairs(KEYS) do\n" + _ring_lua("bell") + "end\nreturn 1"

# The order a client order id names, in one round trip. KEYS[1] the client-id key;
# ARGV[1] the order keys' prefix. Returns the order's data, or false.
FIND_BY_CLIENT_ID = """
local order_id = redis.call('GET', KEYS[1])
if not order_id then return false end
return redis.call('HGET', ARGV[1] .. order_id, 'data')
"""


# The order a client order id names, unless it already reflects an exchange report.
# KEYS[1] the client-id key; ARGV[1] the order keys' prefix, ARGV[2] the report's symbol,
# ARGV[3] the states the report leaves as they are, each between commas (",FILLED,...,"),
# ARGV[4] its cumulative filled quantity (a plain decimal, `decimal_str`), ARGV[5] its
# exchange order id, ARGV[6] its algo id ('' for none), ARGV[7..] its trade ids. Returns false
# when no order has the id, 1 when the stored order (of that symbol) already reflects the
# report, else the order's data.
#
# "Reflects" is exactly when `fsm.apply_report` would return None (tests/unit/test_find_for_report.py
# holds the two together over every pair of states): a state the report leaves as it is
# (`fsm.report_moves`, which the caller turns into ARGV[3]), the filled quantity not above
# the stored one (the stored one is never below its recorded fills: only `apply_report` sets
# either), the exchange and algo ids known or not reported, every trade id recorded.
#
# The fields are read from the order JSON (Order.to_json: compact, every string's quotes
# escaped) by their exact `"key":"` with string.match, not cjson.decode: decoding the whole
# order and building tables on every lookup cost Redis about as much CPU as the listener
# saved. The keys read are unique in the JSON (a fill has none of them), and an escaped
# value cannot fake one (its quotes are `\"`). A field missing or of another form makes the
# answer the data: the caller then decides.
FIND_FOR_REPORT = """
local order_id = redis.call('GET', KEYS[1])
if not order_id then return false end
local data = redis.call('HGET', ARGV[1] .. order_id, 'data')
if not data then return false end
local function field(key)
  return string.match(data, '"' .. key .. '":"([^"]*)"')
end
local function not_above(a, b)
  local ai, af = string.match(a, '^(%d+)%.?(%d*)$')
  local bi, bf = string.match(b or '', '^(%d+)%.?(%d*)$')
  if not ai or not bi then return false end
  ai = (string.gsub(ai, '^0+', ''))
  bi = (string.gsub(bi, '^0+', ''))
  if #ai ~= #bi then return #ai < #bi end
  if ai ~= bi then return ai < bi end
  local width = math.max(#af, #bf)
  af = af .. string.rep('0', width - #af)
  bf = bf .. string.rep('0', width - #bf)
  return af <= bf
end
if field('symbol') ~= ARGV[2] then return data end
local state = field('state')
if not state or not string.find(ARGV[3], ',' .. state .. ',', 1, true) then return data end
if not not_above(ARGV[4], field('filled_quantity')) then return data end
if ARGV[5] ~= '' and (field('exchange_order_id') or '') == '' then return data end
if ARGV[6] ~= '' and (field('algo_id') or '') == '' then return data end
for i = 7, #ARGV do
  if not string.find(data, '"trade_id":"' .. ARGV[i] .. '"', 1, true) then return data end
end
return 1
"""
