#!/usr/bin/env bash
# Installs what the tests need when it is missing: Debian's redis-server and redis-cli, PostgreSQL, curl and kcat (and make),
# and the Consul agent built from tools/consul (scripts/consul-path.sh says where). Safe to run
# again; installs and builds nothing that is already there. The packages' own services are not
# started: the tests start their own servers on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."

have_pg() {
	command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1 && return 0
	compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

missing=()
command -v make >/dev/null 2>&1 || missing+=(make)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# redis-cli: `redis-cli --cluster create` joins the test run's Redis Cluster.
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
# curl: the test that pastes `leaky dev`'s walk-through into bash runs it, as a new user would.
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
# kcat: the test that reads the token-usage topic with an independent Kafka client, and the walk-through.
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
if ! have_pg || ! id postgres >/dev/null 2>&1; then
	missing+=(postgresql)
fi

# install_debian: the missing Debian packages, with their services kept from starting.
install_debian() {
	echo "deps: installing ${missing[*]}" >&2
	sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null 2>&1 || { echo "deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
		sudo=(sudo)
	fi
	# Keep the packages' post-install scripts from starting (and leaving running) system services,
	# unless the machine already has a policy of its own.
	rc=/usr/sbin/policy-rc.d
	if [ ! -e "$rc" ]; then
		printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$rc" >/dev/null
		"${sudo[@]}" chmod 755 "$rc"
		trap '"${sudo[@]}" rm -f "$rc"' EXIT
	fi
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# build_consul: Consul v1.14.11 (MPL-2.0) from the wrapper module tools/consul, once per machine:
# the output's path is keyed by the wrapper's go.sum, so a changed wrapper builds anew. A lock
# keeps two concurrent runs from building twice; the binary appears under its final name only
# when complete.
build_consul() {
	local out dir
	out=$(bash scripts/consul-path.sh)
	dir=$(dirname "$out")
	[ -x "$out" ] && return 0
	if grep -qE 'hashicorp/consul/(envoyextensions|troubleshoot) ' tools/consul/go.sum; then
		echo "deps: tools/consul depends on consul/envoyextensions or consul/troubleshoot, which must not be used" >&2
		exit 1
	fi
	mkdir -p "$dir"
	exec 9>"$dir/.lock"
	flock 9
	if [ ! -x "$out" ]; then
		echo "deps: building the Consul agent (v1.14.11, tools/consul) into $out; the first build on a machine takes 6-9 minutes on two cores" >&2
		(cd tools/consul && go build -trimpath -buildvcs=false -ldflags '-s -w' -o "$out.tmp" .)
		mv "$out.tmp" "$out"
	fi
	exec 9>&-
}

[ ${#missing[@]} -eq 0 ] || install_debian
build_consul
echo "deps: consul at $(bash scripts/consul-path.sh)" >&2
