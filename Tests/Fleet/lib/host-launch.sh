#!/bin/sh
# Boots one fleet host: run by `fleet` as `unshare -m --propagation private host-launch.sh ...`.
# It moves itself into the host's own cgroups, hides the machine's /run behind a fresh tmpfs
# (nspawn needs a tmpfs /run that this machine lacks) and becomes systemd-nspawn.
# It does not create the overlay, the network namespace or the cgroups: `fleet` does.
set -eu
name=$1 root=$2 netns=$3
echo $$ >"/sys/fs/cgroup/systemd/bkfleet-fleet/$name/cgroup.procs"
echo $$ >"/sys/fs/cgroup/unified/bkfleet-fleet/$name/cgroup.procs"
mount -t tmpfs -o mode=0755 bkfleet-run /run
export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
# --resolv-conf=off: nspawn would otherwise copy the machine's resolver into the host.
exec systemd-nspawn --quiet --boot --directory="$root" --machine="$name" \
    --register=no --keep-unit --network-namespace-path="$netns" \
    --resolv-conf=off --timezone=off --link-journal=no --console=read-only
