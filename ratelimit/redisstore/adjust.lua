-- Adjustments outside a decision, applied in order. After ARGV[1] (the
-- time) come nine values per adjustment: algorithm (0 GCRA, 1 fixed
-- window, 2 quota), limit, period, delta (already clamped to ±MAXSPAN),
-- to_purchased (for a fixed window: the start of the window the
-- adjustment is for, skipped once that window is over; 0 = the current
-- one), three flags (1 or 0): it has a window key, a balance
-- key, a Once key; then the Once key's lifetime in ms (0: ONCE_TTL_MS). KEYS holds those keys, adjustment by adjustment, in
-- that order, and after them, for a quota with both a balance and a Once
-- key, the pool's seed generation key. A bucket adjusted down to empty is
-- deleted. An adjustment whose Once key is already set is skipped. A
-- quota adjustment with a Once key whose balance key does not exist is
-- not applied, does not set its Once key, and INCRs the generation (with
-- the balance's TTL): a seed that read the ledger before it creates no
-- balance (seed.lua).
local k = 0
local function nextkey(flag)
  if flag ~= '1' then
    return nil
  end
  k = k + 1
  return KEYS[k]
end

local function adjust_bucket(alg, key, period, delta, for_window)
  if alg == 1 and for_window > 0 and window(period) ~= for_window then
    return
  end
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

-- adjust_quota leaves a pool without a balance key alone (the ledger has
-- it and rebuilds it). A window counter that does not exist is created by
-- a credit with a Once key (a window-only purchase), with a charge's TTL
-- (period, in µs, plus the grace), and by nothing else.
local function adjust_quota(win, bal, period, delta, to_purchased, credit)
  if bal then
    if redis.call('EXISTS', bal) == 0 then
      return
    end
    if not win then
      redis.call('INCRBY', bal, int(-delta))
      redis.call('PEXPIRE', bal, BALANCE_TTL_MS)
      return
    end
    if delta < 0 then
      local back = math.min(-delta, math.max(to_purchased, 0))
      if back > 0 then
        redis.call('INCRBY', bal, int(back))
      end
      delta = delta + back
    end
    redis.call('PEXPIRE', bal, BALANCE_TTL_MS)
  end
  if delta == 0 then
    return
  end
  if redis.call('EXISTS', win) == 1 then
    redis.call('INCRBY', win, int(delta)) -- keeps the key's TTL
  elseif credit and delta < 0 then
    redis.call('SET', win, int(delta), 'PX', int(idiv(period + 999, 1000) + QUOTA_GRACE_MS))
  end
end

local applied = 0
for i = 1, (#ARGV - 1) / 9 do
  local a = 2 + (i - 1) * 9
  local alg, period, delta, to_p = tonumber(ARGV[a]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local win, bal, once = nextkey(ARGV[a + 5]), nextkey(ARGV[a + 6]), nextkey(ARGV[a + 7])
  local gen = nil
  if alg == 2 and bal and once then
    gen = nextkey('1')
  end
  local once_ms = tonumber(ARGV[a + 8])
  if once_ms <= 0 then
    once_ms = ONCE_TTL_MS
  end
  if gen and redis.call('EXISTS', once) == 0 and redis.call('EXISTS', bal) == 0 then
    redis.call('INCR', gen)
    redis.call('PEXPIRE', gen, BALANCE_TTL_MS)
  elseif not once or redis.call('SET', once, '1', 'NX', 'PX', once_ms) then
    applied = applied + 1
    if alg == 2 then
      adjust_quota(win, bal, period, delta, to_p, once ~= nil)
    else
      adjust_bucket(alg, win, period, delta, to_p)
    end
  end
end
return applied
