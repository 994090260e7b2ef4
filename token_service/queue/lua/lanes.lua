-- lanes (read only, run without the shared prelude): bring a reader's copies of some lanes up to date
-- and read the current token of some desks, in one atomic step.
-- KEYS[1] = the facility's lane counters (`wv`), KEYS[2 .. n+1] = n lanes, KEYS[n+2 ..] = desks.
-- ARGV[1] = n; then per lane: its counter field prefix (`<c>:<l>`) and the copy's h, t, e and length
-- (length -1: no copy).
-- Returns {desk currents, lanes}; per lane {h, t, e, keep, length, head, items}. keep -1: `items` is
-- the whole lane. Otherwise the copy drops all but its last `keep` refs from its head and appends
-- `items`. While a lane's `e` is unchanged it has only lost refs at its head (`h`) and gained refs at
-- its tail (`t`), so the refs it has now are the copy's last `keep` followed by the `length - keep`
-- last ones of the lane.
local n = tonumber(ARGV[1])
local lanes = {}
for i = 1, n do
  local a = 2 + (i - 1) * 5
  local p = ARGV[a]
  local got = redis.call('HMGET', KEYS[1], p .. ':h', p .. ':t', p .. ':e')
  local h, t, e = tonumber(got[1] or '0'), tonumber(got[2] or '0'), tonumber(got[3] or '0')
  local kh, kt, ke, klen = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]),
    tonumber(ARGV[a + 4])
  local key = KEYS[1 + i]
  local len = redis.call('LLEN', key)
  local head = ''
  if len > 0 then head = redis.call('LINDEX', key, 0) end
  local entry
  if klen >= 0 and e == ke and h >= kh and t >= kt then
    local keep = math.max(0, klen - (h - kh))
    local new = len - keep
    if new >= 0 and new <= t - kt then
      local items = {}
      if new > 0 then items = redis.call('LRANGE', key, -new, -1) end
      entry = {h, t, e, keep, len, head, items}
    end
  end
  lanes[i] = entry or {h, t, e, -1, len, head, redis.call('LRANGE', key, 0, -1)}
end
local desks = {}
for i = n + 2, #KEYS do
  desks[#desks + 1] = redis.call('HGET', KEYS[i], 'cur') or ''
end
return {desks, lanes}
