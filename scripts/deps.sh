#!/usr/bin/env bash
# Installs what the tests need when it is missing: Debian's redis-server and PostgreSQL (and make).
# Safe to run again; installs nothing that is already there. The packages' own services are not
# started: the tests start their own servers on free ports.
set -euo pipefail

have_pg() {
	command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1 && return 0
	compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

missing=()
command -v make >/dev/null 2>&1 || missing+=(make)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if ! have_pg || ! id postgres >/dev/null 2>&1; then
	missing+=(postgresql)
fi

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
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
