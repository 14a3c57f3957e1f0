#!/usr/bin/env bash
# Soak test for crash safety: SIGKILLs `bkfleet apply` at random moments on fresh test
# hosts and checks after each kill that no secret is partial, empty or looser than 0440,
# no `.bkfleet-tmp` file remains, every module file parses, and a rerun converges.
# Test equipment: needs the test fleet up (Tests/Fleet/fleet up 3) and a built bkfleet
# ($BKFLEET_BIN, else .build/debug/bkfleet). It does not bring the fleet up or down.
#
# Usage: Tests/soak/kill-apply.sh [TRIALS] (default 200); env SOAK_HOSTS (default
# "builder-02 builder-03"), SOAK_MAX_DELAY seconds (default: measured from one apply).
set -u
trials=${1:-200}
repo=$(cd "$(dirname "$0")/../.." && pwd)
fleet=$repo/Tests/Fleet/fleet
client=$repo/.fleet
bin=${BKFLEET_BIN:-$repo/.build/debug/bkfleet}
hosts=${SOAK_HOSTS:-"builder-02 builder-03"}
[ -f "$client/hosts.json" ] || { echo "test fleet not up (Tests/Fleet/fleet up 3)" >&2; exit 2; }
[ -x "$bin" ] || { echo "no bkfleet binary at $bin (set BKFLEET_BIN)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/bkfleet-soak.XXXXXX")
trap 'rm -rf "$work"' EXIT
inv=$work/inventory.toml
{
  cat <<TOML
version = 1
[defaults]
user = "root"
identity_file = "$client/id_ed25519"
known_hosts = "$client/known_hosts"
verify_timeout = 45
lock_timeout = 120
[tokens.default]
file = "$client/tokens/default.token"
[ssh_keys.deploy]
file = "$client/id_ed25519"
[agents.builder]
token = "default"
ssh_key = "deploy"
tags = { queue = "nix" }
extra_config = "endpoint=https://agent.buildkite.test/v3"
TOML
  for h in $hosts; do
    n=${h##*-}; n=$((10#$n))
    printf '[[hosts]]\nname = "%s"\naddress = "10.250.0.%d"\nagents = ["builder"]\n' \
      "$h" $((10 + n))
  done
} > "$inv"

token_sum=$(tr -d '\n' < "$client/tokens/default.token" | sha256sum | cut -c1-64)
# The stored key is the file ending in exactly one newline (OpenSSH needs it).
key_sum=$(python3 -c 'import sys, hashlib
print(hashlib.sha256(open(sys.argv[1], "rb").read().rstrip(b"\n") + b"\n").hexdigest())' \
  "$client/id_ed25519")

# Prints one line per problem found on host $1; nothing when it is sound.
check_host() {
  "$fleet" exec "$1" /bin/sh -c '
    tsum=$1; ksum=$2
    find /etc/nixos /var/lib/bkfleet -name "*bkfleet-tmp*" 2>/dev/null | sed "s/^/tempfile left: /"
    for f in /var/lib/bkfleet/secrets/*/token /var/lib/bkfleet/secrets/*/ssh_key; do
      [ -e "$f" ] || continue
      sum=$(sha256sum < "$f" | cut -c1-64)
      case $f in */token) want=$tsum;; *) want=$ksum;; esac
      [ -s "$f" ] || echo "empty secret: $f"
      [ "$sum" = "$want" ] || echo "partial or wrong secret: $f"
      mode=$(stat -c %a "$f")
      case $mode in 400|440) ;; *) echo "looser mode $mode: $f";; esac
      case $(stat -c %U:%G "$f") in root:root|root:keys|buildkite-agent-*:buildkite-agent-*) ;;
        *) echo "wrong owner $(stat -c %U:%G "$f"): $f";; esac
    done
    for m in /etc/nixos/bkfleet/*.nix; do
      [ -e "$m" ] || continue
      nix-instantiate --parse "$m" >/dev/null 2>&1 || echo "module does not parse: $m"
    done
  ' check "$token_sum" "$key_sum" 2>&1
}

reset_hosts() {
  for h in $hosts; do "$fleet" reset "$h" >/dev/null 2>&1 || echo "fleet reset $h failed" >&2; done
}

max_delay=${SOAK_MAX_DELAY:-}
if [ -z "$max_delay" ]; then
  reset_hosts
  start=$(date +%s)
  "$bin" apply "$inv" >/dev/null 2>&1
  max_delay=$(( $(date +%s) - start + 1 ))
  echo "one apply takes about $max_delay s; killing within that window"
fi

passed=0; failed=0
for i in $(seq 1 "$trials"); do
  reset_hosts
  delay=$(python3 -c "import random;print(round(random.uniform(0, $max_delay), 2))")
  "$bin" apply "$inv" >"$work/killed.out" 2>&1 &
  pid=$!
  sleep "$delay"
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  problems=""
  for h in $hosts; do
    found=$(check_host "$h")
    [ -n "$found" ] && problems="$problems$h: $found"$'\n'
  done
  if ! "$bin" apply "$inv" >"$work/rerun.out" 2>&1; then
    problems="${problems}rerun did not converge: $(tail -n 5 "$work/rerun.out")"$'\n'
  fi
  for h in $hosts; do
    found=$(check_host "$h")
    [ -n "$found" ] && problems="${problems}after rerun $h: $found"$'\n'
    state=$("$fleet" exec "$h" systemctl is-active buildkite-agent-builder 2>&1)
    [ "$state" = active ] || problems="${problems}after rerun $h: agent is $state"$'\n'
  done
  if [ -z "$problems" ]; then
    passed=$((passed + 1))
    echo "trial $i (kill after ${delay}s): ok"
  else
    failed=$((failed + 1))
    printf 'trial %d (kill after %ss): FAILED\n%s' "$i" "$delay" "$problems"
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
