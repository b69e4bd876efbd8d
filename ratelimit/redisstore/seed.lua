-- Seeds quota pools where they have no state. After ARGV[1] (the time,
-- unused) come seven values per seed: used, purchased, period (µs until
-- the window ends), two flags (1 or 0): it has a window key, a balance
-- key; then how many Once keys go with the window counter and with the
-- balance. KEYS holds those keys, seed by seed, in that order: window,
-- balance, the window's Once keys, the balance's Once keys. Keys that
-- exist are kept (a concurrent seed or charge wrote them); the Once keys
-- of a counter or balance this script creates are set (NX, ONCE_TTL_MS):
-- the credits they name are counted in it.
local k = 0
local function mark(n)
  for _ = 1, n do
    k = k + 1
    redis.call('SET', KEYS[k], '1', 'NX', 'PX', ONCE_TTL_MS)
  end
end

for i = 1, (#ARGV - 1) / 7 do
  local a = 2 + (i - 1) * 7
  local used, purchased, period = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local nwin, nbal = tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])
  local win_created, bal_created = false, false
  if ARGV[a + 3] == '1' then
    k = k + 1
    win_created = redis.call('SET', KEYS[k], int(used), 'NX', 'PX', int(idiv(period + 999, 1000) + QUOTA_GRACE_MS))
  end
  if ARGV[a + 4] == '1' then
    k = k + 1
    bal_created = redis.call('SET', KEYS[k], int(purchased), 'NX', 'PX', BALANCE_TTL_MS)
  end
  if win_created then
    mark(nwin)
  else
    k = k + nwin
  end
  if bal_created then
    mark(nbal)
  else
    k = k + nbal
  end
end
return k
