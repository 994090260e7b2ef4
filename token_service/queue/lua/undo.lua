-- undo: put back what the desk's last action changed, if nothing else touched those tokens since.
-- ARGV[3] desk. Returns {"tokens": [...]} or {"err"}.
local desk = ARGV[3]
local d = desk_key(desk)
local raw = redis.call('HGET', d, 'undo')
if not raw or raw == '' then return cjson.encode({err = 'nothing_to_undo'}) end
local rec = cjson.decode(raw)
for _, e in ipairs(rec.e) do
  local now = load(e.prev.id)
  if now == nil or now.v ~= e.v then return cjson.encode({err = 'conflict', status = 'changed'}) end
end
-- A token that expired in the meantime must not come back from the dead: sweep after the check.
local restored = {}
for i = #rec.e, 1, -1 do
  local e = rec.e[i]
  local t = load(e.prev.id)
  detach(t)
  local v = t.v
  t = e.prev
  t.v = v
  save(t, 'undone', desk)
  if t.s == 'waiting' then
    insert_sorted(lane_of(t), ref_of(t.id), tonumber(t.ord))
    wheel_add(t)
  elseif t.s == 'called' then
    redis.call('ZADD', called_key(t.c), tonumber(t.srv), t.id)
    if t.desk ~= '' then redis.call('HSET', desk_key(t.desk), 'cur', t.id) end
  end
  restored[#restored + 1] = t
end
redis.call('HSET', d, 'cur', rec.cur, 'streak', rec.streak, 'undo', '')
sweep(100)
return cjson.encode({tokens = restored})
