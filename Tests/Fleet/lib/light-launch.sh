#!/bin/sh
# Starts one light host: a plain sshd in its own mount and UTS namespaces, run by `fleet` as
# `unshare -m -u --propagation private light-launch.sh NAME DIR`. Sessions get the host's
# name, an empty /root (no slow shell start-up files), their own /tmp and /run, and
# copy-on-write views of /etc and /var/lib. No systemd, nix or users but root.
set -eu
name=$1 dir=$2
mount -t tmpfs -o mode=0755 bkfleet-run /run
mkdir -m 0755 /run/sshd
mount -t tmpfs -o mode=1777 bkfleet-tmp /tmp
mount --bind "$dir/home" /root
# Writes to /etc and /var/lib (an apply's modules and secrets) land in this host's folder,
# never in the machine's own files.
for top in etc var/lib; do
    mkdir -p "$dir/upper/$top" "$dir/work/$top"
    mount -t overlay "bkfleet-$name-${top%%/*}" \
        -o "lowerdir=/$top,upperdir=$dir/upper/$top,workdir=$dir/work/$top" "/$top"
done
hostname "$name"
exec /usr/sbin/sshd -D -e -f "$dir/sshd_config"
