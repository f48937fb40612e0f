"""The Redis presence store's Lua scripts: each runs atomically, in one round trip.

Every script gets a channel's six presence keys, which share its hash tag
``{PREFIX:CHANNEL}`` (one Cluster slot): ``KEYS[1]`` ``:pc`` a sorted set,
client -> expiry (unix ms); ``KEYS[2]`` ``:pd`` a hash, client -> user (an
anonymous client has no entry); ``KEYS[3]`` ``:pu`` a sorted set of the
users, all at score 0, so ZRANGEBYLEX pages them in byte (= code point)
order; ``KEYS[4]`` ``:pn`` a hash, user -> how many clients; ``KEYS[5]``
``:pi`` a hash, user -> info (compact JSON); ``KEYS[6]`` ``:pl`` a set, the
*pending leaves*: users whose last client a read (counts, page) found
expired and removed, to be returned by the next sweep or remove.

Exactly one caller learns each leave: a user's client count reaches zero
inside one script run, which either returns the user (sweep, remove) or
adds it to ``:pl``; SMEMBERS and DEL of ``:pl`` happen in one run too. A
user who comes back while pending is taken out of ``:pl``, and the add
reports no join: nobody announced the leave.

The last two ARGV of every script are the caller's clock (unix ms) and a
margin (ms): after each write every key expires ``margin`` after the
latest client expiry, so presence that nobody sweeps leaves no key behind.
"""

from __future__ import annotations

_PRELUDE = """
local pc, pd, pu, pn, pi, pl = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local clock, margin = tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV])
-- Remove one client; its user when that was the user's last client.
local function drop(client)
  redis.call('ZREM', pc, client)
  local user = redis.call('HGET', pd, client)
  if not user then return nil end
  redis.call('HDEL', pd, client)
  if redis.call('HINCRBY', pn, user, -1) > 0 then return nil end
  redis.call('HDEL', pn, user)
  redis.call('HDEL', pi, user)
  redis.call('ZREM', pu, user)
  return user
end
-- Remove the clients expired at now (ms), at most 1000 (a call blocks Redis
-- for about 12 ms at most); append the users who left to left. True when
-- more may be expired: the caller calls again.
local function expire(now, left)
  local gone = redis.call('ZRANGEBYSCORE', pc, '-inf', now, 'LIMIT', 0, 1000)
  for _, client in ipairs(gone) do
    local user = drop(client)
    if user then left[#left + 1] = user end
  end
  return #gone == 1000
end
-- The pending leaves, taken, then left.
local function take_pending(left)
  local pending = redis.call('SMEMBERS', pl)
  if #pending == 0 then return left end
  redis.call('DEL', pl)
  for _, user in ipairs(left) do pending[#pending + 1] = user end
  return pending
end
-- Every key expires margin after the latest client expiry.
local function keep()
  local last = redis.call('ZRANGE', pc, -1, -1, 'WITHSCORES')
  local ttl = margin
  if #last > 0 then ttl = math.max(tonumber(last[2]) - clock, 0) + margin end
  ttl = string.format('%d', math.floor(ttl))
  for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ttl) end
end
"""

# Add or refresh one client until expires (ms); user '' is anonymous, info
# '' none. Returns 1 when the user joined.
_ADD_ONE = """
local function add(client, expires, user, info)
  local old = redis.call('HGET', pd, client)
  local joined = 0
  if old ~= (user ~= '' and user or false) then
    if old then
      local gone = drop(client)
      if gone then redis.call('SADD', pl, gone) end
    end
    if user ~= '' then
      redis.call('HSET', pd, client, user)
      if redis.call('HINCRBY', pn, user, 1) == 1 then
        redis.call('ZADD', pu, 0, user)
        if redis.call('SREM', pl, user) == 0 then joined = 1 end
      end
    end
  end
  if user ~= '' then
    if info == '' then redis.call('HDEL', pi, user) else redis.call('HSET', pi, user, info) end
  end
  redis.call('ZADD', pc, expires, client)
  return joined
end
"""

#: ARGV: client, expires, user ('' anonymous), info ('' none), clock, margin.
#: Returns 1 when the user joined.
ADD = (
    _PRELUDE
    + _ADD_ONE
    + """
local joined = add(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
keep()
return joined
"""
)

#: ARGV: n, then n adds (client, expires, user, info as for ADD), then
#: releases (client, expires as for RELEASE), clock, margin: a batch of one
#: channel, adds first, in order. Returns the adds' join flags (1 joined).
APPLY = (
    _PRELUDE
    + _ADD_ONE
    + """
local n = tonumber(ARGV[1])
local joins = {}
for i = 0, n - 1 do
  local at = 2 + 4 * i
  joins[#joins + 1] = add(ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3])
end
for at = 2 + 4 * n, #ARGV - 3, 2 do
  redis.call('ZADD', pc, 'XX', ARGV[at + 1], ARGV[at])
end
keep()
return joins
"""
)

#: ARGV: client, expires, clock, margin. A client not present is ignored.
RELEASE = (
    _PRELUDE
    + """
if redis.call('ZADD', pc, 'XX', 'CH', ARGV[2], ARGV[1]) == 1 then keep() end
return 0
"""
)

#: ARGV: expires, clients..., clock, margin. Extends (never shortens) the
#: clients still present.
HEARTBEAT = (
    _PRELUDE
    + """
local chunk = {'XX', 'GT'}
for i = 2, #ARGV - 2 do
  chunk[#chunk + 1] = ARGV[1]
  chunk[#chunk + 1] = ARGV[i]
  if #chunk >= 2002 or i == #ARGV - 2 then
    redis.call('ZADD', pc, unpack(chunk))
    chunk = {'XX', 'GT'}
  end
end
if redis.call('EXISTS', pc) == 1 then keep() end
return 0
"""
)

#: ARGV: now, clock, margin. Returns {more, the users who left}: ``more``
#: is 1 when expired clients may remain (call again).
SWEEP = (
    _PRELUDE
    + """
local left = {}
local more = expire(ARGV[1], left)
left = take_pending(left)
keep()
return {more and 1 or 0, left}
"""
)

#: ARGV: clients..., clock, margin. Returns the users who left.
REMOVE = (
    _PRELUDE
    + """
local left = {}
for i = 1, #ARGV - 2 do
  if redis.call('ZSCORE', pc, ARGV[i]) then
    local user = drop(ARGV[i])
    if user then left[#left + 1] = user end
  end
end
left = take_pending(left)
keep()
return left
"""
)

# A read: the clients expired at ARGV[1] go, their users' leaves pending;
# when more may remain (``more``), the caller reads again.
_READ = """
local gone = {}
local more = expire(ARGV[1], gone) and 1 or 0
for _, user in ipairs(gone) do redis.call('SADD', pl, user) end
keep()
"""

#: ARGV: now, clock, margin. Returns {more, clients, users}.
COUNTS = (
    _PRELUDE
    + _READ
    + """
return {more, redis.call('ZCARD', pc), redis.call('ZCARD', pu)}
"""
)

#: ARGV: now, start ('-' or '(' .. after), limit, clock, margin. Returns
#: {more, clients, users, user ids (up to limit + 1), their counts, their infos}.
PAGE = (
    _PRELUDE
    + _READ
    + """
local users = redis.call('ZRANGEBYLEX', pu, ARGV[2], '+', 'LIMIT', 0, tonumber(ARGV[3]) + 1)
local counts, infos = {}, {}
if #users > 0 then
  counts = redis.call('HMGET', pn, unpack(users))
  infos = redis.call('HMGET', pi, unpack(users))
end
return {more, redis.call('ZCARD', pc), redis.call('ZCARD', pu), users, counts, infos}
"""
)
