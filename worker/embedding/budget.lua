-- The fleet's embedding budget (worker/embedding/budget.py): two GCRA token buckets,
-- tokens ('t') and requests ('r'), on Redis's clock, in one hash.
--   KEYS[1]: the budget hash; KEYS[2]: workers seen taking (zset, scored by time).
--   ARGV[1]: 'take' | 'observe' | 'penalize'
--   ARGV[2..6]: configured tokens/min, requests/min, period ms, headroom, burst fraction
-- A bucket's state is its theoretical arrival time (tat, ms): the level is
-- rate * (tau - (tat - now)), capped at capacity; tau = burst * period / headroom.
-- Hash fields: tt/rt tats, tl/rl limits learned from headers (tla: when; they count for
-- one period, then the configured limits again), pause (ms), st/sr counters.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local op = ARGV[1]
local conf = {t = tonumber(ARGV[2]), r = tonumber(ARGV[3])}
local period, headroom, burst = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local h = redis.call('HMGET', KEYS[1], 'tt', 'rt', 'tl', 'rl', 'pause', 'st', 'sr', 'tla')
local tat = {t = tonumber(h[1]) or 0, r = tonumber(h[2]) or 0}
local learned = {t = tonumber(h[3]) or 0, r = tonumber(h[4]) or 0}
local pause = tonumber(h[5]) or 0
local seq = {t = tonumber(h[6]) or 0, r = tonumber(h[7]) or 0}
local learned_at = tonumber(h[8]) or 0
if now - learned_at > period then learned = {t = 0, r = 0} end
local tau = burst * period / headroom

local function rate(b)  -- units per ms
  local limit = conf[b]
  if learned[b] > 0 and learned[b] < limit then limit = learned[b] end
  return limit * headroom / period
end

local function save()
  redis.call('HSET', KEYS[1], 'tt', tostring(tat.t), 'rt', tostring(tat.r),
    'tl', tostring(learned.t), 'rl', tostring(learned.r), 'pause', tostring(pause),
    'st', tostring(seq.t), 'sr', tostring(seq.r), 'tla', tostring(learned_at))
  redis.call('PEXPIRE', KEYS[1], math.ceil(period * 10))
end

if op == 'take' then
  -- ARGV[7..10]: tokens, live reserve fraction, live 1/0, worker id
  local cost = {t = tonumber(ARGV[7]), r = 1}
  local live = ARGV[9] == '1'
  local slack = tau
  if not live then slack = tau * (1 - tonumber(ARGV[8])) end
  local start = math.max(now, pause)
  local at = start
  for _, b in ipairs({'t', 'r'}) do
    -- An oversized request needs a full bucket (then leaves debt): never deadlocks.
    local need = math.min(cost[b] / rate(b), slack)
    at = math.max(at, tat[b] + need - slack)
  end
  redis.call('ZADD', KEYS[2], now, ARGV[10])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - period)
  redis.call('PEXPIRE', KEYS[2], math.ceil(period * 2))
  local workers = redis.call('ZCARD', KEYS[2])
  if not live and at > now then
    -- bulk does not queue: it comes back when the bucket (less the reserve) has room
    return {0, tostring(at - now), 0, 0, workers}
  end
  for _, b in ipairs({'t', 'r'}) do
    tat[b] = math.max(tat[b], at) + cost[b] / rate(b)
  end
  seq.t = seq.t + cost.t
  seq.r = seq.r + 1
  save()
  return {1, tostring(at - now), seq.t, seq.r, workers}
elseif op == 'observe' then
  -- ARGV[7..12]: limit tokens, limit requests, remaining tokens, remaining requests
  -- (each '' when absent), the counters after the request's grant.
  local limit = {t = tonumber(ARGV[7]), r = tonumber(ARGV[8])}
  local remaining = {t = tonumber(ARGV[9]), r = tonumber(ARGV[10])}
  local since = {t = seq.t - tonumber(ARGV[11]), r = seq.r - tonumber(ARGV[12])}
  for _, b in ipairs({'t', 'r'}) do
    if limit[b] and limit[b] > 0 then
      learned[b] = math.min(conf[b], limit[b])
      learned_at = now
    end
    if remaining[b] then
      -- level <= remaining - what the fleet was granted after this request
      local ceiling = remaining[b] - since[b]
      tat[b] = math.max(tat[b], now + tau - ceiling / rate(b))
    end
  end
  save()
  return {1}
elseif op == 'penalize' then
  -- ARGV[7]: retry after (ms). Nobody sends until then; the buckets restart empty.
  pause = math.max(pause, now + tonumber(ARGV[7]))
  for _, b in ipairs({'t', 'r'}) do
    tat[b] = math.max(tat[b], pause + tau)
  end
  save()
  return {1}
end
return redis.error_reply('unknown budget op ' .. tostring(op))
