-- One all-or-nothing decision. KEYS[i] is item i's bucket; after ARGV[1]
-- (the time) come five values per item: algorithm (0 GCRA, 1 fixed
-- window), limit, period, hits, shadow (1 or 0). Items are decided in order
-- against the state earlier items left; buckets are written only when every
-- non-shadow item is allowed. Returns {allowed, then per item: allowed,
-- remaining, retry_after, reset_after}, where remaining and reset_after
-- describe the bucket after the whole decision (untouched if refused).

local function decide(st, alg, limit, period, hits)
  if alg == 0 then
    local tat = math.max(st.idle, now)
    if hits > limit then
      return {idle = tat}, false, -1
    end
    local nxt = tat + hits * period
    local tau = limit * period
    if nxt - now > tau then
      return {idle = tat}, false, nxt - tau - now
    end
    return {idle = nxt}, true, 0
  end
  local s, e = window(period)
  local c = count_in(st, s, e)
  local nst = {idle = e, start = s, count = c}
  if hits > limit then
    return nst, false, -1
  end
  if c + hits > limit then
    return nst, false, e - now
  end
  nst.count = c + hits
  return nst, true, 0
end

local function view(st, alg, limit, period)
  if alg == 0 then
    local tat = math.max(st.idle, now)
    local free = limit * period - (tat - now)
    if free <= 0 then
      return 0, tat - now
    end
    return idiv(free, period), tat - now
  end
  local s, e = window(period)
  return math.max(limit - count_in(st, s, e), 0), e - now
end

local orig, cur, alg_of, charged = {}, {}, {}, {}
local ok, retry = {}, {}
local allowed = true
for i = 1, #KEYS do
  local key, a = KEYS[i], 2 + (i - 1) * 5
  local alg, limit, period, hits = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  if orig[key] == nil then
    orig[key] = load(alg, key)
    cur[key] = orig[key]
    alg_of[key] = alg
  end
  local st
  st, ok[i], retry[i] = decide(cur[key], alg, limit, period, hits)
  cur[key] = st
  if ok[i] and hits > 0 then
    charged[key] = true
  end
  if not ok[i] and ARGV[a + 4] ~= '1' then
    allowed = false
  end
end

local out = {allowed and 1 or 0}
for i = 1, #KEYS do
  local key, a = KEYS[i], 2 + (i - 1) * 5
  local final = orig[key]
  if allowed then
    final = cur[key]
  end
  local remaining, reset = view(final, tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]))
  out[#out + 1] = ok[i] and 1 or 0
  out[#out + 1] = remaining
  out[#out + 1] = retry[i]
  out[#out + 1] = reset
end
if allowed then
  for key in pairs(charged) do
    save(alg_of[key], key, cur[key])
  end
end
return out
