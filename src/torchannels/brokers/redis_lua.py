"""The Redis broker's Lua scripts: each runs atomically, in one round trip.

Keys of one channel share the hash tag ``{PREFIX:CHANNEL}`` (one Cluster
slot): ``KEYS[1]`` the meta hash (``e`` epoch, ``o`` last offset, ``t`` the
time of the last publish or set_state), ``KEYS[2]`` the history stream
(entry id ``0-<offset>``, fields ``t`` the ts and ``p`` the payload),
``KEYS[3]`` the state hash (``a`` the offset it stands for, ``n`` how many
messages, ``t``/``p`` their ts and payloads, newline-joined: encoded JSON
never holds a raw newline), and for PUBLISH ``KEYS[4]``, the pub/sub
channel (declared so Cluster routes SPUBLISH). PUBLISH_KEYED also has a
channel's idempotency keys (:mod:`.idempotency`): a hash (``:ik``, key ->
``EPOCH:OFFSET:TS`` of its first publish) and a sorted set (``:ikx``, key
-> its expiry in unix ms); a publish without a key never touches them.

Only writes create keys. A write's ``ARGV[1]`` is a fresh random epoch,
used only when the meta is missing (never created, expired, flushed,
evicted or lost in a restart): then the stream and state, which belong to
a forgotten epoch, go too. A write sets the stream's and state's expiry to
the history TTL and the meta's to the (longer) meta TTL, so an idle
channel loses its history first and its position later. A payload is
completed here with ``,"epoch":"E","offset":N}``, byte for byte what
:func:`torchannels.frames.tail` would append.
"""

from __future__ import annotations

import hashlib

_PRELUDE = """
-- The epoch and last offset of the channel whose meta, stream and state are
-- KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]. A missing meta is made with
-- candidate as its epoch, and the stream, state and the keys in ... (which
-- belong to a forgotten epoch) are deleted.
local function meta(k, candidate, ...)
  local m = redis.call('HMGET', KEYS[k + 1], 'e', 'o')
  if m[1] then return m[1], tonumber(m[2]) end
  redis.call('DEL', KEYS[k + 2], KEYS[k + 3], ...)
  redis.call('HSET', KEYS[k + 1], 'e', candidate, 'o', 0)
  return candidate, 0
end
-- Stores (when size > 0) in the stream KEYS[k + 2] and publishes (cmd) on
-- the pub/sub channel KEYS[k + 4] the message at offset top, its payload
-- head completed with the epoch and offset. Returns the offset as text.
local function append(k, cmd, size, epoch, top, ts, head)
  local off = string.format('%d', top)
  local payload = head .. ',"epoch":"' .. epoch .. '","offset":' .. off .. '}'
  if size > 0 then
    redis.call('XADD', KEYS[k + 2], 'MAXLEN', size, '0-' .. off, 't', ts, 'p', payload)
  end
  redis.call(cmd, KEYS[k + 4], off .. ':' .. epoch .. ':' .. ts .. ':' .. payload)
  return off
end
-- The id of the oldest entry of stream stamped at or after horizon (nil:
-- none), and how many older ones precede it. Usually the first entry answers.
local function fresh(stream, horizon)
  local stale, start, count = 0, '-', 1
  while true do
    local batch = redis.call('XRANGE', stream, start, '+', 'COUNT', count)
    if #batch == 0 then return nil, stale end
    for _, e in ipairs(batch) do
      if tonumber(e[2][2]) >= horizon then return e[1], stale end
      stale = stale + 1
    end
    start = '(' .. batch[#batch][1]
    count = math.min(count * 4, 256)
  end
end
-- After a write to the channel whose meta, stream and state are
-- KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]: the history TTL on the stream and
-- state, the meta TTL on the meta.
local function expire(k, ttl, keep)
  redis.call('PEXPIRE', KEYS[k + 1], keep)
  redis.call('PEXPIRE', KEYS[k + 2], ttl)
  redis.call('PEXPIRE', KEYS[k + 3], ttl)
end
-- After a publish to that channel: its stream trimmed to the entries
-- stamped at or after horizon, then expire(). Size 0 keeps none: what
-- another process kept before would end in a hole.
local function retain(k, size, horizon, ttl, keep)
  local first = nil
  if size > 0 then first = fresh(KEYS[k + 2], horizon) end
  if first then redis.call('XTRIM', KEYS[k + 2], 'MINID', first)
  else redis.call('DEL', KEYS[k + 2]) end
  expire(k, ttl, keep)
end
"""

#: ARGV: epoch candidate, ttl ms, horizon (oldest ts kept), history size,
#: PUBLISH or SPUBLISH, meta ttl ms, now, then (ts, head) per message.
#: Returns {epoch, first offset}; the messages got consecutive offsets.
#: Each is published as ``<offset>:<epoch>:<ts>:<payload>``, so a
#: subscriber frames it unparsed.
PUBLISH = (
    _PRELUDE
    + """
local epoch, top = meta(0, ARGV[1])
local size = tonumber(ARGV[4])
local n = (#ARGV - 7) / 2
for i = 0, n - 1 do
  top = top + 1
  append(0, ARGV[5], size, epoch, top, ARGV[8 + 2 * i], ARGV[9 + 2 * i])
end
redis.call('HSET', KEYS[1], 'o', string.format('%d', top), 't', ARGV[7])
retain(0, size, tonumber(ARGV[3]), ARGV[2], ARGV[6])
return {epoch, top - n + 1}
"""
)

#: Publishes to several channels in one call (one Redis, not a Cluster: the
#: keys span slots). KEYS: the four keys of each channel in turn. ARGV:
#: PUBLISH or SPUBLISH, the channel count C, then per channel its epoch
#: candidate, ttl ms, horizon, history size, meta ttl ms and now, then one argument with the
#: messages in publishing order, ``NUMBER\nTS\nHEAD\n`` each (NUMBER the
#: channel's, 1..C; one argument, not three per message, because building
#: a command of thousands of arguments costs the client more than the
#: script costs Redis; encoded JSON holds no raw newline). Every message is stored and
#: published in that order, each channel's get consecutive offsets, and
#: each channel is trimmed and its expiry renewed once at the end, as a run
#: of PUBLISH calls would. Returns {epoch, first offset} per channel, flat.
PUBLISH_MANY = (
    _PRELUDE
    + """
local cmd, nc = ARGV[1], tonumber(ARGV[2])
local epochs, tops, firsts, sizes = {}, {}, {}, {}
for c = 1, nc do
  local k, a = 4 * (c - 1), 3 + 6 * (c - 1)
  epochs[c], tops[c] = meta(k, ARGV[a])
  firsts[c] = tops[c] + 1
  sizes[c] = tonumber(ARGV[a + 3])
end
for number, ts, head in string.gmatch(ARGV[3 + 6 * nc], '([^\\n]*)\\n([^\\n]*)\\n([^\\n]*)\\n') do
  local c = tonumber(number)
  tops[c] = tops[c] + 1
  append(4 * (c - 1), cmd, sizes[c], epochs[c], tops[c], ts, head)
end
local out = {}
for c = 1, nc do
  local k, a = 4 * (c - 1), 3 + 6 * (c - 1)
  redis.call('HSET', KEYS[k + 1], 'o', string.format('%d', tops[c]), 't', ARGV[a + 5])
  retain(k, sizes[c], tonumber(ARGV[a + 2]), ARGV[a + 1], ARGV[a + 4])
  out[#out + 1] = epochs[c]
  out[#out + 1] = firsts[c]
end
return out
"""
)

#: PUBLISH_MANY for a batch in which some messages have an idempotency key
#: (a Cluster: of one channel). KEYS: six per channel, its four and then its
#: ``:ik`` hash and ``:ikx`` sorted set. ARGV: PUBLISH or SPUBLISH, the
#: channel count C, the window ms, the six per channel as PUBLISH_MANY's,
#: then the messages, ``NUMBER\nTS\nKEY\nHEAD\n`` each (KEY empty: none;
#: a key is printable ASCII, so holds no newline). A message whose key has
#: a record of the channel's epoch that has not expired is a duplicate:
#: nothing is stored or published for it. Another message with a key is
#: stored and the key recorded (``EPOCH:OFFSET:TS``, expiring at its now +
#: the window); a key's first use on a channel in a call drops up to 64 of
#: the channel's expired records, and a record of another epoch (the meta
#: was lost and made again) is no duplicate. Returns PUBLISH_MANY's pairs
#: (a channel whose every message was a duplicate: its offsets unchanged),
#: then, per duplicate, its message's number in the call (from 1) and the
#: record it duplicates.
PUBLISH_KEYED = (
    _PRELUDE
    + """
local cmd, nc, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local epochs, tops, firsts, sizes, nows, trimmed, keyed = {}, {}, {}, {}, {}, {}, {}
for c = 1, nc do
  local k, a = 6 * (c - 1), 4 + 6 * (c - 1)
  epochs[c], tops[c] = meta(k, ARGV[a], KEYS[k + 5], KEYS[k + 6])
  firsts[c] = tops[c] + 1
  sizes[c] = tonumber(ARGV[a + 3])
  nows[c] = math.floor(tonumber(ARGV[a + 5]) * 1000)
end
-- The record of KEY in channel C, if it is of the channel's epoch and alive.
local function recorded(c, key)
  local k, now = 6 * (c - 1), string.format('%d', nows[c])
  if not trimmed[c] then
    trimmed[c] = true
    local old = redis.call('ZRANGEBYSCORE', KEYS[k + 6], '-inf', now, 'LIMIT', 0, 64)
    if #old > 0 then
      redis.call('HDEL', KEYS[k + 5], unpack(old))
      redis.call('ZREM', KEYS[k + 6], unpack(old))
    end
  end
  local rec = redis.call('HGET', KEYS[k + 5], key)
  if not rec or string.sub(rec, 1, #epochs[c] + 1) ~= epochs[c] .. ':' then return nil end
  local expires = redis.call('ZSCORE', KEYS[k + 6], key)
  if not expires or tonumber(expires) <= nows[c] then return nil end
  return rec
end
local dups, i = {}, 0
local pattern = '([^\\n]*)\\n([^\\n]*)\\n([^\\n]*)\\n([^\\n]*)\\n'
for number, ts, key, head in string.gmatch(ARGV[4 + 6 * nc], pattern) do
  i = i + 1
  local c = tonumber(number)
  local rec = nil
  if key ~= '' then rec = recorded(c, key) end
  if rec then
    dups[#dups + 1] = i
    dups[#dups + 1] = rec
  else
    local k, epoch = 6 * (c - 1), epochs[c]
    tops[c] = tops[c] + 1
    local off = append(k, cmd, sizes[c], epoch, tops[c], ts, head)
    if key ~= '' then
      redis.call('HSET', KEYS[k + 5], key, epoch .. ':' .. off .. ':' .. ts)
      redis.call('ZADD', KEYS[k + 6], string.format('%d', nows[c] + window), key)
      keyed[c] = true
    end
  end
end
local out = {}
for c = 1, nc do
  local k, a = 6 * (c - 1), 4 + 6 * (c - 1)
  if tops[c] >= firsts[c] then
    redis.call('HSET', KEYS[k + 1], 'o', string.format('%d', tops[c]), 't', ARGV[a + 5])
    retain(k, sizes[c], tonumber(ARGV[a + 2]), ARGV[a + 1], ARGV[a + 4])
  end
  if keyed[c] then
    for j = 5, 6 do redis.call('PEXPIRE', KEYS[k + j], ARGV[3]) end
  end
  out[#out + 1] = epochs[c]
  out[#out + 1] = firsts[c]
end
for _, v in ipairs(dups) do out[#out + 1] = v end
return out
"""
)

#: ARGV: epoch candidate, ttl ms, meta ttl ms, now, then (ts, head) per
#: message. Returns {epoch, offset the state stands for}.
SET_STATE = (
    _PRELUDE
    + """
local epoch, top = meta(0, ARGV[1])
local tail = ',"epoch":"' .. epoch .. '","offset":' .. string.format('%d', top) .. '}'
local stamps, payloads = {}, {}
for i = 5, #ARGV, 2 do
  stamps[#stamps + 1] = ARGV[i]
  payloads[#payloads + 1] = ARGV[i + 1] .. tail
end
redis.call('HSET', KEYS[3], 'a', string.format('%d', top), 'n', #payloads,
  't', table.concat(stamps, '\\n'), 'p', table.concat(payloads, '\\n'))
redis.call('HSET', KEYS[1], 't', ARGV[4])
expire(0, ARGV[2], ARGV[3])
return {epoch, top}
"""
)

#: ARGV: horizon, the reader's epoch ('' for a fresh join) and offset, and
#: the offset to read after (-1: choose). Writes nothing: a channel without
#: meta answers epoch '' at offset 0 with nothing retained (stream and state
#: left from a forgotten epoch are not read). Chosen: after the reader's
#: offset when it can resume, else after the state or the oldest retained
#: entry; the caller decides with plan_read and reads again in the rare
#: case it needs older entries. Returns {epoch, top, first retained offset,
#: retained count, state offset (-1: none), state count, state stamps,
#: state payloads, read after, entries}.
READ = (
    _PRELUDE
    + """
local m = redis.call('HMGET', KEYS[1], 'e', 'o')
if not m[1] then return {'', 0, 1, 0, -1, 0, '', '', 0, {}} end
local epoch, top = m[1], tonumber(m[2])
local first_id, stale = fresh(KEYS[2], tonumber(ARGV[1]))
local first, kept = top + 1, 0
if first_id then
  first = tonumber(string.sub(first_id, 3))
  kept = redis.call('XLEN', KEYS[2]) - stale
end
local st = redis.call('HMGET', KEYS[3], 'a', 'n', 't', 'p')
local state_at = -1
if st[1] then state_at = tonumber(st[1]) end
local after = tonumber(ARGV[4])
if after < 0 then
  local since = tonumber(ARGV[3])
  if ARGV[2] == epoch and since <= top and since >= first - 1 then after = since
  elseif state_at >= first - 1 then after = state_at
  else after = first - 1 end
end
local entries = {}
if after < top and first_id then
  entries = redis.call('XRANGE', KEYS[2], '0-' .. string.format('%d', after + 1), '+')
end
return {epoch, top, first, kept, state_at, tonumber(st[2] or 0), st[3] or '', st[4] or '',
  after, entries}
"""
)


def sha1(script: str) -> str:
    """The SHA1 that EVALSHA names ``script`` by."""
    return hashlib.sha1(script.encode()).hexdigest()
