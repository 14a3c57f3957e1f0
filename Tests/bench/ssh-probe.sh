#!/bin/bash
# The OpenSSH baselines of the benchmark: one fresh `ssh` per host, all started at once,
# each running COMMAND. It does not reuse connections (no ControlMaster) and reads no
# user ssh_config. A target ADDRESS=FILE feeds FILE to the command's standard input (the
# rebuild baseline sends each host its module that way). Exits 1 if any host failed.
# Usage: ssh-probe.sh KEY KNOWN_HOSTS KEX|default COMMAND ADDRESS[=FILE]...
set -u
key=$1 known=$2 kex=$3 cmd=$4
shift 4
opts=(-F /dev/null -i "$key" -o UserKnownHostsFile="$known" -o StrictHostKeyChecking=yes
    -o BatchMode=yes -o ControlMaster=no -o ControlPath=none -o ConnectTimeout=20
    -o LogLevel=ERROR -l root)
# Default: whatever this OpenSSH prefers (9.x: a post-quantum hybrid).
[ "$kex" = default ] || opts+=(-o KexAlgorithms="$kex")
pids=()
for target in "$@"; do
    case $target in
    *=*) ssh "${opts[@]}" "${target%%=*}" "$cmd" < "${target#*=}" >/dev/null 2>&1 & ;;
    *) ssh "${opts[@]}" "$target" "$cmd" < /dev/null >/dev/null & ;;
    esac
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
    wait "$pid" || failed=$((failed + 1))
done
[ $failed = 0 ] || { echo "ssh-probe: $failed host(s) failed" >&2; exit 1; }
