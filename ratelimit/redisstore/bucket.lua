-- Shared prelude of decide.lua and adjust.lua (each is appended to it).
-- It mirrors package gcra and store.Memory bit for bit: every value is an
-- integer below 2^53, exact in Lua's doubles, and every division goes
-- through idiv. A GCRA key holds its TAT in µs; a fixed-window key holds
-- "start:end:count" (µs, µs, hits).
local MAXSPAN = 1125899906842624 -- gcra.MaxSpan: 2^50 µs

-- idiv is floor(a / b) for integers, exact even where a / b rounds.
local function idiv(a, b)
  local q = math.floor(a / b)
  local r = a - q * b
  if r < 0 then
    q = q - 1
  elseif r >= b then
    q = q + 1
  end
  return q
end

-- int formats an integer without an exponent (tostring would use %.14g).
local function int(x)
  return string.format('%.0f', x)
end

-- ARGV[1] is the time in µs since the epoch; empty means Redis TIME, so
-- every service instance decides on one clock.
local now = tonumber(ARGV[1])
if not now then
  if redis.replicate_commands then
    redis.replicate_commands()
  end
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function fresh()
  return {idle = 0, start = 0, count = 0}
end

-- load reads a bucket as {idle, start, count}: idle is the GCRA TAT or the
-- window's end, after which the bucket equals a fresh one.
-- prefetched, when a script sets it, holds keys' values read ahead in one
-- MGET (false for a missing key); load reads a key not in it.
local prefetched = {}

local function load(alg, key)
  local v = prefetched[key]
  if v == nil then
    v = redis.call('GET', key)
  end
  if not v then
    return fresh()
  end
  if alg == 0 then
    return {idle = tonumber(v) or 0, start = 0, count = 0}
  end
  local s, e, c = string.match(v, '^(%d+):(%d+):(%d+)$')
  if not s then
    return fresh()
  end
  return {idle = tonumber(e), start = tonumber(s), count = tonumber(c)}
end

-- window is the fixed window of length period holding now.
local function window(period)
  local start = idiv(now, period) * period
  return start, start + period
end

local function count_in(st, s, e)
  if st.start == s and st.idle == e then
    return st.count
  end
  return 0
end

-- save writes a bucket that is not idle. Its TTL runs to the moment it
-- becomes idle, rounded up to the millisecond, plus 1 ms for a GCRA key and
-- 1 s for a window key.
local function save(alg, key, st)
  local ttl = idiv(st.idle - now + 999, 1000)
  if alg == 0 then
    redis.call('SET', key, int(st.idle), 'PX', int(ttl + 1))
  else
    redis.call('SET', key, int(st.start) .. ':' .. int(st.idle) .. ':' .. int(st.count), 'PX', int(ttl + 1000))
  end
end
