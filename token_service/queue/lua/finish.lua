-- finish: complete (from called) or cancel (from waiting or called) a token.
-- ARGV[3] token id, [4] desk ('' = not a desk action, not undoable), [5] 'completed'|'cancelled'.
local id, desk, to = ARGV[3], ARGV[4], ARGV[5]
sweep(100)
local t = load(id)
if not t then return cjson.encode({err = 'not_found'}) end
local allowed = (t.s == 'called') or (to == 'cancelled' and t.s == 'waiting')
if not allowed then return cjson.encode({err = 'conflict', status = t.s}) end
local before = snapshot(t)
local prev_cur, prev_streak = '', '0'
if desk ~= '' then
  prev_cur = redis.call('HGET', desk_key(desk), 'cur') or ''
  prev_streak = redis.call('HGET', desk_key(desk), 'streak') or '0'
end
detach(t)
t.s = to
t.fin = ARGV[2]
save(t, to, desk)
if t.desk ~= '' and redis.call('HGET', desk_key(t.desk), 'cur') == id then
  redis.call('HSET', desk_key(t.desk), 'cur', '')
end
if desk ~= '' then remember(desk, {undo_entry(before, t)}, prev_cur, prev_streak) end
return cjson.encode({token = t})
