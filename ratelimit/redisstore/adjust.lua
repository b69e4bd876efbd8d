-- Adjustments outside a decision, applied in order. KEYS[i] is adjustment
-- i's bucket; after ARGV[1] (the time) come four values per adjustment:
-- algorithm (0 GCRA, 1 fixed window), limit, period, delta (already clamped
-- to ±MAXSPAN). A bucket adjusted down to empty is deleted.
for i = 1, #KEYS do
  local key, a = KEYS[i], 2 + (i - 1) * 4
  local alg, period, delta = tonumber(ARGV[a]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local st = load(alg, key)
  if alg == 0 then
    local span = idiv(MAXSPAN, period)
    delta = math.min(math.max(delta, -span), span)
    local tat = math.max(st.idle, now) + delta * period
    tat = math.min(math.max(tat, now), now + MAXSPAN)
    if tat <= now then
      redis.call('DEL', key)
    else
      save(0, key, {idle = tat})
    end
  else
    local s, e = window(period)
    local c = math.min(math.max(count_in(st, s, e) + delta, 0), MAXSPAN)
    if c == 0 then
      redis.call('DEL', key)
    else
      save(1, key, {idle = e, start = s, count = c})
    end
  end
end
return #KEYS
