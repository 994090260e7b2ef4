-- Shared prelude, prepended to every operation script by scripts.py.
-- Conventions for every script:
--   KEYS[1] = events stream   opd:{hip}:ev
--   KEYS[2] = expiry zset     opd:{hip}:exp
--   ARGV[1] = facility prefix opd:{hip}:   (per-token and per-counter keys are derived from it; the
--             hash tag keeps them in the slot of KEYS[1], which is what Redis Cluster needs)
--   ARGV[2] = now, ms since the epoch (the service's injectable clock, never Redis TIME, so tests can
--             move time)
-- Hash fields of a token (strings): id pub hip c oc d n lbl s p src abha req ord iss cal srv fin xp
-- eod desk sk rc v. Scripts return JSON strings.
local P = ARGV[1]
local NOW = tonumber(ARGV[2])
local TOKEN_TTL = 259200

local function tkey(id) return P .. 't:' .. id end
local function lane(counter, l) return P .. 'q:' .. counter .. ':' .. l end
local function called_key(counter) return P .. 'called:' .. counter end
local function desk_key(desk) return P .. 'desk:' .. desk end

local function load(id)
  local flat = redis.call('HGETALL', tkey(id))
  if #flat == 0 then return nil end
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

local function lane_of(t)
  if t.p == 'normal' then return lane(t.c, 'n') end
  return lane(t.c, 'p')
end

-- Persist changed fields, bump the version and emit one event carrying the full snapshot.
local function save(t, changed, kind, desk)
  t.v = tostring(tonumber(t.v or '0') + 1)
  local args = {'v', t.v}
  for _, f in ipairs(changed) do
    args[#args + 1] = f
    args[#args + 1] = t[f] or ''
  end
  redis.call('HSET', tkey(t.id), unpack(args))
  local ev = cjson.encode({k = kind, at = ARGV[2], desk = desk or '', t = t})
  redis.call('XADD', KEYS[1], '*', 'e', ev)
  redis.call('PUBLISH', P .. 'live', ev)
end

local function snapshot(t)
  local copy = {}
  for k, v in pairs(t) do copy[k] = v end
  return copy
end

-- Take a token out of every structure that holds it because it is waiting or called.
local function detach(t)
  redis.call('ZREM', lane(t.c, 'p'), t.id)
  redis.call('ZREM', lane(t.c, 'n'), t.id)
  redis.call('ZREM', called_key(t.c), t.id)
  redis.call('ZREM', KEYS[2], t.id)
end

-- Expire waiting tokens whose deadline passed (never called within validity, or their day ended).
-- Bounded per call; a periodic sweep call drains any backlog.
local function sweep(limit)
  local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', NOW, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    redis.call('ZREM', KEYS[2], id)
    local t = load(id)
    if t and t.s == 'waiting' then
      detach(t)
      t.s = 'expired'
      t.fin = ARGV[2]
      save(t, {'s', 'fin'}, 'expired', '')
    end
  end
  return #due
end

-- Record what a desk action changed so that `undo` can put it back.
local function remember(desk, entries, prev_cur, prev_streak)
  local d = desk_key(desk)
  redis.call('HSET', d, 'undo', cjson.encode({e = entries, cur = prev_cur or '', streak = prev_streak or '0'}))
end

local function undo_entry(before, after)
  local l = ''
  local score = ''
  if before.s == 'waiting' then
    l = lane_of(before)
    score = before.ord
  end
  return {prev = before, v = after.v, lane = l, score = score}
end

local function place_after(lane_key, places)
  -- Score that puts a token `places` positions down the lane (after `places` tokens).
  if places < 1 then places = 1 end
  local items = redis.call('ZRANGE', lane_key, places - 1, places, 'WITHSCORES')
  if #items == 0 then
    local last = redis.call('ZRANGE', lane_key, -1, -1, 'WITHSCORES')
    if #last == 0 then return nil end
    return tonumber(last[2]) + 1
  end
  if #items == 2 then return tonumber(items[2]) + 1 end
  return (tonumber(items[2]) + tonumber(items[4])) / 2
end
