#!/usr/bin/env bash
# Prints where scripts/deps.sh puts the Consul agent built from tools/consul: a cache outside the
# repository keyed by the wrapper module's go.sum, so that one build serves every clone and
# worktree on the machine until the wrapper's dependencies change:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/leaky/consul-<first 16 hex digits of sha256(tools/consul/go.sum)>/consul
# internal/testenv computes the same path (consulCachePath); keep the two in step.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
sum=$(sha256sum "$root/tools/consul/go.sum" | cut -c1-16)
echo "${XDG_CACHE_HOME:-$HOME/.cache}/leaky/consul-$sum/consul"
