#!/bin/bash
# The OpenSSH baseline of the benchmark: one fresh `ssh` per host, all started at once,
# each running one probe command. It does not reuse connections (no ControlMaster) and
# reads no user ssh_config. Exits 1 if any host's probe failed.
# Usage: ssh-probe.sh KEY KNOWN_HOSTS KEX|default COMMAND ADDRESS...
set -u
key=$1 known=$2 kex=$3 cmd=$4
shift 4
opts=(-F /dev/null -i "$key" -o UserKnownHostsFile="$known" -o StrictHostKeyChecking=yes
    -o BatchMode=yes -o ControlMaster=no -o ControlPath=none -o ConnectTimeout=20
    -o LogLevel=ERROR -l root)
# Default: whatever this OpenSSH prefers (9.x: a post-quantum hybrid).
[ "$kex" = default ] || opts+=(-o KexAlgorithms="$kex")
pids=()
for addr in "$@"; do
    ssh "${opts[@]}" "$addr" "$cmd" >/dev/null &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
    wait "$pid" || failed=$((failed + 1))
done
[ $failed = 0 ] || { echo "ssh-probe: $failed host(s) failed" >&2; exit 1; }
