#!/bin/sh
# Turns a fresh debootstrap tree into the shared fleet image; runs once, chrooted, as root.
# Only host-independent settings live here: host keys, addresses, names and the test CA
# are written per host by `fleet` into each host's overlay. Changing this file rebuilds
# the cached image (its hash is part of the cache key).
set -eu

# NixOS always has group `keys` (gid 96) for secrets that services read; agents join it.
groupadd --system --gid 96 keys

# Users the contract promises. Fixed ids so `fleet` can chown files in overlays from outside.
useradd --uid 1000 --create-home --shell /bin/bash deploy
useradd --uid 1001 --create-home --shell /bin/bash deploy-pw
# deploy-pw must type a password for sudo; the value is test equipment, documented in
# docs/test-fleet.md, and never grants ssh login (PasswordAuthentication is off).
echo 'deploy-pw:deploy-pw-secret' | chpasswd
printf 'deploy ALL=(ALL) NOPASSWD: ALL\n' >/etc/sudoers.d/deploy
printf 'deploy-pw ALL=(ALL) ALL\n' >/etc/sudoers.d/deploy-pw
chmod 0440 /etc/sudoers.d/deploy /etc/sudoers.d/deploy-pw
for home in /root /home/deploy /home/deploy-pw; do
    mkdir -p "$home/.ssh"
    chmod 0700 "$home/.ssh"
done
chown 1000:1000 /home/deploy/.ssh
chown 1001:1001 /home/deploy-pw/.ssh

# sshd: one ed25519 host key per host (written by `fleet`), keys only, and room for the
# 50-at-once connection bursts bkfleet makes (the default MaxStartups drops some).
rm -f /etc/ssh/ssh_host_*
cat >/etc/ssh/sshd_config.d/10-fleet.conf <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
MaxStartups 100:30:200
MaxSessions 50
UseDNS no
PrintMotd no
PrintLastLog no
EOF
# Debian regenerates missing host keys on first boot via this unit; fleet provides them.
systemctl mask ssh-keygen.service 2>/dev/null || true
systemctl enable ssh.service

# Units that would wait for hardware, a console or the network that hosts do not have.
for unit in console-getty.service getty@tty1.service apt-daily.timer \
    apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
    systemd-networkd-wait-online.service systemd-timesyncd.service \
    systemd-resolved.service; do
    systemctl mask "$unit" >/dev/null 2>&1 || true
done

# NixOS layout bkfleet and modules rely on: a store, and the daemon socket (socket-activated,
# so the daemon only runs if something connects; units bind the socket path).
mkdir -p /nix/store /nix/var/nix/daemon-socket /nix/var/nix/profiles /etc/nixos
cat >/etc/systemd/system/nix-daemon.socket <<'EOF'
[Unit]
Description=Nix daemon socket (test fleet)

[Socket]
ListenStream=/nix/var/nix/daemon-socket/socket

[Install]
WantedBy=sockets.target
EOF
cat >/etc/systemd/system/nix-daemon.service <<'EOF'
[Unit]
Description=Nix daemon (test fleet)
Requires=nix-daemon.socket

[Service]
ExecStart=/usr/bin/nix-daemon
KillMode=process
EOF
systemctl enable nix-daemon.socket

# The machine-id and resolv.conf are per host; leave placeholders that fleet overwrites.
: >/etc/machine-id
rm -f /etc/resolv.conf
echo 'nameserver 127.0.0.1' >/etc/resolv.conf
rm -rf /var/cache/apt/archives/*.deb /var/lib/apt/lists/*
