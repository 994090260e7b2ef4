-- restore: put one token back from its SQL record (opd-token rebuild). Sequences and the arrival
-- counter only ever move up, so numbering continues above the highest restored number.
-- ARGV[3] token JSON (the hash fields). Returns {"restored": id}.
local t = cjson.decode(ARGV[3])
local have = redis.call('HGET', tkey(t.id), 'v')
if have and tonumber(have) >= tonumber(t.v) then return cjson.encode({restored = cjson.null}) end
local flat = {}
for k, v in pairs(t) do
  flat[#flat + 1] = k
  flat[#flat + 1] = tostring(v)
end
redis.call('DEL', tkey(t.id))
redis.call('HSET', tkey(t.id), unpack(flat))
redis.call('EXPIRE', tkey(t.id), TOKEN_TTL)
local seq_key = P .. 'seq:' .. t.oc .. ':' .. t.d
local seq = tonumber(redis.call('GET', seq_key) or '0')
if tonumber(t.n) > seq then redis.call('SET', seq_key, t.n, 'EX', 259200) end
local ord = tonumber(redis.call('GET', P .. 'ord') or '0')
local tord = tonumber(t.ord)
if tord < 0 then tord = tord + 1000000000000 end
tord = math.ceil(tord)
if tord > ord then redis.call('SET', P .. 'ord', tostring(tord)) end
if t.req ~= '' then redis.call('SET', P .. 'r:' .. t.req, t.id, 'EX', 172800) end
if t.abha ~= '' then redis.call('SET', P .. 'a:' .. t.oc .. ':' .. t.d .. ':' .. t.abha, t.id, 'EX', 172800) end
if t.s == 'waiting' then
  redis.call('ZADD', lane_of(t), tonumber(t.ord), t.id)
  redis.call('ZADD', KEYS[2], tonumber(t.xp), t.id)
elseif t.s == 'called' then
  redis.call('ZADD', called_key(t.c), tonumber(t.srv), t.id)
  if t.desk ~= '' then redis.call('HSET', desk_key(t.desk), 'cur', t.id) end
end
return cjson.encode({restored = t.id})
