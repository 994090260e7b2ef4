-- issue: allocate the next token of (counter, local day), idempotent on request id and re-scan.
-- ARGV[3] hip, [4] counter, [5] local date YYYYMMDD, [6] end of local day ms, [7] validity ms,
-- [8] request id or '', [9] abha address or '', [10] priority, [11] source, [12] public id candidate,
-- [13] label prefix
-- Returns {"token": {...}, "outcome": "created"|"duplicate"|"rescan"}.
local hip, counter, date = ARGV[3], ARGV[4], ARGV[5]
local eod, validity = tonumber(ARGV[6]), tonumber(ARGV[7])
local req, abha, prio, src, pub, prefix = ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13]
sweep(100)

local req_digest, rescan_key = '', ''
if req ~= '' then req_digest = redis.sha1hex(req) end
if abha ~= '' then rescan_key = rescan_bucket(counter, date, redis.sha1hex(abha)) end
if req ~= '' then
  local known = req_lookup(req, req_digest)
  if known then
    local t = load(known)
    if t then
      t.req = req  -- the record leaves it out; this state may be the first to reach SQL
      return cjson.encode({token = t, outcome = 'duplicate'})
    end
  end
end
if abha ~= '' then
  local known = redis.call('HGET', rescan_key, abha)
  if known then
    local t = load(string.format('%s.%s.%s.%05d', hip, counter, date, tonumber(known)))
    if t and (t.s == 'waiting' or t.s == 'called') then
      t.abha = abha
      if req ~= '' then req_remember(req, req_digest, t.id) end
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
save(t, 'issued', '')
append(t)
wheel_add(t)
if req ~= '' then req_remember(req, req_digest, id) end
if abha ~= '' then rescan_remember(rescan_key, abha, n) end
return cjson.encode({token = t, outcome = 'created'})
