"""The Redis lifecycle store's Lua scripts (:mod:`.lifecycle_redis`).

Each runs atomically, in one round trip, with the queueing of the events
it makes, so an event is queued exactly once whoever calls at once.
Every key is under the broker's hash tag ``{PREFIX}`` (one Cluster slot)
and named in ``KEYS``. Hold, release and sweep share their first three
keys and arguments: ``KEYS[1]`` the counts hash (key -> processes holding
it), ``KEYS[2]`` the queue stream (fields ``t`` the type, ``f`` the fields
JSON), ``KEYS[3]`` the dropped counter; ``ARGV[1]`` the queue bound,
``ARGV[2]`` the configured event types, comma-separated.
"""

from __future__ import annotations

_PRELUDE = """
local bound, wanted = tonumber(ARGV[1]), {}
for kind in string.gmatch(ARGV[2], '[^,]+') do wanted[kind] = true end
local queued, dropped = 0, 0
local function queue(kind, fields)
  if not wanted[kind] then return end
  if redis.call('XLEN', KEYS[2]) >= bound then
    redis.call('INCR', KEYS[3])
    dropped = dropped + 1
  else
    redis.call('XADD', KEYS[2], '*', 't', kind, 'f', fields)
    queued = queued + 1
  end
end
-- One holder fewer of key; the last one queues its off event (the key is
-- TYPE TAB FIELDS).
local function release(key)
  if redis.call('HINCRBY', KEYS[1], key, -1) <= 0 then
    redis.call('HDEL', KEYS[1], key)
    local tab = string.find(key, '\\t', 1, true)
    if tab then queue(string.sub(key, 1, tab - 1), string.sub(key, tab + 1)) end
  end
end
"""

#: KEYS[4] the processes (a sorted set, score the expiry in ms), KEYS[5]
#: the process's keys (a set). ARGV[3] the process, ARGV[4] its expiry
#: (ms), then per hold its key, on type and on fields. Returns {queued, dropped}.
HOLD = (
    _PRELUDE
    + """
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
for i = 5, #ARGV, 3 do
  if redis.call('SADD', KEYS[5], ARGV[i]) == 1
      and redis.call('HINCRBY', KEYS[1], ARGV[i], 1) == 1 then
    queue(ARGV[i + 1], ARGV[i + 2])
  end
end
return {queued, dropped}
"""
)

#: KEYS[4] the process's keys. ARGV from 3: the keys it releases.
#: Returns {queued, dropped}.
RELEASE = (
    _PRELUDE
    + """
for i = 3, #ARGV do
  if redis.call('SREM', KEYS[4], ARGV[i]) == 1 then release(ARGV[i]) end
end
return {queued, dropped}
"""
)

#: KEYS[4] the processes, KEYS[5] the swept processes whose keys are not all
#: released yet, then per candidate process its keys and its swept keys
#: (the keys it held when swept, still to release). ARGV[3] now (ms),
#: ARGV[4] the most keys to release, ARGV[5] the most candidates to return,
#: then the candidates. An expired candidate is forgotten (so its heartbeat
#: answers False) and its keys become its swept keys, released a budget at
#: a time by this and the next calls; a candidate swept again before its
#: swept keys are all released waits until they are (a key it holds again
#: meanwhile is counted twice, and released twice, once per set). Returns
#: {queued, dropped, the next candidates}: expired or swept processes, none
#: when the sweep is done.
SWEEP = (
    _PRELUDE
    + """
local now, budget, most = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local function drain(swept)
  if budget <= 0 then return end
  local keys = redis.call('SPOP', swept, budget)
  for _, key in ipairs(keys) do release(key) end
  budget = budget - #keys
end
for i = 6, #ARGV do
  local proc, held, swept = ARGV[i], KEYS[2 * i - 6], KEYS[2 * i - 5]
  drain(swept)
  local expires = redis.call('ZSCORE', KEYS[4], proc)
  if budget > 0 and expires and tonumber(expires) <= now
      and redis.call('EXISTS', swept) == 0 then
    redis.call('ZREM', KEYS[4], proc)
    if redis.call('EXISTS', held) == 1 then
      redis.call('RENAME', held, swept)
      redis.call('SADD', KEYS[5], proc)
      drain(swept)
    end
  end
  if redis.call('EXISTS', swept) == 0 then redis.call('SREM', KEYS[5], proc) end
end
local next, seen = {}, {}
for _, proc in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, most)) do
  next[#next + 1] = proc
  seen[proc] = true
end
for _, proc in ipairs(redis.call('SRANDMEMBER', KEYS[5], most)) do
  if not seen[proc] then next[#next + 1] = proc end
end
return {queued, dropped, next}
"""
)

#: KEYS[1] the lease, KEYS[2] the queue. ARGV[1] the owner, then the ids to
#: delete. Returns 1, or 0 (nothing deleted) when the owner lacks the lease.
ACK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if #ARGV > 1 then redis.call('XDEL', KEYS[2], unpack(ARGV, 2)) end
return 1
"""

#: KEYS[1] the lease. ARGV: the owner, the ttl (ms). Returns 1 when the
#: owner holds the lease now (taken or renewed), else 0.
LEASE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

#: KEYS[1] the lease. ARGV[1] the owner: the lease goes if it is theirs.
UNLEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""
