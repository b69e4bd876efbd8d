# Shared by scripts/test.sh and scripts/bench.sh; source it after setting `work` (a temporary
# directory removed on exit). Every process started is added to `pids` (or, when started with
# setsid, its process group to `groups`) and stopped on exit, interrupt or TERM.
pids=()
groups=()
cleanup() {
	for pgid in "${groups[@]}"; do
		kill -- "-$pgid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_port: a random port that nothing listens on, below the kernel's ephemeral range (outgoing
# connections take those, and one in TIME-WAIT would still block a bind there).
free_port() {
	local p low
	low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
	[ "$low" -gt 20500 ] || low=32768
	while :; do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % (low - 20000)))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}

wait_port() { # port: wait up to 30 s for a listener on 127.0.0.1:port
	for _ in $(seq 1 300); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "$(basename "$0"): nothing listens on 127.0.0.1:$1" >&2
	return 1
}
