-- idem-redis: idem-core's store step (crates/idem-core/src/step.rs and transition.rs) on
-- the server, one atomic script per store operation. It answers exactly what
-- `idem_core::step::step` answers and writes exactly what the step names; the
-- differential tests (tests/differential.rs, tests/lifecycle_differential.rs) pin it to
-- idem-core's MemoryStore, and src/planted.rs checks that a rule planted wrong here is caught.
--
-- Numbers. Lua numbers are doubles. Fences, times, limits and counts arrive and stay as
-- canonical decimal strings (no sign, no leading zero), are compared with `lt` and
-- advanced with `succ`, both exact for every u64. Only usage totals (bounded by Redis's
-- memory, far below 2^53) and key expiries are numbers here, and numbers are written back
-- with '%.0f', never `tostring` (which keeps 14 digits).
--
-- Shapes (see the crate docs). A record is a string: the fingerprint's 32-byte digest,
-- then the header
--   "v<fingerprint version> <fence> <expires_at> <lease end> <stored bytes> <created_at>
--    <state i|c|t> <renewals> <replays> <tombstone_until> <request id> <trace id>\n"
-- (lease end only in flight, tombstone_until only when completed with one, holder ids
-- only in flight; an empty field is absent), then the response (completed only). The
-- byte after the digest tells the formats apart: 'v' here, a digit 1-9 (a fence) in the
-- records the script wrote before (version 1 fingerprint, "<fence> <expires_at> <lease
-- end> <stored bytes>\n"), which it still reads. Each record has a Redis expiry at its
-- forgettable time; its held entry "<fence> <stored bytes>" has none; the counters hash
-- holds `fence` (the next fence), `records` and `bytes`; the expiry index scores
-- "<fence, 20 digits>:<id field>" by the time a purge is due (Record::due_at); the list
-- index holds "<principal>\0<key>" at score 0 for every record held (ZRANGEBYLEX order is
-- RecordId's order).
--
-- KEYS: the record, its held entry, the counters, the expiry index, the list index
-- (purge: the last three).
-- ARGV[1] the operation, ARGV[2] the fence seed ('clock' or a fence), ARGV[3] the id
-- field (purge: the key tag), then:
--   claim        records_max, bytes_max, fingerprint, earlier fingerprint ('' if none),
--                now, now+lease, now+retention, bytes, request id, trace id
--   complete     fence, now, now+retention, tombstone_until ('' if none), response, bytes
--   release      fence
--   renew        fence, now, now+lease
--   forget       (nothing)
--   count_replay now
--   purge        now, batch_max, a tombstone's bytes less its id's
-- Fingerprints are as stored (`Fingerprint::to_stored`: 32 bytes for version 1, else the
-- version byte and the digest). Answers are arrays of strings; the first names the answer.

local op, seed, field = ARGV[1], ARGV[2], ARGV[3]

-- The fence seed from Redis's clock: ms since the epoch times 2^10 (FENCE_SEED_SHIFT).
local SEED_FACTOR = 1024
-- Saturation points of the counts (u32 renewals, u64 replays).
local U32_MAX, U64_MAX = '4294967295', '18446744073709551615'

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

-- s + 1, but never past `max` (saturating_add).
local function succ_max(s, max)
  if s == max then return s end
  return succ(s)
end

local function decimal(s)
  return s == '0' or (string.find(s, '^[1-9]%d*$') ~= nil and #s <= 20)
end

-- A record value as a table, nil when absent, false when it does not parse.
local function parse(value)
  if not value then return nil end
  local digest = string.sub(value, 1, 32)
  if #digest ~= 32 then return false end
  local legacy = false
  local fpv, fence, exp, lease, bytes, created, state, renewals, replays, tomb, req, trace, resp_at =
    string.match(value, '^v(%d+) ([1-9]%d*) (%d+) (%d*) (%d+) (%d+) ([ict]) (%d+) (%d+) (%d*) (%S*) (%S*)\n()', 33)
  if not fpv then
    -- The records the script wrote before versioned fingerprints and tombstones.
    fence, exp, lease, bytes, resp_at = string.match(value, '^([1-9]%d*) (%d+) (%d*) (%d+)\n()', 33)
    if not fence then return false end
    fpv, created, renewals, replays, tomb, req, trace = '1', '0', '0', '0', '', '', ''
    state = (lease == '') and 'c' or 'i'
    legacy = true
  end
  for _, n in ipairs({ fence, exp, created, renewals, replays }) do
    if not decimal(n) then return false end
  end
  if (lease ~= '' and not decimal(lease)) or (tomb ~= '' and not decimal(tomb)) then return false end
  if (state == 'i') ~= (lease ~= '') then return false end
  local fp = digest
  if fpv ~= '1' then fp = string.char(tonumber(fpv)) .. digest end
  return { fp = fp, fence = fence, exp = exp, lease = lease, bytes = tonumber(bytes), created = created,
    state = state, renewals = renewals, replays = replays, tomb = tomb, req = req, trace = trace,
    resp_at = resp_at, value = value, legacy = legacy }
end

-- A copy of record `r` with `changes` (a table of fields) applied.
local function with(r, changes)
  local copy = {}
  for k, v in pairs(r) do copy[k] = v end
  for k, v in pairs(changes) do copy[k] = v end
  return copy
end

-- The value `put` writes for record `r` with response `resp`.
local function encode(r, resp)
  local digest, fpv = r.fp, '1'
  if #r.fp == 33 then digest, fpv = string.sub(r.fp, 2), tostring(string.byte(r.fp, 1)) end
  return digest .. 'v' .. fpv .. ' ' .. r.fence .. ' ' .. r.exp .. ' ' .. r.lease .. ' ' .. fmt(r.bytes) .. ' '
    .. r.created .. ' ' .. r.state .. ' ' .. r.renewals .. ' ' .. r.replays .. ' ' .. r.tomb .. ' ' .. r.req
    .. ' ' .. r.trace .. '\n' .. resp
end

local function max(a, b)
  if lt(a, b) then return b end
  return a
end

-- Record::forgettable_at: retention's end, or a later lease's end in flight, or the
-- tombstone's end for a completed record that leaves one.
local function forgettable(r)
  if r.state == 'i' then return max(r.exp, r.lease) end
  if r.state == 'c' and r.tomb ~= '' then return r.tomb end
  return r.exp
end

-- Record::due_at: when a purge must visit it (a completed record: its retention's end).
local function due(r)
  if r.state == 'c' then return r.exp end
  return forgettable(r)
end

-- Record::is_tombstone at `now` (for a record not expired at `now`).
local function is_tombstone(r, now)
  if r.state == 't' then return true end
  return r.state == 'c' and r.tomb ~= '' and not lt(now, r.exp)
end

-- Record::answered_expiry at `now` (for a record not expired at `now`).
local function answered_expiry(r, now)
  if is_tombstone(r, now) then return forgettable(r) end
  return r.exp
end

-- The expiry-index member of a record.
local function member(fence, id_field)
  return string.rep('0', 20 - #fence) .. fence .. ':' .. id_field
end

-- The list-index member of an id field "<principal length>:<principal><key>".
local function listed(id_field)
  local digits, rest = string.match(id_field, '^(%d+):(.*)$')
  local n = tonumber(digits)
  return string.sub(rest, 1, n) .. '\0' .. string.sub(rest, n + 1)
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

-- Writes the counters back: the fence counter when the step moved it on, the usage
-- totals when they changed.
local function write_counters(c, issued, records, bytes)
  local fields = {}
  if issued then table.insert(fields, 'fence'); table.insert(fields, succ(c.next)) end
  if records ~= 0 then table.insert(fields, 'records'); table.insert(fields, fmt(c.records + records)) end
  if bytes ~= 0 or records ~= 0 then table.insert(fields, 'bytes'); table.insert(fields, fmt(c.bytes + bytes)) end
  if #fields > 0 then redis.call('HSET', c.key, unpack(fields)) end
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
-- `now`, on Redis's clock), its held entry, its index entries; `old` is what it replaces.
local function put(keys, id_field, old, new, now, resp)
  local at = forgettable(new)
  local ttl = math.min(math.max(tonumber(at) - tonumber(now), 1), 2 ^ 52)
  redis.call('SET', keys[1], encode(new, resp), 'PX', fmt(ttl))
  if not old or old.fence ~= new.fence or old.bytes ~= new.bytes then
    redis.call('SET', keys[2], new.fence .. ' ' .. fmt(new.bytes))
  end
  if old and old.fence ~= new.fence then redis.call('ZREM', keys[4], member(old.fence, id_field)) end
  if not old or old.fence ~= new.fence or due(old) ~= due(new) then
    redis.call('ZADD', keys[4], due(new), member(new.fence, id_field))
  end
  -- A record the script wrote before the list index existed is listed from its first write.
  if not old or old.legacy then redis.call('ZADD', keys[5], 0, listed(id_field)) end
end

-- Write::Delete of a record or of a ghost's accounting (`record` has its fence).
local function delete(keys, id_field, record)
  redis.call('DEL', keys[1], keys[2])
  redis.call('ZREM', keys[4], member(record.fence, id_field))
  redis.call('ZREM', keys[5], listed(id_field))
end

-- transition::check_fence: nil for the current claim, or the refusal to answer.
local function refusal(record, fence)
  if not record then return { 'no_record' } end
  if record.state ~= 'i' then return { 'completed', record.fence } end
  if record.fence == fence then return nil end
  return { 'stale', record.fence }
end

if op == 'claim' then
  -- op::Claim: transition::claim through look, then step's fences, admission, usage.
  local records_max, bytes_max, fp, earlier, now, lease_end, retention_end, bytes, req, trace =
    tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], tonumber(ARGV[11]),
    ARGV[12], ARGV[13]
  local record, ghost, c = open(KEYS[1], KEYS[2], KEYS[3], field)
  if not c then return ghost end
  local stale = nil
  if record and lt(now, forgettable(record)) then
    local expiry = answered_expiry(record, now)
    if record.fp ~= fp and (earlier == '' or record.fp ~= earlier) then return { 'mismatch', expiry } end
    if is_tombstone(record, now) then return { 'gone', expiry } end
    if record.state == 'c' then return { 'replay', expiry, string.sub(record.value, record.resp_at) } end
    if lt(now, record.lease) then return { 'conflict', record.lease, expiry, record.req, record.trace } end
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
  local new = { fp = fp, fence = c.next, exp = retention_end, lease = lease_end, bytes = bytes, created = now,
    state = 'i', renewals = '0', replays = '0', tomb = '', req = req, trace = trace }
  put(KEYS, field, record, new, now, '')
  write_counters(c, true, records_delta, bytes_delta)
  if stale then return { 'takeover', c.next, lease_end, stale } end
  return { 'execute', c.next, lease_end }
end

if op == 'complete' then
  -- op::Complete: transition::complete.
  local fence, now, retention_end, tomb, resp, bytes =
    ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9])
  local record, ghost, c = open(KEYS[1], KEYS[2], KEYS[3], field)
  if not c then return ghost end
  local refused = refusal(record, fence)
  if refused then
    if refused[1] == 'completed' and refused[2] == fence then return { 'applied' } end
    return refused
  end
  local new = with(record, { fence = fence, exp = retention_end, lease = '', bytes = bytes, state = 'c',
    renewals = '0', replays = '0', tomb = tomb, req = '', trace = '' })
  put(KEYS, field, record, new, now, resp)
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
  delete(KEYS, field, record)
  write_counters(c, false, -1, -record.bytes)
  return { 'applied' }
end

if op == 'renew' then
  -- op::Renew: transition::renew, which never shortens a lease and counts what it extends.
  local fence, now, lease_end = ARGV[4], ARGV[5], ARGV[6]
  local record, ghost, c = open(KEYS[1], KEYS[2], KEYS[3], field)
  if not c then return ghost end
  local refused = refusal(record, fence)
  if refused then return refused end
  if not lt(record.lease, lease_end) then return { 'renewed', record.lease } end
  local new = with(record, { lease = lease_end, renewals = succ_max(record.renewals, U32_MAX) })
  put(KEYS, field, record, new, now, '')
  return { 'renewed', lease_end }
end

if op == 'forget' then
  -- op::Forget: transition::forget, and the fence counter moves on (forget is fenced). A
  -- ghost is accounted for the same way; there is no record left to answer.
  local record, ghost, c = open(KEYS[1], KEYS[2], KEYS[3], field)
  if not c then return ghost end
  local gone = record or ghost
  if not gone then return { 'none' } end
  delete(KEYS, field, gone)
  write_counters(c, true, -1, -gone.bytes)
  if record then return { 'forgot', record.value } end
  return { 'none' }
end

if op == 'count_replay' then
  -- op::CountReplay: transition::count_replay, a completed record within its retention.
  local now = ARGV[4]
  local record, ghost, c = open(KEYS[1], KEYS[2], KEYS[3], field)
  if not c then return ghost end
  if not record or record.state ~= 'c' or not lt(now, record.exp) then return { 'not_counted' } end
  local new = with(record, { replays = succ_max(record.replays, U64_MAX) })
  put(KEYS, field, record, new, now, string.sub(record.value, record.resp_at))
  return { 'counted' }
end

if op == 'purge' then
  -- Up to batch_max due index entries, earliest first (ties by fence), each through
  -- op::Expire (forget it, or shrink a completed record to its tombstone); a record Redis
  -- forgot by itself is accounted for from its held entry when the index entry names its
  -- fence. Answers how many it changed.
  local tag, now, batch_max, tomb_fixed = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
  local due_entries = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', '0', batch_max)
  local purged, records_delta, bytes_delta = 0, 0, 0
  local c = nil
  for _, entry in ipairs(due_entries) do
    local digits, id_field = string.match(entry, '^(%d+):(%d+:.*)$')
    if not digits or #digits ~= 20 then return { 'corrupt', 'an expiry index member: ' .. entry } end
    local fence = string.gsub(digits, '^0+', '')
    local keys = { tag .. ':r:' .. id_field, tag .. ':h:' .. id_field, KEYS[1], KEYS[2], KEYS[3] }
    local record, ghost, counters = open(keys[1], keys[2], KEYS[1], id_field)
    if not counters then return ghost end
    c = counters
    if record and not lt(now, due(record)) then
      if record.state == 'c' and record.tomb ~= '' and lt(now, record.tomb) then
        local digits_len = #string.match(id_field, '^(%d+):')
        local new = with(record, { exp = record.tomb, tomb = '', state = 't', replays = '0',
          bytes = #id_field - digits_len - 1 + tomb_fixed })
        put(keys, id_field, record, new, now, '')
        bytes_delta = bytes_delta + new.bytes - record.bytes
      else
        delete(keys, id_field, record)
        records_delta, bytes_delta = records_delta - 1, bytes_delta - record.bytes
      end
      purged = purged + 1
    elseif not record and ghost and ghost.fence == fence then
      delete(keys, id_field, ghost)
      records_delta, bytes_delta, purged = records_delta - 1, bytes_delta - ghost.bytes, purged + 1
    end
  end
  if c then write_counters(c, false, records_delta, bytes_delta) end
  return { 'purged', fmt(purged) }
end

return { 'corrupt', 'no operation ' .. tostring(op) }
