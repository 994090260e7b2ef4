-- skip: a called patient did not come; put them back `places` tokens down their lane. The second
-- skip of the same token makes it a no-show.
-- ARGV[3] token id, [4] desk, [5] places. Returns {"token"} or {"err"}.
local id, desk, places = ARGV[3], ARGV[4], tonumber(ARGV[5])
sweep(100)
local t = load(id)
if not t then return cjson.encode({err = 'not_found'}) end
if t.s ~= 'called' then return cjson.encode({err = 'conflict', status = t.s}) end
local d = desk_key(desk)
local prev_cur = redis.call('HGET', d, 'cur') or ''
local prev_streak = redis.call('HGET', d, 'streak') or '0'
local before = snapshot(t)
detach(t)
if tonumber(t.sk) >= 1 then
  t.s = 'no_show'
  t.fin = ARGV[2]
  t.sk = tostring(tonumber(t.sk) + 1)
  save(t, 'no_show', desk)
else
  local l = lane_of(t)
  local score = place_after(l, places)
  local last = score == nil
  if last then score = tonumber(redis.call('INCR', P .. 'ord')) end
  t.s = 'waiting'
  t.sk = '1'
  t.ord = tostring(score)
  -- It was called once, so only the end of its day can expire it now.
  t.xp = t.eod
  t.desk = ''
  save(t, 'skipped', desk)
  if last then lane_push(l, ref_of(t.id)) else insert_sorted(l, ref_of(t.id), score) end
  wheel_add(t)
end
if redis.call('HGET', d, 'cur') == id then redis.call('HSET', d, 'cur', '') end
remember(desk, {undo_entry(before, t)}, prev_cur, prev_streak)
return cjson.encode({token = t})
