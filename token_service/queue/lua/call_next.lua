-- call_next: the desk calls the next token from the counters it serves; its current called token,
-- if any, is completed first (a clerk moves on only when the last patient is done).
-- ARGV[3] desk, [4] priority ratio (priority calls per normal call), [5] ageing ms, [6..] counters.
-- Fair rule: emergency first; then a normal token that has waited >= ageing; then the priority lane
-- while the desk's priority streak is below the ratio; then the normal lane; a lane that is empty
-- yields to the other. Returns {"called": token|null, "completed": token|null}.
local desk, ratio, ageing = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
sweep(100)

local best_p, best_ps, best_n, best_ns
for i = 6, #ARGV do
  local c = ARGV[i]
  local hp = redis.call('ZRANGE', lane(c, 'p'), 0, 0, 'WITHSCORES')
  if #hp == 2 and (best_ps == nil or tonumber(hp[2]) < best_ps) then best_p, best_ps = hp[1], tonumber(hp[2]) end
  local hn = redis.call('ZRANGE', lane(c, 'n'), 0, 0, 'WITHSCORES')
  if #hn == 2 and (best_ns == nil or tonumber(hn[2]) < best_ns) then best_n, best_ns = hn[1], tonumber(hn[2]) end
end
if best_p == nil and best_n == nil then return cjson.encode({called = cjson.null, completed = cjson.null}) end

local d = desk_key(desk)
local streak = tonumber(redis.call('HGET', d, 'streak') or '0')
local prev_streak = tostring(streak)
local pick
if best_p and best_ps < 0 then
  pick = best_p
else
  local normal_aged = false
  if best_n then
    local iss = tonumber(redis.call('HGET', tkey(best_n), 'iss'))
    normal_aged = (NOW - iss) >= ageing
  end
  if best_n and normal_aged then
    pick, streak = best_n, 0
  elseif best_p and (best_n == nil or streak < ratio) then
    pick, streak = best_p, streak + 1
  else
    pick, streak = best_n, 0
  end
end

local entries = {}
local prev_cur = redis.call('HGET', d, 'cur') or ''
local done = cjson.null
if prev_cur ~= '' then
  local cur = load(prev_cur)
  if cur and cur.s == 'called' and cur.desk == desk then
    local before = snapshot(cur)
    detach(cur)
    cur.s = 'completed'
    cur.fin = ARGV[2]
    save(cur, {'s', 'fin'}, 'completed', desk)
    entries[#entries + 1] = undo_entry(before, cur)
    done = cur
  end
end

local t = load(pick)
local before = snapshot(t)
detach(t)
t.s = 'called'
t.desk = desk
if t.cal == '' then t.cal = ARGV[2] end
t.srv = ARGV[2]
save(t, {'s', 'desk', 'cal', 'srv'}, 'called', desk)
redis.call('ZADD', called_key(t.c), NOW, t.id)
entries[#entries + 1] = undo_entry(before, t)
redis.call('HSET', d, 'cur', t.id, 'streak', tostring(streak))
remember(desk, entries, prev_cur, prev_streak)
return cjson.encode({called = t, completed = done})
