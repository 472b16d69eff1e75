-- idem-redis: idem-core's store step (crates/idem-core/src/step.rs and transition.rs) on
-- the server, one atomic script per store operation. It answers exactly what
-- `idem_core::step::step` answers and writes exactly what the step names; the
-- differential test (tests/differential.rs) pins it to idem-core's MemoryStore, and
-- src/planted.rs checks that a rule planted wrong here is caught.
--
-- Numbers. Lua numbers are doubles. Fences, times and limits arrive and stay as canonical
-- decimal strings (no sign, no leading zero), are compared with `lt` and advanced with
-- `succ`, both exact for every u64. Only usage totals (bounded by Redis's memory, far
-- below 2^53) and key expiries are numbers here, and numbers are written back with
-- '%.0f', never `tostring` (which keeps 14 digits).
--
-- Shapes (see the crate docs): a record is a string, its 32-byte fingerprint, then
-- "<fence> <expires_at> <lease end, empty once completed> <stored bytes>\n", then the
-- response (empty in flight), with a Redis expiry at its forgettable time; its held entry
-- "<fence> <stored bytes>" has none; the counters hash holds `fence` (the next fence),
-- `records` and `bytes`; the expiry index scores "<fence, 20 digits>:<id field>" by the
-- forgettable time.
--
-- KEYS: the record, its held entry, the counters, the expiry index (purge: the last two).
-- ARGV[1] the operation, ARGV[2] the fence seed ('clock' or a fence), ARGV[3] the id
-- field (purge: the key tag), then:
--   claim    records_max, bytes_max, fingerprint, now, now+lease, now+retention, bytes
--   complete fence, now, now+retention, response, bytes
--   release  fence
--   renew    fence, now, now+lease
--   purge    now, batch_max
-- Answers are arrays of strings; the first names the answer.

local op, seed, field = ARGV[1], ARGV[2], ARGV[3]

-- The fence seed from Redis's clock: ms since the epoch times 2^10 (FENCE_SEED_SHIFT).
local SEED_FACTOR = 1024

local function fmt(n)
  return string.format('%.0f', n)
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

-- s + 1 for a canonical decimal string.
local function succ(s)
  if #s <= 15 then return fmt(tonumber(s) + 1) end
  local i = #s
  while i > 0 and string.byte(s, i) == 57 do i = i - 1 end
  if i == 0 then return '1' .. string.rep('0', #s) end
  return string.sub(s, 1, i - 1) .. string.char(string.byte(s, i) + 1) .. string.rep('0', #s - i)
end

-- A record value as a table, nil when absent, false when it does not parse.
local function parse(value)
  if not value then return nil end
  local fence, exp, lease, bytes, resp_at = string.match(value, '^([1-9]%d*) (%d+) (%d*) (%d+)\n()', 33)
  if not fence or #fence > 20 or #exp > 20 or #lease > 20 then return false end
  return { fp = string.sub(value, 1, 32), fence = fence, exp = exp, lease = lease, bytes = tonumber(bytes),
    resp_at = resp_at, value = value }
end

-- Record::forgettable_at: retention's end, or a later lease's end in flight.
local function forgettable(r)
  if r.lease ~= '' and lt(r.exp, r.lease) then return r.lease end
  return r.exp
end

-- The expiry-index member of a record.
local function member(fence, id_field)
  return string.rep('0', 20 - #fence) .. fence .. ':' .. id_field
end

-- The counters, the fence counter created from the seed when missing; nil and an answer
-- when damaged.
local function read_counters(key)
  local c = redis.call('HMGET', key, 'fence', 'records', 'bytes')
  local next = c[1]
  if not next then
    if seed == 'clock' then
      local t = redis.call('TIME')
      next = fmt(math.max(1, (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) * SEED_FACTOR))
    else
      next = seed
    end
    redis.call('HSET', key, 'fence', next)
  end
  local records, bytes = tonumber(c[2] or '0'), tonumber(c[3] or '0')
  if #next > 20 or not string.find(next, '^[1-9]%d*$') or not records or not bytes or records < 0 or bytes < 0 then
    return nil, { 'corrupt', 'the counters: ' .. tostring(next) .. ' ' .. tostring(c[2]) .. ' ' .. tostring(c[3]) }
  end
  return { key = key, next = next, records = records, bytes = bytes }
end

-- Writes the counters back: the fence counter when a fence was issued, the usage totals
-- when they changed.
local function write_counters(c, issued, records, bytes)
  if issued and records ~= 0 then
    redis.call('HSET', c.key, 'fence', succ(c.next), 'records', fmt(c.records + records), 'bytes', fmt(c.bytes + bytes))
  elseif issued then
    redis.call('HSET', c.key, 'fence', succ(c.next), 'bytes', fmt(c.bytes + bytes))
  elseif records ~= 0 then
    redis.call('HSET', c.key, 'records', fmt(c.records + records), 'bytes', fmt(c.bytes + bytes))
  elseif bytes ~= 0 then
    redis.call('HSET', c.key, 'bytes', fmt(c.bytes + bytes))
  end
end

-- What every per-id operation reads: the record, the ghost (the held entry of a record
-- Redis forgot by itself), the counters. step(): a counter not past the record's fence is
-- damage. Returns nil and an answer when the step must stop.
local function open(record_key, held_key, counters_key, id_field)
  local values = redis.call('MGET', record_key, held_key)
  local record = parse(values[1])
  if record == false then return nil, { 'corrupt', 'the record of ' .. id_field } end
  local ghost = nil
  if not record and values[2] then
    local fence, bytes = string.match(values[2], '^([1-9]%d*) (%d+)$')
    if not fence or #fence > 20 then return nil, { 'corrupt', 'the held entry of ' .. id_field } end
    ghost = { fence = fence, bytes = tonumber(bytes) }
  end
  local c, bad = read_counters(counters_key)
  if not c then return nil, bad end
  if record and not lt(record.fence, c.next) then return nil, { 'behind', c.next, record.fence } end
  return record, ghost, c
end

-- Write::Put: the record with its Redis expiry (as long from now as it has left at
-- `now`, on Redis's clock), its held entry, its index entry; `old` is what it replaces.
local function put(record_key, held_key, expiry_key, old, new, now, resp)
  local at = forgettable(new)
  local ttl = math.min(math.max(tonumber(at) - tonumber(now), 1), 2 ^ 52)
  redis.call('SET', record_key,
    new.fp .. new.fence .. ' ' .. new.exp .. ' ' .. new.lease .. ' ' .. fmt(new.bytes) .. '\n' .. resp, 'PX', fmt(ttl))
  if not old or old.fence ~= new.fence or old.bytes ~= new.bytes then
    redis.call('SET', held_key, new.fence .. ' ' .. fmt(new.bytes))
  end
  if old and old.fence ~= new.fence then redis.call('ZREM', expiry_key, member(old.fence, field)) end
  if not old or old.fence ~= new.fence or forgettable(old) ~= at then
    redis.call('ZADD', expiry_key, at, member(new.fence, field))
  end
end

-- transition::check_fence: nil for the current claim, or the refusal to answer.
local function refusal(record, fence)
  if not record then return { 'no_record' } end
  if record.lease == '' then return { 'completed', record.fence } end
  if record.fence == fence then return nil end
  return { 'stale', record.fence }
end

if op == 'claim' then
  -- op::Claim: transition::claim through look, then step's fences, admission, usage.
  local records_max, bytes_max, fp, now, lease_end, retention_end, bytes =
    tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8], ARGV[9], tonumber(ARGV[10])
  local record, ghost, c = open(KEYS[1], KEYS[2], KEYS[3], field)
  if not c then return ghost end
  local stale = nil
  if record and lt(now, forgettable(record)) then
    if record.fp ~= fp then return { 'mismatch' } end
    if record.lease == '' then return { 'replay', string.sub(record.value, record.resp_at) } end
    if lt(now, record.lease) then return { 'conflict', record.lease } end
    stale = record.fence
  end
  -- step::admit, on the totals as they are once a ghost is accounted for.
  local records, held_bytes = c.records, c.bytes
  if ghost then records, held_bytes = records - 1, held_bytes - ghost.bytes end
  if records < 0 or held_bytes < 0 then return { 'corrupt', 'the counters count less than is held' } end
  if not record and records >= records_max then return { 'full', 'records' } end
  if held_bytes >= bytes_max then return { 'full', 'bytes' } end
  local records_delta, bytes_delta = 1, bytes
  if record then records_delta, bytes_delta = 0, bytes - record.bytes end
  if ghost then
    redis.call('ZREM', KEYS[4], member(ghost.fence, field))
    records_delta, bytes_delta = records_delta - 1, bytes_delta - ghost.bytes
  end
  local new = { fp = fp, fence = c.next, exp = retention_end, lease = lease_end, bytes = bytes }
  put(KEYS[1], KEYS[2], KEYS[4], record, new, now, '')
  write_counters(c, true, records_delta, bytes_delta)
  if stale then return { 'takeover', c.next, lease_end, stale } end
  return { 'execute', c.next, lease_end }
end

if op == 'complete' then
  -- op::Complete: transition::complete.
  local fence, now, retention_end, resp, bytes = ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
  local record, ghost, c = open(KEYS[1], KEYS[2], KEYS[3], field)
  if not c then return ghost end
  local refused = refusal(record, fence)
  if refused then
    if refused[1] == 'completed' and refused[2] == fence then return { 'applied' } end
    return refused
  end
  local new = { fp = record.fp, fence = fence, exp = retention_end, lease = '', bytes = bytes }
  put(KEYS[1], KEYS[2], KEYS[4], record, new, now, resp)
  write_counters(c, false, 0, bytes - record.bytes)
  return { 'applied' }
end

if op == 'release' then
  -- op::Release: transition::release.
  local fence = ARGV[4]
  local record, ghost, c = open(KEYS[1], KEYS[2], KEYS[3], field)
  if not c then return ghost end
  local refused = refusal(record, fence)
  if refused then return refused end
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('ZREM', KEYS[4], member(record.fence, field))
  write_counters(c, false, -1, -record.bytes)
  return { 'applied' }
end

if op == 'renew' then
  -- op::Renew: transition::renew, which never shortens a lease.
  local fence, now, lease_end = ARGV[4], ARGV[5], ARGV[6]
  local record, ghost, c = open(KEYS[1], KEYS[2], KEYS[3], field)
  if not c then return ghost end
  local refused = refusal(record, fence)
  if refused then return refused end
  if not lt(record.lease, lease_end) then return { 'renewed', record.lease } end
  local new = { fp = record.fp, fence = record.fence, exp = record.exp, lease = lease_end, bytes = record.bytes }
  put(KEYS[1], KEYS[2], KEYS[4], record, new, now, '')
  return { 'renewed', lease_end }
end

if op == 'purge' then
  -- Up to batch_max due index entries, earliest first (ties by fence), each through
  -- op::Expire; a record Redis forgot by itself is accounted for from its held entry when
  -- the index entry names its fence. Answers how many it forgot.
  local tag, now, batch_max = ARGV[3], ARGV[4], ARGV[5]
  local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', '0', batch_max)
  local purged, records_delta, bytes_delta = 0, 0, 0
  local c = nil
  for _, entry in ipairs(due) do
    local digits, id_field = string.match(entry, '^(%d+):(.*)$')
    if not digits or #digits ~= 20 then return { 'corrupt', 'an expiry index member: ' .. entry } end
    local fence = string.gsub(digits, '^0+', '')
    local record_key, held_key = tag .. ':r:' .. id_field, tag .. ':h:' .. id_field
    local record, ghost, counters = open(record_key, held_key, KEYS[1], id_field)
    if not counters then return ghost end
    c = counters
    if record then
      if not lt(now, forgettable(record)) then
        redis.call('DEL', record_key, held_key)
        redis.call('ZREM', KEYS[2], entry)
        records_delta, bytes_delta, purged = records_delta - 1, bytes_delta - record.bytes, purged + 1
      end
    elseif ghost and ghost.fence == fence then
      redis.call('DEL', held_key)
      redis.call('ZREM', KEYS[2], entry)
      records_delta, bytes_delta, purged = records_delta - 1, bytes_delta - ghost.bytes, purged + 1
    end
  end
  if c then write_counters(c, false, records_delta, bytes_delta) end
  return { 'purged', fmt(purged) }
end

return { 'corrupt', 'no operation ' .. tostring(op) }
