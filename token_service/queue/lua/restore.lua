-- restore: put one token back from its SQL record (opd-token rebuild). Sequences and the arrival
-- counter only ever move up, so numbering continues above the highest restored number.
-- ARGV[3] token JSON (the fields of a token). Returns {"restored": id}.
local t = cjson.decode(ARGV[3])
for k, v in pairs(t) do t[k] = tostring(v) end
local have = load(t.id)
if have and tonumber(have.v) >= tonumber(t.v) then return cjson.encode({restored = cjson.null}) end
if have then detach(have) end
store(t)
local seq_key = P .. 'seq:' .. t.oc .. ':' .. t.d
local seq = tonumber(redis.call('GET', seq_key) or '0')
if tonumber(t.n) > seq then redis.call('SET', seq_key, t.n, 'EX', 259200) end
local ord = tonumber(redis.call('GET', P .. 'ord') or '0')
local tord = tonumber(t.ord)
if tord < 0 then tord = tord + 1000000000000 end
tord = math.ceil(tord)
if tord > ord then redis.call('SET', P .. 'ord', tostring(tord)) end
if t.req ~= '' then req_remember(t.req, redis.sha1hex(t.req), t.id) end
if t.abha ~= '' then rescan_remember(rescan_bucket(t.oc, t.d, redis.sha1hex(t.abha)), t.abha, t.n) end
if t.s == 'waiting' then
  lane_remove(lane_of(t), ref_of(t.id))  -- in case its record alone was lost
  insert_sorted(lane_of(t), ref_of(t.id), tonumber(t.ord))
  wheel_add(t)
elseif t.s == 'called' then
  redis.call('ZADD', called_key(t.c), tonumber(t.srv), t.id)
  if t.desk ~= '' then redis.call('HSET', desk_key(t.desk), 'cur', t.id) end
end
return cjson.encode({restored = t.id})
