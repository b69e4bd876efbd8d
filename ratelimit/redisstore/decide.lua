-- One all-or-nothing decision. KEYS[i] is item i's bucket for i = 1..n;
-- after ARGV[1] (the time) and ARGV[2] (the deadline) come five values
-- per item: algorithm (0 GCRA, 1
-- fixed window, 2 quota with a purchased balance, 3 quota without), limit,
-- period, hits, shadow (1 or 0). After the n items' keys come the balance
-- keys of the algorithm-2 items, in order. Items are decided in order
-- against the state earlier items left; keys are written only when every
-- non-shadow item is allowed. Returns {allowed, then per item: allowed,
-- remaining, retry_after, reset_after, then per quota item: from_purchased},
-- and last the script's time (µs), where remaining and reset_after describe the bucket after the whole
-- decision (untouched if refused); or {-1, indexes...} (0-based) naming the
-- quota items whose balance key is missing, having changed nothing.
--
-- The deadline (µs, on the script's clock; empty = none) is a fail-closed
-- decision's (store.WithFailClosed): a run that starts at or after it
-- returns {-3}, having read and changed nothing, so a decision whose caller
-- has given up charges nothing even though it reached Redis.

--
-- Reserving (store.Reserver's DecideReserve) adds four ARGV after the
-- items' (so (#ARGV - 2) % 5 == 4): the id, the record, its TTL (µs) and
-- the grace (ms); and two KEYS after the balance keys: the record's key and
-- the index, as reserve.lua's open takes them. The reply is then {-2} when
-- the record's key exists, having decided and changed nothing; and when the
-- decision admits, the record (the given bytes, "\n", each item's
-- from_purchased, comma-separated) is stored and its id indexed, as open
-- does. A decision without those arguments does none of this.

local deadline = tonumber(ARGV[2])
if deadline and now >= deadline then
  return {-3}
end
local reserving = (#ARGV - 2) % 5 == 4
local n = idiv(#ARGV - 2, 5)
local nkeys = #KEYS
if reserving then
  nkeys = nkeys - 2
end
-- Every key the decision reads (and a reservation's record) in one MGET.
local nread = nkeys
if reserving then
  nread = nkeys + 1
end
if nread > 0 then
  local vals = redis.call('MGET', unpack(KEYS, 1, nread))
  for i = 1, nread do
    prefetched[KEYS[i]] = vals[i]
  end
end
if reserving and prefetched[KEYS[nkeys + 1]] then
  return {-2}
end
if nkeys > n then
  local missing, j = {-1}, n
  for i = 1, n do
    if ARGV[3 + (i - 1) * 5] == '2' then
      j = j + 1
      if not prefetched[KEYS[j]] then
        missing[#missing + 1] = i - 1
      end
    end
  end
  if #missing > 1 then
    return missing
  end
end

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

-- Quota state: window counters and balances as the decision leaves them.
local qorig, qcur, qperiod, bkey_of, borig, bcur, from_p = {}, {}, {}, {}, {}, {}, {}
local nbal = 0

local function qget(key)
  local v = prefetched[key]
  if v == nil then
    v = redis.call('GET', key)
  end
  return tonumber(v or '0') or 0
end

local function decide_quota(i, key, alg, limit, period, hits)
  local bkey
  if alg == 2 then
    nbal = nbal + 1
    bkey = KEYS[n + nbal]
    if borig[bkey] == nil then
      borig[bkey] = qget(bkey)
      bcur[bkey] = borig[bkey]
    end
  end
  bkey_of[i] = bkey
  if qorig[key] == nil then
    qorig[key] = qget(key)
    qcur[key] = qorig[key]
  end
  local used, bal = qcur[key], 0
  if bkey then
    bal = bcur[bkey]
  end
  from_p[i] = 0
  if used + hits > limit + bal then
    if hits > limit + bal then
      return false, -1
    end
    return false, period
  end
  local fw = math.min(hits, math.max(limit - used, 0))
  from_p[i] = hits - fw
  qcur[key] = used + fw
  if bkey then
    bcur[bkey] = bal - from_p[i]
  end
  if hits > 0 then
    qperiod[key] = period
  end
  return true, 0
end

local orig, cur, alg_of, charged = {}, {}, {}, {}
local ok, retry = {}, {}
local allowed = true
local quotas = false
for i = 1, n do
  local key, a = KEYS[i], 3 + (i - 1) * 5
  local alg, limit, period, hits = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  if alg >= 2 then
    quotas = true
    ok[i], retry[i] = decide_quota(i, key, alg, limit, period, hits)
  else
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
  end
  if not ok[i] and ARGV[a + 4] ~= '1' then
    allowed = false
  end
end

local out = {allowed and 1 or 0}
for i = 1, n do
  local key, a = KEYS[i], 3 + (i - 1) * 5
  local alg, limit, period = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local remaining, reset
  if alg >= 2 then
    local used, bal = qorig[key], 0
    local bkey = bkey_of[i]
    if allowed then
      used = qcur[key]
    end
    if bkey then
      bal = borig[bkey]
      if allowed then
        bal = bcur[bkey]
      end
    end
    remaining, reset = limit - used + bal, period
  else
    local final = orig[key]
    if allowed then
      final = cur[key]
    end
    remaining, reset = view(final, alg, limit, period)
  end
  out[#out + 1] = ok[i] and 1 or 0
  out[#out + 1] = remaining
  out[#out + 1] = retry[i]
  out[#out + 1] = reset
end
if quotas then
  for i = 1, n do
    if tonumber(ARGV[3 + (i - 1) * 5]) >= 2 then
      out[#out + 1] = allowed and from_p[i] or 0
    end
  end
end
if allowed then
  for key in pairs(charged) do
    save(alg_of[key], key, cur[key])
  end
  for key, period in pairs(qperiod) do
    redis.call('SET', key, int(qcur[key]), 'PX', int(idiv(period + 999, 1000) + QUOTA_GRACE_MS))
  end
  -- A balance is written when it changed, and its lifetime renewed when
  -- a window counter of the decision starts (at most once a window): it
  -- outlives every counter of its pool.
  local started = false
  for key in pairs(qperiod) do
    started = started or not prefetched[key]
  end
  for key, v in pairs(bcur) do
    if v ~= borig[key] or started then
      redis.call('SET', key, int(v), 'PX', BALANCE_TTL_MS)
    end
  end
  if reserving then
    local a, fp = 3 + n * 5, {}
    for i = 1, n do
      fp[i] = '0'
      if tonumber(ARGV[3 + (i - 1) * 5]) >= 2 then
        fp[i] = int(from_p[i])
      end
    end
    local ttl = tonumber(ARGV[a + 2])
    local px = idiv(ttl + 999, 1000) + tonumber(ARGV[a + 3])
    local rk, ix = KEYS[nkeys + 1], KEYS[nkeys + 2]
    redis.call('SET', rk, ARGV[a + 1] .. '\n' .. table.concat(fp, ','), 'PX', int(px))
    redis.call('ZADD', ix, int(now + ttl), ARGV[a])
    if redis.call('PTTL', ix) < px then
      redis.call('PEXPIRE', ix, int(px))
    end
  end
end
out[#out + 1] = now
return out
