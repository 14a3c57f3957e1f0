#!/bin/bash
# Installs the stand-in buildkite-agent into a host root file system at the pinned store path
# that the NixOS stand-in's pkgs.buildkite-agent names. Idempotent; it writes nothing else
# and does not install python3 (the host image carries it at /usr/bin/python3).
set -euo pipefail

root=${1:?usage: install.sh ROOT}
here=$(cd "$(dirname "$0")" && pwd)
store_path=/nix/store/00000000000000000000000000000bk1-buildkite-agent-standin

if [ ! -d "$root" ]; then
    echo "install.sh: $root is not a directory (give the host's root file system)" >&2
    exit 1
fi
install -d -m 0755 "$root$store_path/bin"
install -m 0555 "$here/agent/buildkite-agent" "$root$store_path/bin/buildkite-agent.tmp"
mv -f "$root$store_path/bin/buildkite-agent.tmp" "$root$store_path/bin/buildkite-agent"
echo "$store_path/bin/buildkite-agent"
