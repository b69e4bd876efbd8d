-- Seeds quota pools where they have no state. After ARGV[1] (the time,
-- unused) come eight values per seed: used, purchased, period (µs until
-- the window ends), two flags (1 or 0): it has a window key, a balance
-- key; then how many Once keys go with the window counter and with the
-- balance, and the seed generation read before the ledger. KEYS holds
-- those keys, seed by seed, in that order: window, balance and the pool's
-- generation key (with a balance key), the window's Once keys, the
-- balance's Once keys. Keys that exist are kept (a concurrent seed or
-- charge wrote them); the Once keys of a counter or balance this script
-- creates are set (NX, ONCE_TTL_MS): the credits they name are counted in
-- it. When a balance it would create has another generation than its
-- seed's (a credit found the pool unseeded since), it sets nothing and
-- returns the 1-based indexes of those seeds; else an empty array.
local seeds, stale, k = {}, {}, 0
for i = 1, (#ARGV - 1) / 8 do
  local a = 2 + (i - 1) * 8
  local s = {a = a}
  if ARGV[a + 3] == '1' then
    k = k + 1
    s.win = KEYS[k]
  end
  if ARGV[a + 4] == '1' then
    s.bal, s.gen, k = KEYS[k + 1], KEYS[k + 2], k + 2
    if redis.call('EXISTS', s.bal) == 0 and tonumber(redis.call('GET', s.gen) or '0') ~= tonumber(ARGV[a + 7]) then
      stale[#stale + 1] = i
    end
  end
  s.once = k
  k = k + tonumber(ARGV[a + 5]) + tonumber(ARGV[a + 6])
  seeds[i] = s
end
if #stale > 0 then
  return stale
end

local function mark(from, n)
  for j = from + 1, from + n do
    redis.call('SET', KEYS[j], '1', 'NX', 'PX', ONCE_TTL_MS)
  end
end

for _, s in ipairs(seeds) do
  local a = s.a
  local used, purchased, period = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local nwin, nbal = tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])
  if s.win and redis.call('SET', s.win, int(used), 'NX', 'PX', int(idiv(period + 999, 1000) + QUOTA_GRACE_MS)) then
    mark(s.once, nwin)
  end
  if s.bal and redis.call('SET', s.bal, int(purchased), 'NX', 'PX', BALANCE_TTL_MS) then
    mark(s.once + nwin, nbal)
  end
end
return {}
