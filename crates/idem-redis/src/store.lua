-- idem-redis: idem-core's store step (crates/idem-core/src/step.rs and transition.rs) on
-- the server, one atomic script per store operation. It answers exactly what
-- `idem_core::step::step` answers and writes exactly what the step names; the
-- differential test (tests/differential.rs) pins it to idem-core's MemoryStore.
--
-- Numbers. Lua numbers are doubles. Fences, times and limits arrive and stay as
-- canonical decimal strings (no sign, no leading zero) and are compared with `lt`, which
-- is exact for every u64; the fence counter only moves by INCR, on the server's integers.
-- Only usage totals (bounded by Redis's memory, far below 2^53) and key expiries are
-- numbers here, and numbers are written back with '%.0f', never `tostring` (which keeps
-- 14 digits).
--
-- KEYS (per-id operations): record hash, held entry, fence counter, usage hash, expiry
-- index. KEYS (purge): fence counter, usage hash, expiry index.
-- ARGV[1] the operation, ARGV[2] the fence seed ('clock' or a fence), then per operation:
--   claim    id-field, records_max, bytes_max, fingerprint, now, now+lease, now+retention, bytes
--   complete id-field, fence, now, now+retention, response, bytes
--   release  id-field, fence
--   renew    id-field, fence, now, now+lease
--   purge    key tag, now, batch_max
-- Answers are arrays of strings; the first names the answer.

local op, seed = ARGV[1], ARGV[2]

-- The fence seed from Redis's clock: ms since the epoch times 2^10 (FENCE_SEED_SHIFT).
local SEED_FACTOR = 1024

local function fail(kind, detail)
  return { 'corrupt', kind .. ': ' .. detail }
end

-- a < b for canonical decimal strings, exact for every u64.
local function lt(a, b)
  if #a ~= #b then return #a < #b end
  if #a <= 15 then return tonumber(a) < tonumber(b) end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return false
end

local function is_decimal(s)
  return type(s) == 'string' and #s <= 20 and string.find(s, '^[1-9]%d*$') ~= nil
end

local function is_time(s)
  return type(s) == 'string' and #s <= 20 and (s == '0' or string.find(s, '^[1-9]%d*$') ~= nil)
end

local function fmt(n)
  return string.format('%.0f', n)
end

-- The expiry-index member: the fence as 20 digits, ':', the id field.
local function member(fence, field)
  return string.rep('0', 20 - #fence) .. fence .. ':' .. field
end

-- The fence counter, created from the seed when missing.
local function next_fence(fence_key)
  local next = redis.call('GET', fence_key)
  if not next then
    if seed == 'clock' then
      local t = redis.call('TIME')
      local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      next = fmt(math.max(1, ms * SEED_FACTOR))
    else
      next = seed
    end
    redis.call('SET', fence_key, next)
  end
  if not is_decimal(next) then return nil, fail('the fence counter', tostring(next)) end
  return next
end

-- The record under `key`, or nil; a second value is a 'corrupt' answer.
local function read_record(key)
  local v = redis.call('HMGET', key, 'fence', 'fp', 'exp', 'lease', 'bytes')
  if not v[1] then return nil end
  local record = { fence = v[1], fp = v[2], exp = v[3], lease = v[4], bytes = tonumber(v[5]) }
  if not (is_decimal(record.fence) and record.fp and is_time(record.exp) and record.lease
      and (record.lease == '' or is_time(record.lease)) and record.bytes and record.bytes >= 0) then
    return nil, fail('a record', key)
  end
  return record
end

-- The held entry ("<fence> <bytes>") of a record Redis forgot by itself, or nil.
local function read_ghost(held_key)
  local held = redis.call('GET', held_key)
  if not held then return nil end
  local fence, bytes = string.match(held, '^([1-9]%d*) (%d+)$')
  if not fence or #fence > 20 then return nil, fail('a held entry', held) end
  return { fence = fence, bytes = tonumber(bytes) }
end

-- Record::forgettable_at: retention's end, or a later lease's end in flight.
local function forgettable(record)
  if record.lease ~= '' and lt(record.exp, record.lease) then return record.lease end
  return record.exp
end

-- Record::is_expired
local function expired(record, now)
  return not lt(now, forgettable(record))
end

-- transition::check_fence: 'current', or a refusal answer.
local function check_fence(record, fence)
  if not record then return { 'no_record' } end
  if record.lease == '' then return { 'completed', record.fence } end
  if record.fence == fence then return 'current' end
  return { 'stale', record.fence }
end

-- Adds a usage delta (records, bytes) to the totals.
local function count(usage_key, records, bytes)
  if records ~= 0 then redis.call('HINCRBY', usage_key, 'records', fmt(records)) end
  if bytes ~= 0 then redis.call('HINCRBY', usage_key, 'bytes', fmt(bytes)) end
end

-- Write::Put: the record, its expiry (as long from now as it has left at `now`, on
-- Redis's clock), its held entry and its index entry; `old` is the record it replaces.
local function put(k, field, old, new, now)
  redis.call('HSET', k.record, 'fence', new.fence, 'fp', new.fp, 'exp', new.exp, 'lease', new.lease,
    'resp', new.resp, 'bytes', fmt(new.bytes))
  local at = forgettable(new)
  local ttl = tonumber(at) - tonumber(now)
  redis.call('PEXPIRE', k.record, fmt(math.min(math.max(ttl, 1), 2 ^ 52)))
  if not old or old.fence ~= new.fence or old.bytes ~= new.bytes then
    redis.call('SET', k.held, new.fence .. ' ' .. fmt(new.bytes))
  end
  if old and old.fence ~= new.fence then
    redis.call('ZREM', k.expiry, member(old.fence, field))
  end
  if not old or old.fence ~= new.fence or forgettable(old) ~= at then
    redis.call('ZADD', k.expiry, at, member(new.fence, field))
  end
end

-- Write::Delete of `old`.
local function delete(k, field, old)
  redis.call('DEL', k.record, k.held)
  redis.call('ZREM', k.expiry, member(old.fence, field))
  count(k.usage, -1, -old.bytes)
end

-- Forgets the ghost's held and index entries and its usage.
local function forget_ghost(k, field, ghost, keep_held)
  redis.call('ZREM', k.expiry, member(ghost.fence, field))
  if not keep_held then redis.call('DEL', k.held) end
  return -1, -ghost.bytes
end

-- What every per-id operation reads first: the fence counter, the record, and (when the
-- record is absent) a ghost. step(): a counter not past the record's fence is damage.
local function open(k)
  local next, bad = next_fence(k.fence)
  if bad then return nil, bad end
  local record, bad_record = read_record(k.record)
  if bad_record then return nil, bad_record end
  local ghost = nil
  if not record then
    local g, bad_ghost = read_ghost(k.held)
    if bad_ghost then return nil, bad_ghost end
    ghost = g
  end
  if record and not lt(record.fence, next) then
    return nil, { 'behind', next, record.fence }
  end
  return { next = next, record = record, ghost = ghost }
end

local function per_id_keys()
  return { record = KEYS[1], held = KEYS[2], fence = KEYS[3], usage = KEYS[4], expiry = KEYS[5] }
end

-- op::Claim (transition::claim through look, then step's fences, admission and usage).
local function claim()
  local k = per_id_keys()
  local field, records_max, bytes_max = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
  local fp, now, lease_end, retention_end, bytes = ARGV[6], ARGV[7], ARGV[8], ARGV[9], tonumber(ARGV[10])
  local view, bad = open(k)
  if bad then return bad end
  local record = view.record
  local live = record
  if live and expired(live, now) then live = nil end
  local stale = nil
  if live then
    if live.fp ~= fp then return { 'mismatch' } end
    if live.lease == '' then return { 'replay', redis.call('HGET', k.record, 'resp') } end
    if lt(now, live.lease) then return { 'conflict', live.lease } end
    stale = live.fence
  end
  -- Admission (step::admit), on the usage as it is once a ghost is accounted for.
  local usage = redis.call('HMGET', k.usage, 'records', 'bytes')
  local held_records, held_bytes = tonumber(usage[1] or '0'), tonumber(usage[2] or '0')
  if not held_records or not held_bytes then return fail('the usage totals', k.usage) end
  local records_delta, bytes_delta = 0, 0
  if view.ghost then
    held_records, held_bytes = held_records - 1, held_bytes - view.ghost.bytes
  end
  if held_records < 0 or held_bytes < 0 then return fail('the usage totals', 'below what is held') end
  if not record and held_records >= records_max then return { 'full', 'records' } end
  if held_bytes >= bytes_max then return { 'full', 'bytes' } end
  if view.ghost then
    records_delta, bytes_delta = forget_ghost(k, field, view.ghost, true)
  end
  local fence = view.next
  put(k, field, record, { fence = fence, fp = fp, exp = retention_end, lease = lease_end, resp = '', bytes = bytes }, now)
  redis.call('INCR', k.fence)
  if record then
    bytes_delta = bytes_delta + bytes - record.bytes
  else
    records_delta, bytes_delta = records_delta + 1, bytes_delta + bytes
  end
  count(k.usage, records_delta, bytes_delta)
  if stale then return { 'takeover', fence, lease_end, stale } end
  return { 'execute', fence, lease_end }
end

-- op::Complete (transition::complete).
local function complete()
  local k = per_id_keys()
  local field, fence, now, retention_end, resp, bytes = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
  local view, bad = open(k)
  if bad then return bad end
  local record = view.record
  local state = check_fence(record, fence)
  if state ~= 'current' then
    if state[1] == 'completed' and state[2] == fence then return { 'applied' } end
    return state
  end
  put(k, field, record, { fence = fence, fp = record.fp, exp = retention_end, lease = '', resp = resp, bytes = bytes }, now)
  count(k.usage, 0, bytes - record.bytes)
  return { 'applied' }
end

-- op::Release (transition::release).
local function release()
  local k = per_id_keys()
  local field, fence = ARGV[3], ARGV[4]
  local view, bad = open(k)
  if bad then return bad end
  local state = check_fence(view.record, fence)
  if state ~= 'current' then return state end
  delete(k, field, view.record)
  return { 'applied' }
end

-- op::Renew (transition::renew): never shortens a lease.
local function renew()
  local k = per_id_keys()
  local field, fence, now, lease_end = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local view, bad = open(k)
  if bad then return bad end
  local record = view.record
  local state = check_fence(record, fence)
  if state ~= 'current' then return state end
  if not lt(record.lease, lease_end) then return { 'renewed', record.lease } end
  local renewed = { fence = record.fence, fp = record.fp, exp = record.exp, lease = lease_end, resp = '', bytes = record.bytes }
  put(k, field, record, renewed, now)
  return { 'renewed', lease_end }
end

-- The purge: up to batch_max due index entries, earliest first (ties by fence), each
-- through op::Expire; a record Redis forgot by itself is accounted for from its held
-- entry when the entry names its fence. Answers how many it forgot.
local function purge()
  local tag, now, batch_max = ARGV[3], ARGV[4], ARGV[5]
  local fence_key, usage_key, expiry_key = KEYS[1], KEYS[2], KEYS[3]
  local due = redis.call('ZRANGEBYSCORE', expiry_key, '-inf', now, 'LIMIT', '0', batch_max)
  local purged = 0
  for _, entry in ipairs(due) do
    local fence, field = string.match(entry, '^(%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d):(.*)$')
    if not fence then return fail('an expiry index member', entry) end
    fence = string.gsub(fence, '^0+', '')
    local k = { record = tag .. ':r:' .. field, held = tag .. ':h:' .. field, fence = fence_key, usage = usage_key,
      expiry = expiry_key }
    local view, bad = open(k)
    if bad then return bad end
    if view.record then
      if expired(view.record, now) then
        delete(k, field, view.record)
        purged = purged + 1
      end
    elseif view.ghost and view.ghost.fence == fence then
      local records, bytes = forget_ghost(k, field, view.ghost, false)
      count(usage_key, records, bytes)
      purged = purged + 1
    end
  end
  return { 'purged', fmt(purged) }
end

if op == 'claim' then return claim() end
if op == 'complete' then return complete() end
if op == 'release' then return release() end
if op == 'renew' then return renew() end
if op == 'purge' then return purge() end
return fail('an operation', tostring(op))
