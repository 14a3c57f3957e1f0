#!/bin/bash
# The fleet-scale benchmark in one command (root, on a machine that can run the test fleet):
# installs what it needs, builds a release bkfleet, starts the test fleet, and prints
# bkfleet against OpenSSH, pyinfra and Ansible (docs/performance.md). It is not a test and
# fails on no figure; it stops the fleet only when asked (--down).
#
# Usage: Tests/bench/run.sh [--commit REV] [--down] [bench.py options, e.g. --runs 3]
#   --commit REV   benchmark that commit (exported with `git archive`) instead of the
#                  working tree
#   --down         run `Tests/Fleet/fleet down` at the end
# Work folder (venv, builds, logs): $BKFLEET_BENCH_DIR, default /var/tmp/bkfleet-bench.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${BKFLEET_BENCH_DIR:-/var/tmp/bkfleet-bench}
hosts=50
light=200
commit=
down=no
pass=()
while [ $# -gt 0 ]; do
    case $1 in
    --commit) commit=${2:?--commit needs a revision}; shift 2 ;;
    --down) down=yes; shift ;;
    --hosts) hosts=${2:?}; pass+=("$1" "$2"); shift 2 ;;
    --light) light=${2:?}; pass+=("$1" "$2"); shift 2 ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) pass+=("$1"); shift ;;
    esac
done

say() { echo "run.sh: $*" >&2; }
[ "$(id -u)" = 0 ] || { say "run as root (the test fleet needs it)"; exit 1; }
mkdir -p "$work"

# 1. Machine packages: what building bkfleet and the fleet need, plus GNU time (max RSS).
"$repo/Tests/install-deps"
if [ ! -x /usr/bin/time ]; then
    say "installing GNU time"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >&2
fi

# 2. The peers, from PyPI, in a private venv (pinned to the versions the targets name).
venv=$work/venv
if ! "$venv/bin/python" -c 'import pyinfra, ansible' 2>/dev/null; then
    say "creating $venv with pyinfra 3.10 and ansible-core 2.19"
    python3 -m venv "$venv" || {
        say "python3 -m venv failed; installing python3-venv"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
        python3 -m venv "$venv"
    }
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q 'pyinfra==3.10.*' 'ansible-core==2.19.*'
fi

# 3. A release build, of the working tree or of --commit.
if [ -n "$commit" ]; then
    rev=$(git -C "$repo" rev-parse --short "$commit")
    src=$work/src-$rev
    if [ ! -d "$src" ]; then
        mkdir -p "$src.tmp"
        git -C "$repo" archive "$rev" | tar -x -C "$src.tmp"
        mv "$src.tmp" "$src"
    fi
    scratch=$work/build-$rev
else
    src=$repo
    scratch=$work/build
fi
say "building bkfleet (release) from $src"
# The Swift runtime and Foundation linked in, as a release for operators is built: only
# what bkfleet uses gets mapped, about 6 MB less resident memory than the shared libraries.
(cd "$src" && swift build -c release --static-swift-stdlib --scratch-path "$scratch" >&2)
bin=$scratch/release/bkfleet
export BKFLEET_TEMPLATES=$src/templates

# 4. The test fleet: starts missing hosts, keeps running ones.
say "starting the test fleet: $hosts full hosts, $light light hosts"
"$repo/Tests/Fleet/fleet" up "$hosts" --light "$light" >"$work/fleet-up.log" ||
    { say "fleet up failed; see $work/fleet-up.log"; exit 1; }

# 5. The measurements.
version=${rev:-$(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?')}
echo "bkfleet $version, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
rc=0
python3 "$repo/Tests/bench/bench.py" --repo "$repo" --work "$work" --bkfleet "$bin" \
    ${pass[@]+"${pass[@]}"} || rc=$?

if [ $down = yes ]; then
    "$repo/Tests/Fleet/fleet" down >&2
fi
exit $rc
