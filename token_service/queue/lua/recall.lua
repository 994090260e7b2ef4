-- recall: announce a called token again (optionally from another desk). Not undoable: nothing to undo.
-- ARGV[3] token id, [4] desk ('' = the desk that called it). Returns {"token"} or {"err"}.
local id, desk = ARGV[3], ARGV[4]
sweep(100)
local t = load(id)
if not t then return cjson.encode({err = 'not_found'}) end
if t.s ~= 'called' then return cjson.encode({err = 'conflict', status = t.s}) end
if desk ~= '' and desk ~= t.desk then
  local old = desk_key(t.desk)
  if redis.call('HGET', old, 'cur') == t.id then redis.call('HSET', old, 'cur', '') end
  t.desk = desk
  redis.call('HSET', desk_key(desk), 'cur', t.id)
end
t.rc = tostring(tonumber(t.rc) + 1)
t.srv = ARGV[2]
save(t, 'recalled', t.desk)
return cjson.encode({token = t})
