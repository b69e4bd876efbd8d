#!/usr/bin/env bash
# make test-cold: what a new user sees. Clones the current HEAD into a temporary directory and runs
# CI's command (`CI=true bash .ci/run`, i.e. `make test`) there N times (default 3; `RUNS=N` or the
# first argument), each with an empty Go build cache, while one `yes > /dev/null` per core keeps
# every CPU busy. The module cache is kept (CI downloads modules fine; it has no build cache).
# Prints each run's result and duration; stops exactly the hogs it started and removes its
# temporary directories on exit, interrupt or TERM. Exits non-zero when any run failed.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-${RUNS:-3}}
head=$(git rev-parse HEAD)
repo=$(pwd)
work=$(mktemp -d /tmp/leaky-cold-XXXXXX)
hogs=()
cleanup() {
	for pid in "${hogs[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${hogs[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	chmod -R u+w "$work" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

git clone -q --no-local "$repo" "$work/src"
git -C "$work/src" checkout -q "$head"
if ! git -C "$repo" diff --quiet HEAD; then
	echo "cold-test: uncommitted changes are not tested; testing $head" >&2
fi

for _ in $(seq 1 "$(nproc)"); do
	yes >/dev/null &
	hogs+=($!)
done
echo "cold-test: $head, $runs run(s), ${#hogs[@]} CPU hog(s) (pids ${hogs[*]})" >&2

failed=0
results=()
for i in $(seq 1 "$runs"); do
	cache="$work/gocache-$i"
	mkdir -p "$cache"
	start=$(date +%s)
	status=pass
	(cd "$work/src" && GOCACHE="$cache" CI=true bash .ci/run) >"$work/run-$i.log" 2>&1 || status=FAIL
	secs=$(($(date +%s) - start))
	rm -rf "$cache"
	results+=("run $i: $status in ${secs}s")
	echo "cold-test: run $i: $status in ${secs}s" >&2
	if [ "$status" = FAIL ]; then
		failed=1
		keep=$(mktemp /tmp/leaky-cold-run-$i-XXXXXX.log)
		cp "$work/run-$i.log" "$keep"
		echo "cold-test: run $i's whole log kept in $keep" >&2
		# The failing tests and their output; the whole log is long.
		# (go-redis logs every refused dial of the fault tests; leave those out.)
		grep -v '^redis: ' "$work/run-$i.log" | grep -E -B2 -A30 '^(--- FAIL|FAIL|panic:)' | tail -n 200 >&2 ||
			tail -n 100 "$work/run-$i.log" >&2
	fi
done
printf 'cold-test: %s\n' "${results[@]}" >&2
exit "$failed"
