-- undo: put back what the desk's last action changed, if nothing else touched those tokens since.
-- ARGV[3] desk. Returns {"tokens": [...]} or {"err"}.
local desk = ARGV[3]
local d = desk_key(desk)
local raw = redis.call('HGET', d, 'undo')
if not raw or raw == '' then return cjson.encode({err = 'nothing_to_undo'}) end
local rec = cjson.decode(raw)
for _, e in ipairs(rec.e) do
  local v = redis.call('HGET', tkey(e.prev.id), 'v')
  if v ~= e.v then return cjson.encode({err = 'conflict', status = 'changed'}) end
end
-- A token that expired in the meantime must not come back from the dead: sweep after the check.
local restored = {}
for i = #rec.e, 1, -1 do
  local e = rec.e[i]
  local t = load(e.prev.id)
  detach(t)
  local prev = e.prev
  local fields = {}
  for k, val in pairs(prev) do
    if k ~= 'v' then
      t[k] = val
      fields[#fields + 1] = k
    end
  end
  table.sort(fields)
  save(t, fields, 'undone', desk)
  if t.s == 'waiting' then
    redis.call('ZADD', lane_of(t), tonumber(t.ord), t.id)
    redis.call('ZADD', KEYS[2], tonumber(t.xp), t.id)
  elseif t.s == 'called' then
    redis.call('ZADD', called_key(t.c), tonumber(t.srv), t.id)
    if t.desk ~= '' then redis.call('HSET', desk_key(t.desk), 'cur', t.id) end
  end
  restored[#restored + 1] = t
end
redis.call('HSET', d, 'cur', rec.cur, 'streak', rec.streak, 'undo', '')
sweep(100)
return cjson.encode({tokens = restored})
