-- issue: allocate the next token of (counter, local day), idempotent on request id and re-scan.
-- ARGV[3] hip, [4] counter, [5] local date YYYYMMDD, [6] end of local day ms, [7] validity ms,
-- [8] request id or '', [9] abha address or '', [10] priority, [11] source, [12] public id candidate,
-- [13] label prefix
-- Returns {"token": {...}, "outcome": "created"|"duplicate"|"rescan"}.
local hip, counter, date = ARGV[3], ARGV[4], ARGV[5]
local eod, validity = tonumber(ARGV[6]), tonumber(ARGV[7])
local req, abha, prio, src, pub, prefix = ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13]
sweep(100)

if req ~= '' then
  local known = redis.call('GET', P .. 'r:' .. req)
  if known then
    local t = load(known)
    if t then return cjson.encode({token = t, outcome = 'duplicate'}) end
  end
end
local rescan_key = P .. 'a:' .. counter .. ':' .. date .. ':' .. abha
if abha ~= '' then
  local known = redis.call('GET', rescan_key)
  if known then
    local t = load(known)
    if t and (t.s == 'waiting' or t.s == 'called') then
      if req ~= '' then redis.call('SET', P .. 'r:' .. req, t.id, 'EX', 172800) end
      return cjson.encode({token = t, outcome = 'rescan'})
    end
  end
end

local seq_key = P .. 'seq:' .. counter .. ':' .. date
local n = redis.call('INCR', seq_key)
if n == 1 then redis.call('EXPIRE', seq_key, 259200) end
local ord = redis.call('INCR', P .. 'ord')
if prio == 'emergency' then ord = ord - 1000000000000 end
local id = string.format('%s.%s.%s.%05d', hip, counter, date, n)
local xp = NOW + validity
if xp > eod then xp = eod end
local t = {
  id = id, pub = pub, hip = hip, c = counter, oc = counter, d = date, n = tostring(n),
  lbl = prefix .. tostring(n), s = 'waiting', p = prio, src = src, abha = abha, req = req,
  ord = tostring(ord), iss = ARGV[2], cal = '', srv = '', fin = '', xp = tostring(xp),
  eod = tostring(eod), desk = '', sk = '0', rc = '0', v = '0',
}
local fields = {}
for k, _ in pairs(t) do if k ~= 'v' then fields[#fields + 1] = k end end
table.sort(fields)
save(t, fields, 'issued', '')
redis.call('EXPIRE', tkey(id), TOKEN_TTL)
redis.call('ZADD', lane_of(t), ord, id)
redis.call('ZADD', KEYS[2], xp, id)
if req ~= '' then redis.call('SET', P .. 'r:' .. req, id, 'EX', 172800) end
if abha ~= '' then redis.call('SET', rescan_key, id, 'EX', 172800) end
return cjson.encode({token = t, outcome = 'created'})
