"""The Lua scripts of the Redis backend: each state transition is one script, atomic on the
server. The key layout they maintain is described in ``omniq.queue.redis``; every script takes
the namespace prefix as ARGV[1].
"""

from __future__ import annotations

from omniq.models.task import TaskStatus

# Most newly due tasks one claim moves into the ready set (a script blocks the server while it
# runs); the rest follow with the next claims.
_PROMOTE = 10_000
# At most this many ended tasks of one write, each at most this large, are published whole;
# more (a busy worker's batch) would send every subscriber every result.
_ENDED_WHOLE = 4
_ENDED_BYTES = 4096

PRELUDE = """
local P = ARGV[1]
local TERMINAL = {completed = true, failed = true, cancelled = true, expired = true}
local wake = {}
local function tkey(id) return P .. 't:' .. id end
local function skey(q, st) return P .. 's:' .. q .. ':' .. st end
-- The body plus the fields overlaid on it (RedisTaskQueue._task reads this).
local function row(id)
  local r = redis.call('HMGET', tkey(id), 'st', 'rev', 'lease', 'wid', 'att', 'sa', 'ra')
  table.insert(r, 1, redis.call('GET', P .. 'b:' .. id))
  return r
end
-- A task with a ready time goes to the ready set once due, to the due set until then.
local function place(id, q, st, ra, member, now)
  if ra == '' then return end
  if tonumber(ra) <= now then redis.call('ZADD', P .. 'ready:' .. q, 0, member)
  else redis.call('ZADD', P .. 'due:' .. q, ra, member) end
  if st ~= 'running' then wake[q] = true end
end
-- t: q st pk tk sq, as read from the hash
local function unindex(id, t)
  local member = t[3] .. t[4] .. t[5] .. id
  -- A member is in one of the two sets: ready is often the larger, so due first.
  if redis.call('ZREM', P .. 'due:' .. t[1], member) == 0 then
    redis.call('ZREM', P .. 'ready:' .. t[1], member)
  end
  redis.call('ZREM', skey(t[1], t[2]), id)
end
-- f: q st rev lease wid att sa ra pk tk deps (see _columns in omniq.queue.redis)
local function store(id, seq, sq, f, body, now)
  redis.call('HSET', tkey(id), 'q', f[1], 'st', f[2], 'rev', f[3], 'lease', f[4], 'wid', f[5],
    'att', f[6], 'sa', f[7], 'ra', f[8], 'pk', f[9], 'tk', f[10], 'dp', f[11],
    'seq', seq, 'sq', sq)
  redis.call('SET', P .. 'b:' .. id, body)
  redis.call('ZADD', skey(f[1], f[2]), seq, id)
  place(id, f[1], f[2], f[8], f[9] .. f[10] .. sq .. id, now)
  return f
end
-- The earliest due time after now in queue q, as its stored score string; false if none.
local function next_due(q, now)
  local r = redis.call('ZRANGEBYSCORE', P .. 'due:' .. q, '(' .. now, '+inf', 'WITHSCORES',
    'LIMIT', 0, 1)
  return r[2] or false
end
local function publish()
  for q in pairs(wake) do redis.call('PUBLISH', P .. 'wake', q) end
end
local function queues(list)
  if #list == 0 then return redis.call('SMEMBERS', P .. 'queues') end
  return list
end
"""

# One INCRBY and one SADD per queue for the whole batch, not per task (an id that exists
# already leaves a gap in the sequence, which only orders).
# ARGV: P now rows (msgpack: per task its id and fields), then each task's body.
_INSERT = """
local now, out, named = tonumber(ARGV[2]), {}, {}
local rows = cmsgpack.unpack(ARGV[3])
local seq = redis.call('INCRBY', P .. 'seq', #rows) - #rows
for k, item in ipairs(rows) do
  local id = item[1]
  if redis.call('EXISTS', tkey(id)) == 1 then out[#out + 1] = 0 else
    seq = seq + 1
    local f = store(id, seq, string.format('%016x', seq), item[2], ARGV[3 + k], now)
    named[f[1]] = true
    for dep in string.gmatch(f[11], '%S+') do
      redis.call('SADD', P .. 'dependents:' .. dep, id)
    end
    out[#out + 1] = 1
  end
end
for q in pairs(named) do redis.call('SADD', P .. 'queues', q) end
publish()
return out
"""

_GET = """
local out = {}
for i = 2, #ARGV do out[#out + 1] = row(ARGV[i]) end
return out
"""

# ARGV: P now rows (msgpack: per task its id, expected revision and fields), then the bodies
_REPLACE = """
local now, out, ended = tonumber(ARGV[2]), {}, {}
for k, item in ipairs(cmsgpack.unpack(ARGV[3])) do
  local id = item[1]
  local t = redis.call('HMGET', tkey(id), 'q', 'st', 'pk', 'tk', 'sq', 'rev', 'seq')
  if not t[1] or tonumber(t[6]) ~= tonumber(item[2]) then out[#out + 1] = {0} else
    unindex(id, t)
    local f = store(id, t[7], t[5], item[3], ARGV[3 + k], now)
    -- Ending now: hand back its dependents, which the caller settles next (saves a round
    -- trip, and is exact: a dependent enqueued later reads this task as ended).
    local r = {1}
    if TERMINAL[f[2]] then ended[#ended + 1] = ARGV[3 + k] end
    if TERMINAL[f[2]] and not TERMINAL[t[2]] then
      r[1] = 2
      for _, m in ipairs(redis.call('SMEMBERS', P .. 'dependents:' .. id)) do r[#r + 1] = m end
    end
    out[#out + 1] = r
  end
end
-- Tasks ended, for get_result: a few small ones go out whole ('!' .. body), sparing each
-- waiter a read; otherwise '' says "read".
local whole = #ended <= ENDED_WHOLE
for _, body in ipairs(ended) do whole = whole and #body <= ENDED_BYTES end
if whole then
  for _, body in ipairs(ended) do redis.call('PUBLISH', P .. 'wake', '!' .. body) end
else wake[''] = true end
publish()
return out
""".replace("ENDED_WHOLE", str(_ENDED_WHOLE)).replace("ENDED_BYTES", str(_ENDED_BYTES))

# ARGV: P now queue limit worker_id lease lease_expires lease_tk
# -> the queue's next due time after now (as NEXT returns it), then a row per claimed task
_CLAIM = """
local q = ARGV[3]
if redis.call('SISMEMBER', P .. 'paused', q) == 1 then return {false} end
local ready, due = P .. 'ready:' .. q, P .. 'due:' .. q
-- Promote what became due, earliest first; bounded so a burst cannot stall the server.
local promote = redis.call('ZRANGEBYSCORE', due, '-inf', ARGV[2], 'LIMIT', 0, PROMOTE)
for i = 1, #promote, 500 do
  local batch = {}
  for j = i, math.min(i + 499, #promote) do
    batch[#batch + 1] = 0
    batch[#batch + 1] = promote[j]
  end
  redis.call('ZADD', ready, unpack(batch))
end
if #promote > 0 then redis.call('ZREMRANGEBYRANK', due, 0, #promote - 1) end
local popped, out = redis.call('ZPOPMIN', ready, ARGV[4]), {}
for i = 1, #popped, 2 do
  -- member: priority key (8) .. ready-time key (16) .. seq key (16) .. id
  local m = popped[i]
  local id = string.sub(m, 41)
  local t = redis.call('HMGET', tkey(id), 'st', 'rev', 'att', 'seq')
  if t[1] then
    local rev, att = tostring(tonumber(t[2]) + 1), tostring(tonumber(t[3]) + 1)
    redis.call('HSET', tkey(id), 'st', 'running', 'lease', ARGV[6], 'wid', ARGV[5],
      'att', att, 'sa', ARGV[2], 'ra', ARGV[7], 'tk', ARGV[8], 'rev', rev)
    redis.call('ZREM', skey(q, t[1]), id)
    redis.call('ZADD', skey(q, 'running'), t[4], id)
    redis.call('ZADD', due, ARGV[7], string.sub(m, 1, 8) .. ARGV[8] .. string.sub(m, 25))
    -- The row as row(id) would read it back (the fields just written), plus the id.
    out[#out + 1] = {redis.call('GET', P .. 'b:' .. id), 'running', rev, ARGV[6], ARGV[5], att,
      ARGV[2], ARGV[7], id}
  end
end
-- Then the earliest due time still ahead, so an idle worker need not ask (see NEXT).
table.insert(out, 1, next_due(q, ARGV[2]))
return out
""".replace("PROMOTE", str(_PROMOTE))

# ARGV: P now id lease until until_tk
_EXTEND = """
local id = ARGV[3]
local t = redis.call('HMGET', tkey(id), 'q', 'st', 'pk', 'tk', 'sq', 'lease', 'rev')
if t[2] ~= 'running' or t[6] ~= ARGV[4] then return 0 end
redis.call('ZREM', P .. 'ready:' .. t[1], t[3] .. t[4] .. t[5] .. id)
redis.call('ZREM', P .. 'due:' .. t[1], t[3] .. t[4] .. t[5] .. id)
redis.call('HSET', tkey(id), 'ra', ARGV[5], 'tk', ARGV[6], 'rev', tonumber(t[7]) + 1)
place(id, t[1], 'running', ARGV[5], t[3] .. ARGV[6] .. t[5] .. id, tonumber(ARGV[2]))
return 1
"""

_DELETE = """
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local t = redis.call('HMGET', tkey(id), 'q', 'st', 'pk', 'tk', 'sq', 'dp')
  if t[1] then
    unindex(id, t)
    for dep in string.gmatch(t[6] or '', '%S+') do
      redis.call('SREM', P .. 'dependents:' .. dep, id)
    end
    redis.call('DEL', tkey(id), P .. 'b:' .. id)
    out[#out + 1] = id
  end
end
return out
"""

# ARGV: P limit offset newest nqueues queue... status...  (limit -1: all; newest '1': reversed)
_LIST = """
local limit, offset, newest, nq = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1',
  tonumber(ARGV[5])
local stop = -1
if limit >= 0 then stop = offset + limit - 1 end
local range = 'ZRANGE'
if newest then range = 'ZREVRANGE' end
local found = {}
for _, q in ipairs(queues({unpack(ARGV, 6, 5 + nq)})) do
  for i = 6 + nq, #ARGV do
    local r = redis.call(range, skey(q, ARGV[i]), 0, stop, 'WITHSCORES')
    for j = 1, #r, 2 do found[#found + 1] = {tonumber(r[j + 1]), r[j]} end
  end
end
if newest then table.sort(found, function(a, b) return a[1] > b[1] end)
else table.sort(found, function(a, b) return a[1] < b[1] end) end
local out = {}
for k = offset + 1, #found do
  if limit >= 0 and k > offset + limit then break end
  out[#out + 1] = row(found[k][2])
end
return out
"""

# ARGV: P queue...  -> one count per status, in TaskStatus order
_COUNTS = """
local statuses = {STATUSES}
local out = {}
for i, st in ipairs(statuses) do out[i] = 0 end
for _, q in ipairs(queues({unpack(ARGV, 2)})) do
  for i, st in ipairs(statuses) do out[i] = out[i] + redis.call('ZCARD', skey(q, st)) end
end
return out
""".replace("STATUSES", ", ".join(f"'{s.value}'" for s in TaskStatus))

# ARGV: P  -> the queues holding at least one task (the queues set also keeps emptied ones)
_NAMES = """
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. 'queues')) do
  for _, st in ipairs({STATUSES}) do
    if redis.call('ZCARD', skey(q, st)) > 0 then
      out[#out + 1] = q
      break
    end
  end
end
return out
""".replace("STATUSES", ", ".join(f"'{s.value}'" for s in TaskStatus))

# ARGV: P now queue...  -> the smallest due time after now, as the stored score string
_NEXT = """
local best, text = nil, false
for _, q in ipairs(queues({unpack(ARGV, 3)})) do
  local found = next_due(q, ARGV[2])
  if found and (best == nil or tonumber(found) < best) then best, text = tonumber(found), found end
end
return text
"""

SCRIPTS = {
    "insert": _INSERT, "get": _GET, "replace": _REPLACE, "claim": _CLAIM, "extend": _EXTEND,
    "delete": _DELETE, "list": _LIST, "counts": _COUNTS, "next": _NEXT, "names": _NAMES,
}
