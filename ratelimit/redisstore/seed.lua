-- Seeds quota pools where they have no state. After ARGV[1] (the time,
-- unused) come five values per seed: used, purchased, period (µs until the
-- window ends), then two flags (1 or 0): it has a window key, a balance
-- key. KEYS holds those keys, seed by seed, in that order. Keys that exist
-- are kept (a concurrent seed or charge wrote them).
local k = 0
for i = 1, (#ARGV - 1) / 5 do
  local a = 2 + (i - 1) * 5
  local used, purchased, period = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  if ARGV[a + 3] == '1' then
    k = k + 1
    redis.call('SET', KEYS[k], int(used), 'NX', 'PX', int(idiv(period + 999, 1000) + QUOTA_GRACE_MS))
  end
  if ARGV[a + 4] == '1' then
    k = k + 1
    redis.call('SET', KEYS[k], int(purchased), 'NX', 'PX', BALANCE_TTL_MS)
  end
end
return k
