#!/usr/bin/env bash
# make bench: the DESIGN §8 performance figures, measured on this machine.
#
#  1. builds bin/leaky;
#  2. runs the Go benchmarks of the algorithm, the stores and the metering (./ratelimit/...);
#  3. measures the floor: a do-nothing RateLimitService and ext_authz server (`leaky loadgen
#     -serve-floor`) under the same harness, so the services' figures can be read against what the
#     machine costs;
#  4. starts `leaky ratelimit -store memory` on free ports and load-tests it over one gRPC
#     connection: a closed loop (concurrency 64, 10k users, 10 s) and an open loop (8000/s, 10 s),
#     reading the server's CPU from /proc;
#  5. the same against `-store redis` on a private redis-server (free port, temporary directory,
#     no persistence);
#  6. starts `leaky authz` (memory store, no bootstrap admin) on free ports; for each credential,
#     `leaky loadgen -authz-http` registers a throwaway user over the REST API and sends ext_authz
#     Check with its JWT, then with its API key (cached after the first Check): the closed and the
#     open loop as above. The credentials stay inside the load generator, never printed;
#  7. measures Check beside password hashing: an open loop of JWT Checks at BENCH_LOGIN_RATE
#     (1000/s) alone, then beside BENCH_LOGINS (16) clients sending wrong-password logins with
#     256-byte passwords back to back (`leaky loadgen -login-load`), then the same against an
#     authz whose hashing pool is every core twice over (-password-hashers 2×cores, the pool before
#     issue 7), so the bounded pool's effect reads off one table;
#  8. the gateway path (DESIGN §8: reported, no target): `leaky dev` (every service in one process,
#     the gateway stand-in, the provider stubs at zero latency, memory stores) on free ports with
#     scripts/bench-policy.yaml, whose buckets never refuse; `leaky loadgen -target http` sends a
#     chat completion straight to the OpenAI stub, then the same through the gateway with a
#     throwaway user's API key (ext_authz and ratelimit, two gRPC calls, on the way), closed loop;
#     Then the same completion streamed (stream:true) both ways: the gateway's metering (ext_proc)
#     forces the usage chunk upstream, strips it, and settles at it; its counters are read around
#     each gateway run, and a settle at anything but the usage voids the figures. The streamed call's
#     gateway part minus the plain call's is what streaming costs the gateway (the metering's
#     per-chunk messages, the stand-in's per-chunk forwarding), per response and per SSE event;
#  9. (run right after step 5) the token API's consume: `leaky ratelimit -store memory` (memory ledger, -trusted-proxies
#     127.0.0.1/32) calling `leaky providers-stub` at zero latency; a closed loop of POST
#     /api/v1/tokens/consume as one user (x-leaky-* headers), beside the same run's direct call to the
#     stub's seed API (the call the consume makes); the stub's CPU is read apart;
# 10. prints the figures beside the targets, each marked met or not met (issue 10's as ratios to
#     this run's floor: the Redis store's decisions/s ≥ 0.8×, its CPU with redis-server's ≤ 1.8×,
#     the memory store's decisions/s ≥ 1.0×); the metering's Go benchmark
#     (BenchmarkMeterStreamedResponse, run with the others, alone with BENCH_GO=0) per streamed
#     response and per chunk.
#
# A missed target is reported, not fatal; the script fails only when something breaks (a build,
# a benchmark, a server that does not start, a load generator that cannot run). Everything it
# starts is stopped on exit, by PID. Knobs: BENCH_DURATION (default 10s), BENCH_CONCURRENCY (64),
# BENCH_RATE (8000), BENCH_KEYS (10000), BENCH_LOGIN_RATE (1000), BENCH_LOGINS (16), BENCH_GO=0
# skips the Go benchmarks but the metering's, BENCH_GATEWAY_POLICY (scripts/bench-policy.yaml) the gateway step's policy.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${BENCH_DURATION:-10s}
concurrency=${BENCH_CONCURRENCY:-64}
rate=${BENCH_RATE:-8000}
keys=${BENCH_KEYS:-10000}
login_rate=${BENCH_LOGIN_RATE:-1000}
logins=${BENCH_LOGINS:-16}

bash scripts/deps.sh

work=$(mktemp -d /tmp/leaky-bench-XXXXXX)
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

say() { printf '\n== %s\n' "$*" >&2; }

readyz() { # port [path]: true when GET path (/readyz) answers 200 (plain bash, no curl needed)
	local status
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "${2:-/readyz}" >&3
	IFS= read -r status <&3 || true
	exec 3<&-
	[[ $status == *" 200 "* ]]
}

proc_cpu_ticks() { # pid: utime+stime in clock ticks (1/100 s) from /proc/pid/stat
	awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

busy_ticks() { # the machine's busy time (user, nice, system, irq, softirq, steal) in clock ticks
	awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# jget json key: a numeric top-level field of a loadgen -json line.
jget() { sed -n "s/.*\"$2\":\([-0-9.eE+]*\).*/\1/p" <<<"$1"; }

say "build"
go build -o bin/leaky ./cmd/leaky

# The private Redis serves the store benchmarks and the redis runs.
redis_port=$(free_port)
mkdir -p "$work/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
	--dir "$work/redis" --logfile "$work/redis/redis.log" --daemonize no &
redis_pid=$!
pids+=("$redis_pid")
wait_port "$redis_port"
redis_url="redis://127.0.0.1:$redis_port/0"

# The Go benchmarks' output is kept: the summary reads the metering benchmark from it. BENCH_GO=0
# runs that one benchmark only.
gobench=$work/gobench.txt
if [ "${BENCH_GO:-1}" != 0 ]; then
	say "Go benchmarks: algorithm, stores and metering (go test -bench . -benchtime 2s ./ratelimit/...)"
	LEAKY_TEST_REDIS_URL=$redis_url go test -run '^$' -bench . -benchtime 2s -benchmem ./ratelimit/... >"$gobench" ||
		{ cat "$gobench" >&2; echo "bench: Go benchmarks failed" >&2; exit 1; }
else
	say "Go benchmark: metering (go test -bench MeterStreamedResponse -benchtime 2s ./ratelimit)"
	go test -run '^$' -bench '^BenchmarkMeterStreamedResponse$' -benchtime 2s -benchmem ./ratelimit >"$gobench" ||
		{ cat "$gobench" >&2; echo "bench: the metering benchmark failed" >&2; exit 1; }
fi
grep -Ev '^(PASS|\?|testing: warning)' "$gobench"

declare -A R # R[setup.mode.field] = figure

# benchfig name unit: the figure before unit (ns/op, chunks/op) on Go benchmark name's line.
benchfig() {
	awk -v name="$1" -v unit="$2" '$1 ~ "^" name "(-[0-9]+)?$" { for (i = 3; i <= NF; i++) if ($i == unit) print $(i - 1) }' "$gobench"
}
R[meter.ns]=$(benchfig BenchmarkMeterStreamedResponse ns/op)
R[meter.chunks]=$(benchfig BenchmarkMeterStreamedResponse chunks/op | awk '{ printf("%d", $1) }')
R[meter.messages]=$(benchfig BenchmarkMeterStreamedResponse messages/op | awk '{ printf("%d", $1) }')
if [ -z "${R[meter.ns]}" ] || [ -z "${R[meter.chunks]}" ]; then
	echo "bench: no BenchmarkMeterStreamedResponse figures (ns/op, chunks/op) in the Go benchmarks' output" >&2
	exit 1
fi

# stop pid: stop a server this script started and forget it.
stop() {
	local keep=() p
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	for p in "${pids[@]}"; do
		[ "$p" = "$1" ] || keep+=("$p")
	done
	pids=("${keep[@]}")
}

# What each setup loads: ShouldRateLimit with 1 descriptor over $keys users, or Check (-token and
# -api-key cleared so that a LEAKY_TOKEN or LEAKY_API_KEY in the environment cannot interfere).
rl_args=(-target ratelimit -keys "$keys" -descriptors 1)
check_args=(-target authz -token '' -api-key '')

# loops setup pid grpc_port modes... -- loadgen args...: for each mode, an unmeasured second
# (connection, buckets, caches) then the measured run with the server's CPU; keeps the JSON
# figures in R[setup.mode.field]. The warm-up is a run of its own so that the Redis CPU read covers
# the measured run only. With side_pid set (the consume step's provider stub), that process's CPU
# over the measured run is read too, per request, as R[setup.mode.side_cpu_us]. A higher GOGC keeps the load generator's own CPU, which shares the cores
# with the servers, low. Its log goes at warn and above: each authz run logs the throwaway user.
loops() {
	local setup=$1 pid=$2 port=$3 mode out json f before_redis=0 before_side=0 before_busy modes=()
	shift 3
	while [ "$1" != -- ]; do
		modes+=("$1")
		shift
	done
	shift
	for mode in "${modes[@]}"; do
		local args=(-addr "127.0.0.1:$port" -mode "$mode" -concurrency "$concurrency" -rate "$rate" -warmup 0 "$@")
		LEAKY_LOG_LEVEL=warn GOGC=400 bin/leaky loadgen "${args[@]}" -duration 1s >/dev/null ||
			{ echo "bench: loadgen failed against $setup" >&2; exit 1; }
		[ "$setup" = redis ] && before_redis=$(proc_cpu_ticks "$redis_pid")
		[ -n "${side_pid:-}" ] && before_side=$(proc_cpu_ticks "$side_pid")
		before_busy=$(busy_ticks)
		out=$(LEAKY_LOG_LEVEL=warn GOGC=400 bin/leaky loadgen "${args[@]}" -duration "$duration" -server-pid "$pid" -json) ||
			{ echo "bench: loadgen failed against $setup" >&2; exit 1; }
		local busy=$(($(busy_ticks) - before_busy))
		grep -v '^{' <<<"$out"
		json=$(grep '^{' <<<"$out")
		for f in rate p50_ms p99_ms p999_ms max_ms server_cpu_us client_cpu_us ok_pct errors count dropped late \
			lag_p99_ms duration_s login_rate login_503; do
			R[$setup.$mode.$f]=$(jget "$json" "$f")
		done
		# The answers by kind, as the JSON's inner text: "OK":n,… or, for -target http, "200":n,…
		R[$setup.$mode.answers]=$(sed -n 's/.*"answers":{\([^}]*\)}.*/\1/p' <<<"$json")
		local n=${R[$setup.$mode.count]:-0} extra_ticks=0
		if [ -n "${side_pid:-}" ]; then
			extra_ticks=$(($(proc_cpu_ticks "$side_pid") - before_side)) # the extra process: not "other" below
			R[$setup.$mode.side_cpu_us]=$(awk -v t="$extra_ticks" -v n="$n" 'BEGIN { printf("%.1f", (n > 0 ? t * 10000 / n : 0)) }')
			echo "  side      PID $side_pid ${R[$setup.$mode.side_cpu_us]} µs/request (besides the server's)"
		fi
		if [ "$setup" = redis ]; then
			extra_ticks=$(($(proc_cpu_ticks "$redis_pid") - before_redis))
			R[$setup.$mode.redis_cpu_us]=$(awk -v t="$extra_ticks" -v n="$n" 'BEGIN { printf("%.1f", (n > 0 ? t * 10000 / n : 0)) }')
			echo "  redis     redis-server ${R[$setup.$mode.redis_cpu_us]} µs/decision (besides the service's; no target)"
		fi
		# What the rest of the machine did meanwhile: busy time not spent by the server, the load
		# generator or the extra process (redis-server, the side process), as a share of all cores.
		R[$setup.$mode.other_pct]=$(awk -v busy="$busy" -v r="$extra_ticks" -v n="$n" -v cpus="$(nproc)" \
			-v s="${R[$setup.$mode.server_cpu_us]:-0}" -v c="${R[$setup.$mode.client_cpu_us]:-0}" \
			-v d="${R[$setup.$mode.duration_s]:-1}" \
			'BEGIN { o = busy * 10000 - r * 10000 - n * (s + c); if (o < 0) o = 0; printf("%.0f", 100 * o / (d * 1e6 * cpus)) }')
		echo "  machine   other processes used ${R[$setup.$mode.other_pct]}% of the $(nproc) cores during the run"
	done
}

# The floor: a do-nothing RateLimitService and ext_authz server (a map and a mutex each) under the
# same harness, to read the services' figures against what this machine, gRPC and the load
# generator cost by themselves. The Check floor gets the JWT run's request with a dummy token.
floor_port=$(free_port)
say "floor: do-nothing RateLimitService and ext_authz on 127.0.0.1:$floor_port"
bin/leaky loadgen -serve-floor "127.0.0.1:$floor_port" >"$work/floor.log" 2>&1 &
floor_pid=$!
pids+=("$floor_pid")
wait_port "$floor_port"
loops floor "$floor_pid" "$floor_port" closed -- "${rl_args[@]}" -label floor
loops checkfloor "$floor_pid" "$floor_port" closed -- "${check_args[@]}" -token floor-dummy-token -label floor
stop "$floor_pid"

# await_ready name pid http_port log [path]: wait up to 30 s for GET path (/readyz) to answer 200;
# fail with the log's tail if the server exits or never gets ready.
await_ready() {
	local name=$1 pid=$2 port=$3 log=$4 path=${5:-/readyz}
	for _ in $(seq 1 300); do
		readyz "$port" "$path" 2>/dev/null && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "bench: $name exited:" >&2
			tail -n 20 "$log" >&2
			exit 1
		fi
		sleep 0.1
	done
	readyz "$port" "$path" 2>/dev/null && return 0
	echo "bench: $name not ready after 30 s" >&2
	tail -n 20 "$log" >&2
	exit 1
}

# loadtest store args...: start `leaky ratelimit -store store args...`, wait for /readyz, run the
# closed and the open loop, stop the server.
loadtest() {
	local store=$1
	shift
	local grpc_port http_port pid
	grpc_port=$(free_port)
	http_port=$(free_port)
	say "ratelimit -store $store: 127.0.0.1:$grpc_port"
	bin/leaky ratelimit -grpc-addr "127.0.0.1:$grpc_port" -http-addr "127.0.0.1:$http_port" \
		-store "$store" "$@" >"$work/ratelimit-$store.log" 2>&1 &
	pid=$!
	pids+=("$pid")
	await_ready "leaky ratelimit -store $store" "$pid" "$http_port" "$work/ratelimit-$store.log"
	loops "$store" "$pid" "$grpc_port" closed open -- "${rl_args[@]}" -label "$store"
	stop "$pid"
}

loadtest memory
loadtest redis -redis-url "$redis_url"

# The token API's consume (POST /api/v1/tokens/consume on the ratelimit HTTP listener): `leaky
# ratelimit -store memory` with the memory ledger (no database URL, no Kafka brokers from the
# environment) calls `leaky providers-stub` (OpenAI only, zero latency) on free ports. The caller
# is one user named by the x-leaky-* identity headers, believed from 127.0.0.1 (-trusted-proxies):
# the gateway's path without the gateway, and no JWT to verify. The policy is the bench policy
# plus a quota no run can spend, so each consume reserves the user's bucket, the provider pool
# and the user's day quota in one decision, calls the stub's seed API, settles at its usage and
# writes the ledger. Beside it, in the same run, the very call the consume makes, straight to the
# stub: the consume's cost above it is the reservation, the settle and the ledger write (and the
# HTTP hop). The service's CPU excludes the stub's, which is read apart (side_pid).
consume_policy=$work/consume-policy.yaml
cp scripts/bench-policy.yaml "$consume_policy"
cat >>"$consume_policy" <<'EOF'

quotas:
  tiers:
    free: {"*": {allowance: 1000000000000000, window: day}}
EOF
stub_port=$(free_port)
say "consume: leaky providers-stub (OpenAI) on 127.0.0.1:$stub_port"
bin/leaky providers-stub -openai-addr "127.0.0.1:$stub_port" -gemini-addr '' -qwen-addr '' \
	>"$work/stub.log" 2>&1 &
stub_pid=$!
pids+=("$stub_pid")
await_ready "leaky providers-stub" "$stub_pid" "$stub_port" "$work/stub.log" /healthz
rl_grpc=$(free_port)
rl_http=$(free_port)
say "consume: leaky ratelimit -store memory, memory ledger, token API on 127.0.0.1:$rl_http"
env -u DATABASE_URL -u LEAKY_DATABASE_URL -u KAFKA_BROKERS -u LEAKY_KAFKA_BROKERS bin/leaky ratelimit \
	-grpc-addr "127.0.0.1:$rl_grpc" -http-addr "127.0.0.1:$rl_http" -store memory -config "$consume_policy" \
	-trusted-proxies 127.0.0.1/32 -provider-urls "openai=http://127.0.0.1:$stub_port" \
	-provider-concurrency "$concurrency" >"$work/ratelimit-consume.log" 2>&1 &
consume_pid=$!
pids+=("$consume_pid")
await_ready "leaky ratelimit (token API)" "$consume_pid" "$rl_http" "$work/ratelimit-consume.log"
# The stub gets the provider client's body for this consume, {"prompt": …}. The user id is a fresh
# UUID (the token API's user ids are authz's).
bench_user=$(cat /proc/sys/kernel/random/uuid)
loops stubchat "$stub_pid" "$stub_port" closed -- -target http \
	-url "http://127.0.0.1:$stub_port/api/v1/openai/chat" -body '{"prompt":"Say hello."}' \
	-label "openai stub seed API direct"
side_pid=$stub_pid
loops consume "$consume_pid" "$rl_http" closed -- -target http -url "http://127.0.0.1:$rl_http/api/v1/tokens/consume" \
	-header "x-leaky-user-id: $bench_user" -header "x-leaky-tier: free" -header "x-leaky-roles: USER" \
	-body '{"userId":"'"$bench_user"'","provider":"openai","prompt":"Say hello."}' -label "consume"
side_pid=
stop "$consume_pid"
stop "$stub_pid"

# The authz service on the memory store: no database URL from the environment (DATABASE_URL is
# its fallback), and no bootstrap admin, whose generated password would go to its stdout. Each
# loadgen run registers its own throwaway user over the REST API; the warm-up run warms the
# service (and, for the API key, its cache) but the measured run's key is new, so its first Check
# is the one cache miss.
authz_grpc=$(free_port)
authz_http=$(free_port)
say "authz (memory store): 127.0.0.1:$authz_grpc, REST 127.0.0.1:$authz_http"
env -u DATABASE_URL -u LEAKY_DATABASE_URL bin/leaky authz -grpc-addr "127.0.0.1:$authz_grpc" \
	-http-addr "127.0.0.1:$authz_http" -admin-username '' >"$work/authz.log" 2>&1 &
authz_pid=$!
pids+=("$authz_pid")
await_ready "leaky authz" "$authz_pid" "$authz_http" "$work/authz.log"
for cred in jwt apikey; do
	say "authz Check, credential $cred"
	loops "$cred" "$authz_pid" "$authz_grpc" closed open -- "${check_args[@]}" \
		-authz-http "http://127.0.0.1:$authz_http" -credential "$cred" -label "$cred"
done

# Check beside password hashing: JWT Checks at $login_rate/s alone, then beside $logins clients
# sending wrong-password logins (each an argon2id verification at the default cost).
login_check_args=("${check_args[@]}" -authz-http "http://127.0.0.1:$authz_http" -credential jwt -rate "$login_rate")
say "authz Check open $login_rate/s alone, then beside $logins wrong-password logins"
loops calone "$authz_pid" "$authz_grpc" open -- "${login_check_args[@]}" -label "jwt alone"
loops clogins "$authz_pid" "$authz_grpc" open -- "${login_check_args[@]}" -login-load "$logins" -label "jwt beside logins"
stop "$authz_pid"

# The same beside logins against a hashing pool of every core twice over (the pool before issue 7).
all_hashers=$((2 * $(nproc)))
authz_grpc=$(free_port)
authz_http=$(free_port)
say "authz -password-hashers $all_hashers: 127.0.0.1:$authz_grpc, REST 127.0.0.1:$authz_http"
env -u DATABASE_URL -u LEAKY_DATABASE_URL bin/leaky authz -grpc-addr "127.0.0.1:$authz_grpc" \
	-http-addr "127.0.0.1:$authz_http" -admin-username '' -password-hashers "$all_hashers" >"$work/authz-all.log" 2>&1 &
authz_pid=$!
pids+=("$authz_pid")
await_ready "leaky authz -password-hashers $all_hashers" "$authz_pid" "$authz_http" "$work/authz-all.log"
login_check_args=("${check_args[@]}" -authz-http "http://127.0.0.1:$authz_http" -credential jwt -rate "$login_rate")
loops cloginsall "$authz_pid" "$authz_grpc" open -- "${login_check_args[@]}" -login-load "$logins" \
	-label "jwt beside logins, $all_hashers hashers"
stop "$authz_pid"

# The gateway path: `leaky dev` runs the stubs, authz, ratelimit, the control plane and the gateway
# stand-in in one process, every listener on a free port, on a copy of the bench policy (the admin
# API would write tier changes to it; nothing here does). No database URL from the environment and
# no bootstrap admin, as for authz above. The gateway is ready once it has applied the control
# plane's first snapshot; ratelimit and authz once they have the policy from it.
gw_policy=$work/gateway-policy.yaml
cp "${BENCH_GATEWAY_POLICY:-scripts/bench-policy.yaml}" "$gw_policy"
mkdir -p "$work/dev"
declare -A gwp # gwp[listener] = port

# metrics port: the Prometheus text at 127.0.0.1:port/metrics (plain bash, as readyz).
metrics() {
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
	cat <&3
	exec 3<&-
}

# meter_snapshot file: the metering's counters in leaky dev, one "name/outcome value" a line: the
# ratelimit's settlements by outcome (usage, estimate, aborted, error, …) and the gateway's ext_proc
# streams by outcome (completed, immediate_response, error).
meter_snapshot() {
	{
		metrics "${gwp[rlhttp]}" | awk '$1 ~ /meter_settles_total\{/ && match($1, /outcome="[^"]*"/) {
			print "settle/" substr($1, RSTART + 9, RLENGTH - 10), $2 }'
		metrics "${gwp[gwadmin]}" | awk '$1 ~ /ext_proc_total\{/ && match($1, /outcome="[^"]*"/) {
			print "ext_proc/" substr($1, RSTART + 9, RLENGTH - 10), $2 }'
	} >"$1" || { echo "bench: cannot read leaky dev's metering metrics" >&2; exit 1; }
}

# meter_delta before after: what grew between two snapshots, "settle/usage 1234, ext_proc/completed 1234".
meter_delta() {
	awk 'FILENAME == ARGV[1] { b[$1] = $2; next } { d = $2 - b[$1]; if (d > 0) out = out (out ? ", " : "") $1 " " d } END { print out }' "$1" "$2"
}

# meter_bad before after: the requests the metering did not settle at the reported usage between
# two snapshots: settles of any other outcome, and ext_proc streams that ended in an error.
meter_bad() {
	awk 'FILENAME == ARGV[1] { b[$1] = $2; next } ($1 ~ /^settle\// && $1 != "settle/usage") || $1 == "ext_proc/error" { n += $2 - b[$1] }
		END { print n + 0 }' "$1" "$2"
}

# sse_events url body: the SSE events (data: lines) of one streamed answer from url.
sse_events() {
	curl -sSN --max-time 10 -H 'content-type: application/json' -d "$2" "$1" | grep -c '^data:' ||
		{ echo "bench: no streamed answer from $1" >&2; exit 1; }
}

# start_dev: pick a distinct free port for each of dev's listeners (gwp), start `leaky dev` on them
# (dev_pid) and wait up to 30 s for the gateway's admin /ready; false when dev exits first.
start_dev() {
	local l p
	gwp=()
	for l in xds cp openai gemini qwen gw gwadmin rlgrpc rlhttp azgrpc azhttp; do
		p=$(free_port)
		while [[ " ${gwp[*]} " == *" $p "* ]]; do
			p=$(free_port)
		done
		gwp[$l]=$p
	done
	env -u DATABASE_URL -u LEAKY_DATABASE_URL bin/leaky dev -gateway standin -config "$gw_policy" \
		-state-dir "$work/dev" -admin-username '' -ratelimit-store memory \
		-xds-addr "127.0.0.1:${gwp[xds]}" -controlplane-http-addr "127.0.0.1:${gwp[cp]}" \
		-openai-addr "127.0.0.1:${gwp[openai]}" -gemini-addr "127.0.0.1:${gwp[gemini]}" \
		-qwen-addr "127.0.0.1:${gwp[qwen]}" -gateway-addr "127.0.0.1:${gwp[gw]}" \
		-gateway-admin-addr "127.0.0.1:${gwp[gwadmin]}" \
		-ratelimit-grpc-addr "127.0.0.1:${gwp[rlgrpc]}" -ratelimit-http-addr "127.0.0.1:${gwp[rlhttp]}" \
		-authz-grpc-addr "127.0.0.1:${gwp[azgrpc]}" -authz-http-addr "127.0.0.1:${gwp[azhttp]}" \
		>"$work/dev.log" 2>&1 &
	dev_pid=$!
	pids+=("$dev_pid")
	for _ in $(seq 1 300); do
		readyz "${gwp[gwadmin]}" /ready 2>/dev/null && return 0
		kill -0 "$dev_pid" 2>/dev/null || return 1
		sleep 0.1
	done
	readyz "${gwp[gwadmin]}" /ready 2>/dev/null && return 0
	echo "bench: leaky dev's gateway not ready after 30 s" >&2
	tail -n 20 "$work/dev.log" >&2
	exit 1
}

# free_port finds a port nothing listens on yet, which another process (or an outgoing
# connection's local port) can take before dev binds it: a bind failure is retried on new ports.
say "gateway path: leaky dev (gateway stand-in, provider stubs at zero latency, memory stores)"
for attempt in 1 2 3; do
	start_dev && break
	stop "$dev_pid"
	if [ "$attempt" = 3 ] || ! grep -q 'address already in use' "$work/dev.log"; then
		echo "bench: leaky dev exited:" >&2
		tail -n 20 "$work/dev.log" >&2
		exit 1
	fi
	echo "bench: $(grep -m1 'address already in use' "$work/dev.log"); again on other ports" >&2
done
gw_url="http://127.0.0.1:${gwp[gw]}"
stub_url="http://127.0.0.1:${gwp[openai]}"
echo "  gateway $gw_url, OpenAI stub $stub_url, dev PID $dev_pid"
await_ready "leaky dev's ratelimit" "$dev_pid" "${gwp[rlhttp]}" "$work/dev.log"
await_ready "leaky dev's authz" "$dev_pid" "${gwp[azhttp]}" "$work/dev.log"
# The same request both ways (loadgen's default body: gpt-4o-mini, one short message, max_tokens
# 16), then streamed (stream:true, no stream_options: the metering forces include_usage on the
# upstream request and strips the usage chunk from what the client gets, its most work). Both
# gateway runs are metered (ext_proc on every provider route; the policy has no switch to turn it
# off): the non-streamed answer is one JSON body, the streamed one an SSE event per chunk, each a
# response_body message the gateway sends to ext_proc and waits for. Each gateway run's throwaway
# user registers through the gateway (/api/v1/auth routes to authz); its API key's first Check is
# the one cache miss. The server CPU is the whole dev process. The metering's own counters (dev's
# ratelimit and gateway /metrics) are read around each gateway run: a settle at anything but the
# reported usage, or an ext_proc error, voids the run's figures.
stream_body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16,"stream":true}'
R[stream.events]=$(sse_events "$stub_url/v1/chat/completions" \
	'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16,"stream":true,"stream_options":{"include_usage":true}}')
loops direct "$dev_pid" "${gwp[openai]}" closed -- -target http -url "$stub_url/v1/chat/completions" \
	-label "openai stub direct"
meter_snapshot "$work/meter-0"
loops gateway "$dev_pid" "${gwp[gw]}" closed -- -target http -url "$gw_url/openai/v1/chat/completions" \
	-authz-http "$gw_url" -credential apikey -label "openai through the gateway"
meter_snapshot "$work/meter-1"
loops sdirect "$dev_pid" "${gwp[openai]}" closed -- -target http -url "$stub_url/v1/chat/completions" \
	-body "$stream_body" -label "openai stub direct, streamed"
meter_snapshot "$work/meter-2"
loops sgateway "$dev_pid" "${gwp[gw]}" closed -- -target http -url "$gw_url/openai/v1/chat/completions" \
	-authz-http "$gw_url" -credential apikey -body "$stream_body" -label "openai through the gateway, streamed"
meter_snapshot "$work/meter-3"
R[gateway.meter]=$(meter_delta "$work/meter-0" "$work/meter-1")
R[sgateway.meter]=$(meter_delta "$work/meter-2" "$work/meter-3")
R[gateway.unmetered]=$(meter_bad "$work/meter-0" "$work/meter-1")
R[sgateway.unmetered]=$(meter_bad "$work/meter-2" "$work/meter-3")
echo "  metering  non-streamed run: ${R[gateway.meter]:-nothing}; streamed run: ${R[sgateway.meter]:-nothing}"
stop "$dev_pid"

# num value [decimals]: value rounded for the table: whole from 100 up, else decimals (1) places.
num() { awk -v v="${1:-0}" -v d="${2:-1}" 'BEGIN { printf((v >= 100 ? "%.0f" : "%." d "f"), v) }'; }

# minus a b: a - b, for the CPU above the floor.
minus() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { print a - b }'; }

# pad text width: text and spaces up to width characters (printf's %-9s counts bytes; ≥ takes three
# and µ two).
pad() {
	local LC_ALL=C
	local t=$1 c
	c=${t//[$'\x80'-$'\xbf']/} # one byte per character: drop UTF-8 continuation bytes
	printf '%s%*s' "$t" $(($2 > ${#c} ? $2 - ${#c} : 0)) ''
}

# ratio a b: a / b, empty when either is missing or b is 0.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b + 0 != 0) print a / b }'; }

# not200 answers: how many of an http run's answers ("200":n,"503":m) were not 200, plus its
# transport errors (the second argument).
not200() {
	tr ',' '\n' <<<"$1" | awk -F: -v e="${2:-0}" 'NF == 2 { gsub(/"/, "", $1); if ($1 != "200") n += $2 } END { print n + e }'
}

# statuses answers: an http run's answers for reading, "200 8514, 503 19".
statuses() { tr -d '"' <<<"$1" | sed 's/:/ /g; s/,/, /g'; }

# row label value unit op goal [errors [what]]: one line of the summary; op is ge, le, or info (no
# target); errors counts the answers that void the figure, named by what ("errors").
row() {
	local label=$1 value=$2 unit=$3 op=$4 goal=$5 errors=${6:-0} what=${7:-errors} verdict target
	case $op in
	ge) target="≥ $goal" ;;
	le) target="≤ $goal" ;;
	*) target="-" ;;
	esac
	if [ -z "$value" ]; then
		verdict="no figure"
	elif [ "${errors:-0}" != 0 ] && [ "$op" = info ]; then
		verdict="not counted ($errors $what)"
	elif [ "${errors:-0}" != 0 ]; then
		verdict="not met ($errors $what)"
	elif [ "$op" = info ]; then
		verdict="(no target)"
	elif awk -v v="$value" -v g="$goal" -v op="$op" 'BEGIN { exit !(op == "ge" ? v >= g : v <= g) }'; then
		verdict="met"
	else
		verdict="NOT MET"
	fi
	printf '  %-40s %10s %s %s %s\n' "$label" "$(num "$value" 2)" "$(pad "$unit" 4)" "$(pad "$target" 9)" "$verdict"
}

say "summary (DESIGN §8; one gRPC connection, loopback, $(nproc) cores shared by client and server; ratelimit: 1 descriptor, $keys users; authz: one user, memory store)"
printf '  %-40s %10s %-4s %-9s %s\n' "figure" "measured" "" "target" "result"
row "floor closed c=$concurrency decisions/s" "${R[floor.closed.rate]}" "/s" info - "${R[floor.closed.errors]}"
row "floor server CPU per decision" "${R[floor.closed.server_cpu_us]}" "µs" info - "${R[floor.closed.errors]}"
for s in memory redis; do
	cpu_goal=20
	[ $s = redis ] && cpu_goal=35
	row "$s closed c=$concurrency decisions/s" "${R[$s.closed.rate]}" "/s" ge 30000 "${R[$s.closed.errors]}"
	row "$s closed server CPU per decision" "${R[$s.closed.server_cpu_us]}" "µs" le $cpu_goal "${R[$s.closed.errors]}"
	row "$s closed p99" "${R[$s.closed.p99_ms]}" "ms" info - "${R[$s.closed.errors]}"
	row "$s open $rate/s p99" "${R[$s.open.p99_ms]}" "ms" le 5 "${R[$s.open.errors]}"
	row "$s open $rate/s max (Envoy's timeout)" "${R[$s.open.max_ms]}" "ms" le 20 "${R[$s.open.errors]}"
done
# Issue 10's targets, as ratios to this run's floor: the Redis store's decisions/s and its total CPU
# per decision (the service's plus redis-server's), the memory store's decisions/s.
redis_total_cpu=$(awk -v a="${R[redis.closed.server_cpu_us]:-}" -v b="${R[redis.closed.redis_cpu_us]:-}" \
	'BEGIN { if (a != "" && b != "") print a + b }')
redis_errs=$((${R[redis.closed.errors]:-0} + ${R[floor.closed.errors]:-0}))
memory_errs=$((${R[memory.closed.errors]:-0} + ${R[floor.closed.errors]:-0}))
row "redis decisions/s / floor's" "$(ratio "${R[redis.closed.rate]}" "${R[floor.closed.rate]}")" "×" ge 0.8 "$redis_errs"
row "redis CPU (service + redis-server) / floor's" "$(ratio "$redis_total_cpu" "${R[floor.closed.server_cpu_us]}")" \
	"×" le 1.8 "$redis_errs"
row "memory decisions/s / floor's" "$(ratio "${R[memory.closed.rate]}" "${R[floor.closed.rate]}")" "×" ge 1.0 "$memory_errs"
row "floor Check closed c=$concurrency checks/s" "${R[checkfloor.closed.rate]}" "/s" info - "${R[checkfloor.closed.errors]}"
row "floor Check server CPU per check" "${R[checkfloor.closed.server_cpu_us]}" "µs" info - "${R[checkfloor.closed.errors]}"
for c in jwt apikey; do
	row "authz $c closed c=$concurrency checks/s" "${R[$c.closed.rate]}" "/s" ge 25000 "${R[$c.closed.errors]}"
	row "authz $c closed c=$concurrency p99" "${R[$c.closed.p99_ms]}" "ms" le 5 "${R[$c.closed.errors]}"
	row "authz $c closed server CPU per check" "${R[$c.closed.server_cpu_us]}" "µs" info - "${R[$c.closed.errors]}"
	row "authz $c open $rate/s p99" "${R[$c.open.p99_ms]}" "ms" le 5 "${R[$c.open.errors]}"
	row "authz $c open $rate/s max" "${R[$c.open.max_ms]}" "ms" info - "${R[$c.open.errors]}"
done
for c in calone clogins cloginsall; do
	case $c in
	calone) l="alone" ;;
	clogins) l="+ $logins logins" ;;
	*) l="+ $logins logins, $all_hashers hashers" ;;
	esac
	row "Check $login_rate/s $l p50" "${R[$c.open.p50_ms]}" "ms" info - "${R[$c.open.errors]}"
	row "Check $login_rate/s $l p99" "${R[$c.open.p99_ms]}" "ms" le 200 "${R[$c.open.errors]}"
	[ "$c" = calone ] || row "  logins answered beside it (503 $(num "${R[$c.open.login_503]:-0}" 0))" \
		"${R[$c.open.login_rate]}" "/s" info - "${R[$c.open.errors]}"
done
# The gateway path: a figure counts only when every answer was 200.
gw_bad=0
sgw_bad=0
for g in direct gateway sdirect sgateway; do
	case $g in
	direct) l="stub direct" ;;
	gateway) l="via gateway" ;;
	sdirect) l="stream, stub direct" ;;
	*) l="stream, via gateway" ;;
	esac
	bad=$(not200 "${R[$g.closed.answers]}" "${R[$g.closed.errors]}")
	bad=$((bad + ${R[$g.unmetered]:-0}))
	case $g in
	direct | gateway) gw_bad=$((gw_bad + bad)) ;;
	*) sgw_bad=$((sgw_bad + bad)) ;;
	esac
	row "$l closed c=$concurrency requests/s" "${R[$g.closed.rate]}" "/s" info - "$bad" "not 200/unmetered"
	row "$l p50" "${R[$g.closed.p50_ms]}" "ms" info - "$bad" "not 200/unmetered"
	row "$l p99" "${R[$g.closed.p99_ms]}" "ms" info - "$bad" "not 200/unmetered"
	row "$l dev CPU per request" "${R[$g.closed.server_cpu_us]}" "µs" info - "$bad" "not 200/unmetered"
done
row "gateway / direct requests/s" "$(ratio "${R[gateway.closed.rate]}" "${R[direct.closed.rate]}")" "×" info - \
	"$gw_bad" "not 200/unmetered"
row "gateway requests/s / floor's calls/s" "$(ratio "${R[gateway.closed.rate]}" "${R[floor.closed.rate]}")" "×" \
	info - "$gw_bad" "not 200/unmetered"
row "gateway dev CPU / floor's CPU per call" \
	"$(ratio "${R[gateway.closed.server_cpu_us]}" "${R[floor.closed.server_cpu_us]}")" "×" info - "$gw_bad" "not 200/unmetered"
# What the gateway adds to a call, non-streamed and streamed (dev CPU per request, gateway − direct),
# and what streaming adds to the gateway's part: the metering's per-chunk exchanges and the
# stand-in's per-chunk forwarding, per response and per SSE event of the upstream stream.
R[gw.extra]=$(minus "${R[gateway.closed.server_cpu_us]}" "${R[direct.closed.server_cpu_us]}")
R[sgw.extra]=$(minus "${R[sgateway.closed.server_cpu_us]}" "${R[sdirect.closed.server_cpu_us]}")
R[stream.extra]=$(minus "${R[sgw.extra]}" "${R[gw.extra]}")
all_bad=$((gw_bad + sgw_bad))
row "gateway's part, non-streamed (dev CPU)" "${R[gw.extra]}" "µs" info - "$gw_bad" "not 200/unmetered"
row "gateway's part, streamed (dev CPU)" "${R[sgw.extra]}" "µs" info - "$sgw_bad" "not 200/unmetered"
row "  streaming's extra, per response" "${R[stream.extra]}" "µs" info - "$all_bad" "not 200/unmetered"
row "  streaming's extra, per SSE event (${R[stream.events]})" "$(ratio "${R[stream.extra]}" "${R[stream.events]}")" "µs" \
	info - "$all_bad" "not 200/unmetered"
row "streamed gateway / non-streamed requests/s" "$(ratio "${R[sgateway.closed.rate]}" "${R[gateway.closed.rate]}")" "×" \
	info - "$all_bad" "not 200/unmetered"
row "ext_proc per streamed response (Go bench)" "$(awk -v n="${R[meter.ns]}" 'BEGIN { print n / 1000 }')" "µs" info -
row "ext_proc per chunk (Go bench, ${R[meter.chunks]})" \
	"$(awk -v n="${R[meter.ns]}" -v c="${R[meter.chunks]}" 'BEGIN { print n / c / 1000 }')" "µs" info -
# The token API's consume beside the direct stub call it makes.
for c in stubchat consume; do
	case $c in
	stubchat) l="stub seed API direct" ;;
	*) l="consume (token API)" ;;
	esac
	bad=$(not200 "${R[$c.closed.answers]}" "${R[$c.closed.errors]}")
	if [ "$c" = consume ]; then
		consume_bad=$bad
	else
		stub_bad=$bad
	fi
	row "$l closed c=$concurrency calls/s" "${R[$c.closed.rate]}" "/s" info - "$bad" "not 200"
	row "$l p50" "${R[$c.closed.p50_ms]}" "ms" info - "$bad" "not 200"
	row "$l p99" "${R[$c.closed.p99_ms]}" "ms" info - "$bad" "not 200"
done
row "stub CPU per direct call" "${R[stubchat.closed.server_cpu_us]}" "µs" info - "$stub_bad" "not 200"
row "ratelimit CPU per consume" "${R[consume.closed.server_cpu_us]}" "µs" info - "$consume_bad" "not 200"
row "  stub CPU per consume (apart)" "${R[consume.closed.side_cpu_us]}" "µs" info - "$consume_bad" "not 200"
row "consumes/s / direct calls/s" "$(ratio "${R[consume.closed.rate]}" "${R[stubchat.closed.rate]}")" "×" info - \
	"$consume_bad" "not 200"
row "ratelimit CPU per consume / floor's" \
	"$(ratio "${R[consume.closed.server_cpu_us]}" "${R[floor.closed.server_cpu_us]}")" "×" info - "$consume_bad" "not 200"
printf '\n  The ratelimit closed loop'"'"'s p99 is queueing at concurrency 64; DESIGN §8 sets no target for it.\n'
printf '  For authz Check DESIGN §8 sets p99 ≤ 5 ms at concurrency 64: the closed loop (64 workers) and\n'
printf '  the open loop (at most 64 outstanding) are both read against it.\n'
printf '  Reference (same harness, DESIGN §8): envoyproxy/ratelimit + Redis 15k/s, p99 12 ms, 57 µs CPU;\n'
printf '  a do-nothing gRPC server 38.6k/s, 17 µs. The Redis target (≥ 30k/s) is 2× envoyproxy/ratelimit.\n'
printf '  This run'"'"'s floor (do-nothing server, same harness): %s/s, %s µs; the service'"'"'s CPU above it:\n' \
	"$(num "${R[floor.closed.rate]}")" "$(num "${R[floor.closed.server_cpu_us]}")"
printf '  memory %s µs, redis %s µs per decision (plus redis-server %s µs).\n' \
	"$(num "$(awk -v a="${R[memory.closed.server_cpu_us]:-0}" -v b="${R[floor.closed.server_cpu_us]:-0}" 'BEGIN { print a - b }')")" \
	"$(num "$(awk -v a="${R[redis.closed.server_cpu_us]:-0}" -v b="${R[floor.closed.server_cpu_us]:-0}" 'BEGIN { print a - b }')")" \
	"$(num "${R[redis.closed.redis_cpu_us]}")"
printf '  OK answers: memory closed %s%%, open %s%%; redis closed %s%%, open %s%%. Open loop dropped/late:\n' \
	"$(num "${R[memory.closed.ok_pct]}")" "$(num "${R[memory.open.ok_pct]}")" \
	"$(num "${R[redis.closed.ok_pct]}")" "$(num "${R[redis.open.ok_pct]}")"
printf '  memory %s/%s, redis %s/%s; the sender'"'"'s own lag (p99, part of the latency): memory %s ms, redis %s ms.\n' \
	"${R[memory.open.dropped]:-0}" "${R[memory.open.late]:-0}" "${R[redis.open.dropped]:-0}" "${R[redis.open.late]:-0}" \
	"$(num "${R[memory.open.lag_p99_ms]}" 2)" "$(num "${R[redis.open.lag_p99_ms]}" 2)"
printf '  Load generator CPU: memory %s µs, redis %s µs per decision (closed loop).\n' \
	"$(num "${R[memory.closed.client_cpu_us]}")" "$(num "${R[redis.closed.client_cpu_us]}")"
printf '  Other processes'"'"' share of the machine during the measured runs: floor %s%%, memory %s%%/%s%%,\n' \
	"${R[floor.closed.other_pct]}" "${R[memory.closed.other_pct]}" "${R[memory.open.other_pct]}"
printf '  redis %s%%/%s%% (closed/open); above a few percent, the figures understate the service.\n' \
	"${R[redis.closed.other_pct]}" "${R[redis.open.other_pct]}"
printf '  authz Check: this run'"'"'s floor (do-nothing ext_authz, same request) %s/s, %s µs; the service'"'"'s\n' \
	"$(num "${R[checkfloor.closed.rate]}")" "$(num "${R[checkfloor.closed.server_cpu_us]}")"
printf '  CPU above it: JWT %s µs, API key %s µs per check. OK answers: JWT closed %s%%, open %s%%;\n' \
	"$(num "$(minus "${R[jwt.closed.server_cpu_us]}" "${R[checkfloor.closed.server_cpu_us]}")")" \
	"$(num "$(minus "${R[apikey.closed.server_cpu_us]}" "${R[checkfloor.closed.server_cpu_us]}")")" \
	"$(num "${R[jwt.closed.ok_pct]}")" "$(num "${R[jwt.open.ok_pct]}")"
printf '  API key closed %s%%, open %s%%. Open loop dropped/late: JWT %s/%s, API key %s/%s; sender lag p99:\n' \
	"$(num "${R[apikey.closed.ok_pct]}")" "$(num "${R[apikey.open.ok_pct]}")" \
	"${R[jwt.open.dropped]:-0}" "${R[jwt.open.late]:-0}" "${R[apikey.open.dropped]:-0}" "${R[apikey.open.late]:-0}"
printf '  JWT %s ms, API key %s ms. Load generator CPU: JWT %s µs, API key %s µs per check (closed loop).\n' \
	"$(num "${R[jwt.open.lag_p99_ms]}" 2)" "$(num "${R[apikey.open.lag_p99_ms]}" 2)" \
	"$(num "${R[jwt.closed.client_cpu_us]}")" "$(num "${R[apikey.closed.client_cpu_us]}")"
printf '  Other processes'"'"' share during the authz runs: Check floor %s%%, JWT %s%%/%s%%, API key %s%%/%s%%.\n' \
	"${R[checkfloor.closed.other_pct]}" "${R[jwt.closed.other_pct]}" "${R[jwt.open.other_pct]}" \
	"${R[apikey.closed.other_pct]}" "${R[apikey.open.other_pct]}"
printf '  Check beside logins: the p99 target is Envoy'"'"'s ext_authz timeout (200 ms). Server CPU per check\n'
printf '  (logins included): alone %s µs, beside logins %s µs, with %s hashers %s µs; dropped/late %s/%s,\n' \
	"$(num "${R[calone.open.server_cpu_us]}")" "$(num "${R[clogins.open.server_cpu_us]}")" "$all_hashers" \
	"$(num "${R[cloginsall.open.server_cpu_us]}")" "${R[clogins.open.dropped]:-0}" "${R[clogins.open.late]:-0}"
printf '  %s/%s; sender lag p99 %s, %s, %s ms; other processes %s%%, %s%%, %s%%.\n' \
	"${R[cloginsall.open.dropped]:-0}" "${R[cloginsall.open.late]:-0}" \
	"$(num "${R[calone.open.lag_p99_ms]}" 2)" "$(num "${R[clogins.open.lag_p99_ms]}" 2)" "$(num "${R[cloginsall.open.lag_p99_ms]}" 2)" \
	"${R[calone.open.other_pct]}" "${R[clogins.open.other_pct]}" "${R[cloginsall.open.other_pct]}"
printf '  Gateway path (DESIGN §8 asks only that it be reported): `leaky dev`, stub at zero latency, closed\n'
printf '  loop c=%s, one throwaway user; a figure counts only when every answer is 200. Answers by status:\n' \
	"$concurrency"
printf '  direct %s; via the gateway %s; loadgen transport errors %s, %s.\n' \
	"$(statuses "${R[direct.closed.answers]}")" "$(statuses "${R[gateway.closed.answers]}")" \
	"${R[direct.closed.errors]:-0}" "${R[gateway.closed.errors]:-0}"
printf '  The dev CPU per request is one process that runs the stub, the gateway stand-in, authz, ratelimit\n'
printf '  and the control plane: direct, the stub alone (the rest idle); via the gateway, all of them, %s µs\n' \
	"$(num "$(minus "${R[gateway.closed.server_cpu_us]}" "${R[direct.closed.server_cpu_us]}")")"
printf '  above the direct call (two more HTTP hops, the ext_authz and the ratelimit gRPC call, the ext_proc\n'
printf '  stream of the metering, whose settle is one more store call; the floor'"'"'s\n'
printf '  server side of one gRPC call: %s µs). Load generator CPU: direct %s µs, gateway %s µs per\n' \
	"$(num "${R[floor.closed.server_cpu_us]}")" "$(num "${R[direct.closed.client_cpu_us]}")" \
	"$(num "${R[gateway.closed.client_cpu_us]}")"
printf '  request; other processes used %s%% and %s%% of the cores during the two runs.\n' \
	"${R[direct.closed.other_pct]}" "${R[gateway.closed.other_pct]}"
printf '  Streamed (stream:true, %s SSE events upstream with the usage chunk the metering forces and strips):\n' \
	"${R[stream.events]}"
printf '  answers direct %s; via the gateway %s; transport errors %s, %s. The metering\n' \
	"$(statuses "${R[sdirect.closed.answers]}")" "$(statuses "${R[sgateway.closed.answers]}")" \
	"${R[sdirect.closed.errors]:-0}" "${R[sgateway.closed.errors]:-0}"
printf '  around the gateway runs (warm-ups included): non-streamed %s;\n' "${R[gateway.meter]:-nothing}"
printf '  streamed %s. The policy cannot switch the metering off, so\n' "${R[sgateway.meter]:-nothing}"
printf '  the streamed run is read against the non-streamed one: "streaming'"'"'s extra" is the gateway'"'"'s part of\n'
printf '  a streamed call minus its part of a plain one, i.e. what the per-chunk ext_proc messages and the\n'
printf '  stand-in'"'"'s per-chunk forwarding cost (both processes'"'"' sides, in the one dev process); the Go benchmark\n'
printf '  (BenchmarkMeterStreamedResponse: %s messages, %s of them response chunks, over loopback gRPC in one\n' \
	"${R[meter.messages]}" "${R[meter.chunks]}"
printf '  process, wall time) measures the ext_proc exchange alone.\n'
printf '  Consume (token API, memory store and ledger, one user, caller from trusted x-leaky-* headers):\n'
printf '  answers direct %s, consume %s; transport errors %s, %s. The consume'"'"'s ratelimit CPU (%s µs) holds\n' \
	"$(statuses "${R[stubchat.closed.answers]}")" "$(statuses "${R[consume.closed.answers]}")" \
	"${R[stubchat.closed.errors]:-0}" "${R[consume.closed.errors]:-0}" "$(num "${R[consume.closed.server_cpu_us]}")"
printf '  the HTTP server, the reservation, the provider client'"'"'s call, the settle and the ledger write; the stub\n'
printf '  spends its own %s µs apart. Other processes used %s%% and %s%% of the cores during the two runs.\n' \
	"$(num "${R[consume.closed.side_cpu_us]}")" "${R[stubchat.closed.other_pct]}" "${R[consume.closed.other_pct]}"
