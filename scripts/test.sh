#!/usr/bin/env bash
# make test: install what the tests need, start Redis, a 3-master Redis Cluster, PostgreSQL and a
# Consul agent on free ports in temporary directories, run every test with the race detector, and
# stop what was started (also on failure or interrupt).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh

work=$(mktemp -d /tmp/leaky-test-XXXXXX)
chmod 755 "$work"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# Redis
redis_port=$(free_port)
mkdir -p "$work/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
	--dir "$work/redis" --logfile "$work/redis/redis.log" --daemonize no &
pids+=($!)
wait_port "$redis_port"
export LEAKY_TEST_REDIS_URL="redis://127.0.0.1:$redis_port/0"

# Redis Cluster: three masters (no replicas) on free ports, each with a free cluster bus port, joined
# by redis-cli; tests that kill a node start a private cluster (testenv.StartRedisCluster).
cluster_addrs=()
taken=" $redis_port "
for i in 1 2 3; do
	port=$(free_port)
	while [[ $taken == *" $port "* ]]; do port=$(free_port); done
	bus=$(free_port)
	while [[ "$taken $port " == *" $bus "* ]]; do bus=$(free_port); done
	taken+="$port $bus "
	mkdir -p "$work/cluster/$i"
	redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes --cluster-port "$bus" \
		--cluster-config-file "$work/cluster/$i/nodes.conf" --cluster-node-timeout 2000 \
		--cluster-require-full-coverage no --save '' --appendonly no \
		--dir "$work/cluster/$i" --logfile "$work/cluster/$i/redis.log" --daemonize no &
	pids+=($!)
	cluster_addrs+=("127.0.0.1:$port")
done
for a in "${cluster_addrs[@]}"; do wait_port "${a#*:}"; done
redis-cli --cluster create "${cluster_addrs[@]}" --cluster-replicas 0 --cluster-yes >"$work/cluster/create.log" 2>&1 ||
	{ cat "$work/cluster/create.log" >&2; exit 1; }
for a in "${cluster_addrs[@]}"; do
	ready=""
	for _ in $(seq 1 600); do
		redis-cli -h 127.0.0.1 -p "${a#*:}" cluster info 2>/dev/null | grep -q '^cluster_state:ok' && { ready=1; break; }
		sleep 0.1
	done
	[ -n "$ready" ] || { echo "test: the redis cluster node $a is not ok:" >&2; tail -n 20 "$work/cluster/"*/redis.log >&2; exit 1; }
done
LEAKY_TEST_REDIS_CLUSTER_URL="redis+cluster://$(IFS=,; echo "${cluster_addrs[*]}")"
export LEAKY_TEST_REDIS_CLUSTER_URL

# PostgreSQL (it refuses to run as root, so run it as the postgres user)
pgbin=$(dirname "$(readlink -f "$(command -v postgres 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -n1)")")
pg_port=$(free_port)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
	chown postgres "$work"
	# setpriv execs in place, so $! below is the postmaster itself.
	as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
fi
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg" -A trust -U postgres --no-sync -E UTF8 --no-locale >"$work/initdb.log" 2>&1 ||
	{ cat "$work/initdb.log" >&2; exit 1; }
"${as_pg[@]}" "$pgbin/postgres" -D "$work/pg" -p "$pg_port" -k "$work" -c listen_addresses=127.0.0.1 \
	-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
	>"$work/postgres.log" 2>&1 &
pids+=($!)
wait_port "$pg_port"
# It listens before it accepts sessions ("the database system is starting up").
ready=""
for _ in $(seq 1 300); do
	"$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && { ready=1; break; }
	sleep 0.1
done
[ -n "$ready" ] || { echo "test: postgresql did not accept sessions:" >&2; cat "$work/postgres.log" >&2; exit 1; }
export LEAKY_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres?sslmode=disable"

# Consul: one -dev agent (a single server, state in memory) for the whole run; DNS and gRPC off.
# Tests that stop or restart an agent start a private one (testenv.StartConsul) with the same binary.
consul_bin=$(bash scripts/consul-path.sh)
consul_ports=()
while [ ${#consul_ports[@]} -lt 4 ]; do
	p=$(free_port)
	[[ " ${consul_ports[*]} " == *" $p "* ]] || consul_ports+=("$p")
done
mkdir -p "$work/consul"
"$consul_bin" agent -dev -bind 127.0.0.1 -client 127.0.0.1 -http-port "${consul_ports[0]}" \
	-grpc-port -1 -grpc-tls-port -1 -dns-port -1 -serf-lan-port "${consul_ports[1]}" \
	-serf-wan-port "${consul_ports[2]}" -server-port "${consul_ports[3]}" -data-dir "$work/consul/data" \
	-log-level warn >"$work/consul/consul.log" 2>&1 &
consul_pid=$!
pids+=("$consul_pid")
# consul_leader: true once GET /v1/status/leader names a leader (a non-empty JSON string).
consul_leader() {
	local line body=""
	exec 3<>"/dev/tcp/127.0.0.1/${consul_ports[0]}" || return 1
	printf 'GET /v1/status/leader HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
	while IFS= read -r line <&3; do body=$line; done
	exec 3<&-
	[[ $body == '"'?*'"' ]]
}
ready=""
for _ in $(seq 1 600); do
	consul_leader 2>/dev/null && { ready=1; break; }
	kill -0 "$consul_pid" 2>/dev/null || break
	sleep 0.1
done
[ -n "$ready" ] || { echo "test: the consul agent has no leader:" >&2; tail -n 30 "$work/consul/consul.log" >&2; exit 1; }
export LEAKY_TEST_CONSUL_ADDR="127.0.0.1:${consul_ports[0]}" LEAKY_TEST_CONSUL_BIN="$consul_bin"

echo "test: redis on 127.0.0.1:$redis_port, redis cluster on ${cluster_addrs[*]}, postgresql on 127.0.0.1:$pg_port, consul on $LEAKY_TEST_CONSUL_ADDR" >&2
# In the background, in a process group of its own, so that a TERM from CI stops go test and
# every test binary too (bash runs a trap only once the foreground command ends).
setsid go test -race -count=1 -timeout 25m "$@" ./... &
gotest=$!
groups+=("$gotest")
wait "$gotest"
# The estimator's fuzz test against encoding/json, for a bounded time (FUZZTIME, default 20s).
setsid go test -run '^$' -fuzz '^FuzzEstimate$' -fuzztime "${FUZZTIME:-20s}" ./internal/estimate &
gotest=$!
groups+=("$gotest")
wait "$gotest"
