-- call_next: the desk calls the next token from the counters it serves; its current called token,
-- if any, is completed first (a clerk moves on only when the last patient is done).
-- ARGV[3] desk, [4] priority ratio (priority calls per normal call), [5] ageing ms, [6..] counters.
-- Fair rule: emergency first; then a normal token that has waited >= ageing; then the priority lane
-- while the desk's priority streak is below the ratio; then the normal lane; a lane that is empty
-- yields to the other. Returns {"called": token|null, "completed": token|null}.
local desk, ratio, ageing = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
sweep(100)

-- The first token of a lane over the desk's counters: lowest (ord, id); the first counter wins a tie.
local function head(l)
  local best, best_ord
  for i = 6, #ARGV do
    local key = lane(ARGV[i], l)
    local ref = redis.call('LINDEX', key, 0)
    local o = ref and ord_of(ref)
    while ref and o == -math.huge do  -- a member whose record is gone
      redis.call('LPOP', key)
      lane_count(key, 'h')
      ref = redis.call('LINDEX', key, 0)
      o = ref and ord_of(ref)
    end
    if ref and (best == nil or o < best_ord) then best, best_ord = ref, o end
  end
  return best, best_ord
end
local best_p, best_ps = head('p')
local best_n = head('n')
if best_p == nil and best_n == nil then return cjson.encode({called = cjson.null, completed = cjson.null}) end

local d = desk_key(desk)
local streak = tonumber(redis.call('HGET', d, 'streak') or '0')
local prev_streak = tostring(streak)
local pick
if best_p and best_ps < 0 then
  pick = best_p
else
  local normal_aged = false
  if best_n then normal_aged = (NOW - tonumber(load(id_of(best_n)).iss)) >= ageing end
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
    save(cur, 'completed', desk)
    entries[#entries + 1] = undo_entry(before, cur)
    done = cur
  end
end

local t = load(id_of(pick))
local before = snapshot(t)
detach(t)
t.s = 'called'
t.desk = desk
if t.cal == '' then t.cal = ARGV[2] end
t.srv = ARGV[2]
save(t, 'called', desk)
redis.call('ZADD', called_key(t.c), NOW, t.id)
entries[#entries + 1] = undo_entry(before, t)
redis.call('HSET', d, 'cur', t.id, 'streak', tostring(streak))
remember(desk, entries, prev_cur, prev_streak)
return cjson.encode({called = t, completed = done})
