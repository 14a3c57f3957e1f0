#!/bin/bash
# The rebuild baseline of the benchmark: the same module change bkfleet makes, done over
# plain OpenSSH on every host at once. One fresh `ssh` per host writes the module file
# (through a temporary file and a rename) and runs `nixos-rebuild switch`, which on the
# test fleet waits until the restarted agent stays up. No token, no host lock, no
# verification: what a hand-written loop would do. Exits 1 if any host failed.
# Usage: ssh-rebuild.sh KEY KNOWN_HOSTS MODULE_PATH ADDRESS=FILE...
set -u
key=$1 known=$2 module=$3
shift 3
opts=(-F /dev/null -i "$key" -o UserKnownHostsFile="$known" -o StrictHostKeyChecking=yes
    -o BatchMode=yes -o ControlMaster=no -o ControlPath=none -o ConnectTimeout=20
    -o LogLevel=ERROR -o KexAlgorithms=curve25519-sha256 -l root)
remote="cat > '$module.bench-tmp' && mv -f '$module.bench-tmp' '$module' && nixos-rebuild switch"
pids=()
for pair in "$@"; do
    ssh "${opts[@]}" "${pair%%=*}" "$remote" < "${pair#*=}" >/dev/null 2>&1 &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
    wait "$pid" || failed=$((failed + 1))
done
[ $failed = 0 ] || { echo "ssh-rebuild: $failed host(s) failed" >&2; exit 1; }
