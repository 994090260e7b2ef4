-- transfer: send a waiting or called token to the end of another counter's line. The token keeps its
-- id and label (the patient's slip stays valid); only its counter changes.
-- ARGV[3] token id, [4] target counter, [5] desk ('' = not undoable).
local id, target, desk = ARGV[3], ARGV[4], ARGV[5]
sweep(100)
local t = load(id)
if not t then return cjson.encode({err = 'not_found'}) end
if t.s ~= 'waiting' and t.s ~= 'called' then return cjson.encode({err = 'conflict', status = t.s}) end
if t.c == target then return cjson.encode({err = 'same_counter', status = t.s}) end
local before = snapshot(t)
local prev_cur, prev_streak = '', '0'
if desk ~= '' then
  prev_cur = redis.call('HGET', desk_key(desk), 'cur') or ''
  prev_streak = redis.call('HGET', desk_key(desk), 'streak') or '0'
end
detach(t)
if t.desk ~= '' and redis.call('HGET', desk_key(t.desk), 'cur') == id then
  redis.call('HSET', desk_key(t.desk), 'cur', '')
end
local new_deadline = t.s == 'called'
if t.cal ~= '' then t.xp = t.eod end
local ord = redis.call('INCR', P .. 'ord')
if t.p == 'emergency' then ord = ord - 1000000000000 end
t.c = target
t.s = 'waiting'
t.desk = ''
t.ord = tostring(ord)
save(t, 'transferred', desk)
append(t)
-- A waiting token keeps its deadline and its wheel entry.
if new_deadline then wheel_add(t) end
if desk ~= '' then remember(desk, {undo_entry(before, t)}, prev_cur, prev_streak) end
return cjson.encode({token = t})
