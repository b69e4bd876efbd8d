#!/usr/bin/env bash
# Installs what the tests need when it is missing: Debian's redis-server and PostgreSQL.
# Safe to run again; installs nothing that is already there.
set -euo pipefail

have_pg() {
	command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1 && return 0
	compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
have_pg || missing+=(postgresql)
id postgres >/dev/null 2>&1 || missing+=(postgresql)

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
echo "deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 || { echo "deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
	sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# The packages' post-install scripts try to start system services; that is refused in
# containers and harmless: the tests start their own servers.
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
