-- Shared prelude, prepended to every operation script by scripts.py.
-- Conventions for every script:
--   KEYS[1] = events stream   opd:{hip}:ev
--   KEYS[2] = expiry index    opd:{hip}:xb
--   ARGV[1] = facility prefix opd:{hip}:   (per-token and per-counter keys are derived from it; the
--             hash tag keeps them in the slot of KEYS[1], which is what Redis Cluster needs)
--   ARGV[2] = now, ms since the epoch (the service's injectable clock, never Redis TIME, so tests can
--             move time)
-- A token, as scripts see it, is a table of strings: id pub hip c oc d n lbl s p src abha req ord iss
-- cal srv fin xp eod desk sk rc v. Scripts return JSON strings.
--
-- Layout (token_service/queue/keys.py spells the same keys for Python; a waiting token costs ~220 B):
--   k:<oc>:<d>:<n div 64>  hash: field <n> = the token's packed record, field 'e' = the day's end (ms).
--                          The id, facility, origin counter, day and number are the key and field.
--   w:<c>:p, w:<c>:n       lists of refs (`<oc>.<d>.<nnnnn>`, the id without the facility), kept in
--                          `ord` order: the priority and normal lanes.
--   wv                     hash: per lane `<c>:<l>:h` removals at its head, `<c>:<l>:t` appends at its
--                          tail, `<c>:<l>:e` every other change (lanes.lua, for copies that catch up).
--   called:<c>             sorted set of called ids, by time called.
--   x:<minute>, xb         expiry wheel: lists of `<ref>@<ms>` by the minute they expire in, and a
--                          sorted set of the minutes that have a list. Entries are not removed when a
--                          token leaves the waiting state; the sweep drops them when it meets them.
--   r:<utc day>:<3 hex>    hash: REQUEST-ID -> ref, kept 24 to 48 hours.
--   a:<c>:<d>:<0..1023>    hash: ABHA address -> number, for re-scans at counter c on day d.
-- The ABHA address and REQUEST-ID are not in the record: they are in the issue's event (the SQL record
-- keeps them) and in the two maps; a token loaded later carries them as ''.
local P = ARGV[1]
local NOW = tonumber(ARGV[2])
local TOKEN_TTL = 259200
local BUCKET = 64
local WHEEL_MS = 60000
local DAY_MS = 86400000

local STATUS = {'waiting', 'called', 'completed', 'cancelled', 'no_show', 'expired'}
local PRIORITY = {'normal', 'senior', 'pwd', 'pregnant', 'emergency'}
local SOURCE = {'scan_share', 'walk_in', 'abha_card'}
local function codes(list)
  local m = {}
  for i, v in ipairs(list) do m[v] = tostring(i - 1) end
  return m
end
local STATUS_CODE, PRIORITY_CODE, SOURCE_CODE = codes(STATUS), codes(PRIORITY), codes(SOURCE)

local DIGITS = '0123456789abcdefghijklmnopqrstuvwxyz'
-- Signed base 36 ('' stays ''), the record's form of a time offset.
local function b36(x)
  if x == nil then return '' end
  local neg = x < 0
  if neg then x = -x end
  local s = ''
  repeat
    local r = x % 36
    s = string.sub(DIGITS, r + 1, r + 1) .. s
    x = (x - r) / 36
  until x == 0
  if neg then s = '-' .. s end
  return s
end
local function unb36(s)
  if s == '' then return nil end
  if string.sub(s, 1, 1) == '-' then return -tonumber(string.sub(s, 2), 36) end
  return tonumber(s, 36)
end

local HIP = string.match(P, '{(.*)}')
local function ref_of(id) return string.match(id, '^[^.]*%.(.*)$') end
local function id_of(ref) return HIP .. '.' .. ref end
local function parse(id)
  local hip, oc, d, n = string.match(id, '^([^.]*)%.(.+)%.(%d%d%d%d%d%d%d%d)%.(%d+)$')
  return hip, oc, d, n
end
local function bucket_key(oc, d, n) return P .. 'k:' .. oc .. ':' .. d .. ':' .. math.floor(tonumber(n) / BUCKET) end
local function lane(counter, l) return P .. 'w:' .. counter .. ':' .. l end
-- Count a change of a lane ('h' removed at the head, 't' appended at the tail, 'e' anything else): a
-- reader that keeps a copy of a lane catches up from these counters instead of reading it whole
-- (lanes.lua). Every change of a lane must be counted here.
local LANE_COUNTS = P .. 'wv'
local function lane_count(key, what)
  redis.call('HINCRBY', LANE_COUNTS, string.sub(key, #P + 3) .. ':' .. what, 1)
end
local function called_key(counter) return P .. 'called:' .. counter end
local function desk_key(desk) return P .. 'desk:' .. desk end

-- Record: pub|c|lbl|s p src|ord|eod-iss|cal-iss|srv-cal|fin-iss|eod-xp|desk|sk|rc|v|eod-E
-- (times in signed base 36 ms; c '' when it is the origin counter; an emergency's ord + 10^12; E the
-- bucket's day end; empty fields at the end left out). A waiting token's record is ~45 bytes, a completed one's ~55: under the
-- 64 of Redis's compact hash encoding (a longer one only makes its bucket an ordinary hash).
local EMERGENCY = 1000000000000
local EMERGENCY_DIGIT = '4'  -- PRIORITY_CODE['emergency']
local function ord_from(codes_, stored)
  if string.sub(codes_, 2, 2) == EMERGENCY_DIGIT then return tonumber(stored) - EMERGENCY end
  return tonumber(stored)
end

local function pack(t, e)
  local iss, eod = tonumber(t.iss), tonumber(t.eod)
  local function rel(v) if v == '' then return '' end return b36(tonumber(v) - iss) end
  local c = t.c
  if c == t.oc then c = '' end
  local xp = ''
  if t.xp ~= t.eod then xp = b36(eod - tonumber(t.xp)) end
  local de = ''
  if eod ~= e then de = b36(eod - e) end
  local srv = ''
  if t.srv ~= '' then srv = b36(tonumber(t.srv) - tonumber(t.cal)) end
  local ord = t.ord
  if t.p == 'emergency' then ord = tostring(tonumber(ord) + EMERGENCY) end
  local packed = table.concat({t.pub, c, t.lbl, STATUS_CODE[t.s] .. PRIORITY_CODE[t.p] .. SOURCE_CODE[t.src],
    ord, b36(eod - iss), rel(t.cal), srv, rel(t.fin), xp, t.desk, t.sk, t.rc, t.v, de}, '|')
  return (string.gsub(packed, '|+$', ''))
end

local function unpack_record(id, raw, e)
  local hip, oc, d, n = parse(id)
  local f = {}
  for part in string.gmatch(raw .. '|', '([^|]*)|') do f[#f + 1] = part end
  for i = #f + 1, 15 do f[i] = '' end
  local eod = e + (unb36(f[15]) or 0)
  local iss = eod - unb36(f[6])
  local function abs(s) local v = unb36(s) if v == nil then return '' end return tostring(iss + v) end
  local codes_ = f[4]
  local c = f[2]
  if c == '' then c = oc end
  local xp = eod
  if f[10] ~= '' then xp = eod - unb36(f[10]) end
  local srv = ''
  if f[8] ~= '' then srv = tostring(iss + unb36(f[7]) + unb36(f[8])) end
  return {
    id = id, pub = f[1], hip = hip, c = c, oc = oc, d = d, n = tostring(tonumber(n)), lbl = f[3],
    s = STATUS[tonumber(string.sub(codes_, 1, 1)) + 1], p = PRIORITY[tonumber(string.sub(codes_, 2, 2)) + 1],
    src = SOURCE[tonumber(string.sub(codes_, 3, 3)) + 1], abha = '', req = '', ord = tostring(ord_from(codes_, f[5])),
    iss = tostring(iss), cal = abs(f[7]), srv = srv, fin = abs(f[9]), xp = tostring(xp),
    eod = tostring(eod), desk = f[11], sk = f[12], rc = f[13], v = f[14],
  }
end

local function load(id)
  local hip, oc, d, n = parse(id)
  if not n then return nil end
  local got = redis.call('HMGET', bucket_key(oc, d, n), tostring(tonumber(n)), 'e')
  if not got[1] then return nil end
  return unpack_record(id, got[1], tonumber(got[2]))
end

-- Write the token's record (creating its bucket, with the day's end, for the first of 64 numbers).
local function store(t)
  local key = bucket_key(t.oc, t.d, t.n)
  local e = redis.call('HGET', key, 'e')
  if not e then
    e = t.eod
    redis.call('HSET', key, 'e', e)
    redis.call('EXPIRE', key, TOKEN_TTL)
  end
  redis.call('HSET', key, t.n, pack(t, tonumber(e)))
end

local function lane_of(t)
  if t.p == 'normal' then return lane(t.c, 'n') end
  return lane(t.c, 'p')
end

-- The `ord` of a lane member, read from its record without unpacking the rest (a member without a
-- record, which only a hand-deleted key leaves, sorts first so that call_next meets and drops it).
local function ord_of(ref)
  local _, oc, d, n = parse(id_of(ref))
  local raw = redis.call('HGET', bucket_key(oc, d, n), tostring(tonumber(n)))
  if not raw then return -math.huge end
  return ord_from(string.match(raw, '^[^|]*|[^|]*|[^|]*|([^|]*)|([^|]*)|'))
end

-- Lanes are kept in (ord, id) order, the order a sorted set scored by `ord` would give.
local function after(ord_a, ref_a, ord_b, ref_b)
  return ord_a > ord_b or (ord_a == ord_b and ref_a > ref_b)
end

-- Insert `item` into the ordered list `key`: last when `last_ok(tail)` holds (the common case, one
-- read), else before the first element for which `before(element)` holds, walking from the head.
-- Returns 't' when it went last, 'e' when it went in between.
local function insert_ordered(key, item, last_ok, before)
  local tail = redis.call('LINDEX', key, -1)
  if not tail or last_ok(tail) then
    redis.call('RPUSH', key, item)
    return 't'
  end
  local start = 0
  while true do
    local chunk = redis.call('LRANGE', key, start, start + 99)
    for _, other in ipairs(chunk) do
      if before(other) then
        redis.call('LINSERT', key, 'BEFORE', other, item)
        return 'e'
      end
    end
    start = start + 100
  end
end

-- Put a ref into a lane at the place its order gives. A new token goes last (the tail check), an
-- undone call first; otherwise the lane is walked from its head.
local function insert_sorted(key, ref, ord)
  local function before(other) return after(ord_of(other), other, ord, ref) end
  lane_count(key, insert_ordered(key, ref, function(tail) return not before(tail) end, before))
end

-- Append a ref at the end of a lane.
local function lane_push(key, ref)
  redis.call('RPUSH', key, ref)
  lane_count(key, 't')
end

-- Take a ref out of a lane: a pop when it is first (a call), else a search.
local function lane_remove(key, ref)
  if redis.call('LINDEX', key, 0) == ref then
    redis.call('LPOP', key)
    lane_count(key, 'h')
  elseif redis.call('LREM', key, 0, ref) > 0 then
    lane_count(key, 'e')
  end
end

-- The expiry wheel. Each entry is `<ref>@<ms into the minute>`, the deadline it was added with, and
-- each minute's list is kept in that order, so the sweep reads the current minute from its head and
-- stops at the first entry not yet due. An entry goes stale when its token is called or gets a new
-- deadline; the sweep drops it when it meets it (only a waiting token whose `xp` has passed expires).
-- A new token's deadline is the latest but for the few ms by which concurrent callers' clocks differ:
-- within a second of the tail it goes last (it may then expire up to that second late).
local function entry_xp(entry, minute)
  return minute * WHEEL_MS + tonumber(string.match(entry, '@(%d+)$'))
end

local function wheel_add(t)
  local xp = tonumber(t.xp)
  local minute = math.floor(xp / WHEEL_MS)
  local key = P .. 'x:' .. minute
  local entry = ref_of(t.id) .. '@' .. (xp - minute * WHEEL_MS)
  redis.call('ZADD', KEYS[2], minute, minute)
  insert_ordered(key, entry, function(tail) return entry_xp(tail, minute) <= xp + 1000 end,
    function(other) return entry_xp(other, minute) > xp end)
end

-- Persist the token, bump the version and emit one event carrying the full snapshot.
local function save(t, kind, desk)
  t.v = tostring(tonumber(t.v or '0') + 1)
  store(t)
  local ev = cjson.encode({k = kind, at = ARGV[2], desk = desk or '', t = t})
  redis.call('XADD', KEYS[1], '*', 'e', ev)
  redis.call('PUBLISH', P .. 'live', ev)
end

local function snapshot(t)
  local copy = {}
  for k, v in pairs(t) do copy[k] = v end
  return copy
end

-- Take a token out of every structure that holds it because it is waiting or called (its expiry
-- wheel entries stay until the sweep meets them).
local function detach(t)
  if t.s == 'waiting' then lane_remove(lane_of(t), ref_of(t.id)) end
  if t.s == 'called' then redis.call('ZREM', called_key(t.c), t.id) end
end

-- Expire waiting tokens whose deadline passed (never called within validity, or their day ended).
-- Bounded per call (wheel entries examined); a periodic sweep call drains any backlog. A minute that
-- has not ended is read from its head up to the first entry not yet due.
local function sweep(limit)
  local examined = 0
  local now_minute = math.floor(NOW / WHEEL_MS)
  local minutes = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_minute, 'LIMIT', 0, 64)
  for _, m in ipairs(minutes) do
    local minute = tonumber(m)
    local key = P .. 'x:' .. m
    while examined < limit do
      local entry = redis.call('LINDEX', key, 0)
      if not entry or entry_xp(entry, minute) > NOW then break end
      redis.call('LPOP', key)
      examined = examined + 1
      local t = load(id_of(string.match(entry, '^(.*)@')))
      if t and t.s == 'waiting' and tonumber(t.xp) <= NOW then
        detach(t)
        t.s = 'expired'
        t.fin = ARGV[2]
        save(t, 'expired', '')
      end
    end
    if redis.call('EXISTS', key) == 0 then redis.call('ZREM', KEYS[2], m) end
    if examined >= limit then break end
  end
  return examined
end

-- Record what a desk action changed so that `undo` can put it back.
local function remember(desk, entries, prev_cur, prev_streak)
  local d = desk_key(desk)
  redis.call('HSET', d, 'undo', cjson.encode({e = entries, cur = prev_cur or '', streak = prev_streak or '0'}))
end

local function undo_entry(before, after)
  return {prev = before, v = after.v}
end

-- The order that puts a token `places` positions down the lane (between the tokens at `places` and
-- `places` + 1), or nil when the lane has no token after that place: the caller then takes a fresh
-- arrival number, so that a token at the end of a lane always has the highest `ord` in it.
local function place_after(lane_key, places)
  if places < 1 then places = 1 end
  local items = redis.call('LRANGE', lane_key, places - 1, places)
  if #items < 2 then return nil end
  return (ord_of(items[1]) + ord_of(items[2])) / 2
end

-- Append a token with a fresh arrival number to its lane: last, unless it is an emergency (ahead of
-- every other token, after the emergencies before it).
local function append(t)
  if t.p == 'emergency' then
    insert_sorted(lane_of(t), ref_of(t.id), tonumber(t.ord))
  else
    lane_push(lane_of(t), ref_of(t.id))
  end
end

-- Idempotency maps. Buckets are chosen by the first hex digits of the key's SHA-1.
local function req_lookup(req, digest)
  local gen = math.floor(NOW / DAY_MS)
  local tail = ':' .. string.sub(digest, 1, 3)
  local ref = redis.call('HGET', P .. 'r:' .. gen .. tail, req)
  if not ref then ref = redis.call('HGET', P .. 'r:' .. (gen - 1) .. tail, req) end
  if ref then return id_of(ref) end
  return nil
end
local function req_remember(req, digest, id)
  local key = P .. 'r:' .. math.floor(NOW / DAY_MS) .. ':' .. string.sub(digest, 1, 3)
  redis.call('HSET', key, req, ref_of(id))
  redis.call('EXPIRE', key, 2 * 86400 + 3600)
end
local function rescan_bucket(counter, date, digest)
  return P .. 'a:' .. counter .. ':' .. date .. ':' .. (tonumber(string.sub(digest, 1, 3), 16) % 1024)
end
local function rescan_remember(key, abha, n)
  redis.call('HSET', key, abha, n)
  redis.call('EXPIRE', key, 172800)
end
