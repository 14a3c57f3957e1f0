// The shell scripts bkfleet runs on a builder, in one place. Each runs under /bin/sh
// with its values as positional arguments (quoted by Shell.quote), needs only what every
// NixOS system has (coreutils, systemd, grep) and prints lines of tab-separated fields
// that Swift parses. A script never receives a secret on its command line; the push
// script reads secret bytes from standard input.

enum RemoteScripts {
    /// Reads the host's state in one round trip. Arguments: module dir, secret dir,
    /// known-hosts-free list of agent names the inventory wants here. Writes nothing.
    /// Records: `hostname`, `now`, `generation`, `config` (configuration.nix, base64),
    /// `module NAME BASE64`, `secretdir AGENT OWNER GROUP MODE`,
    /// `secret AGENT KIND SHA256 OWNER GROUP MODE`, `tempfile PATH`, `user AGENT UID`,
    /// `keysgroup yes|no`, `unit AGENT KEY=VALUE`, `log AGENT LINE`.
    static let probe = #"""
set -u
\#(unitReport)
mdir=$1; sdir=$2; shift 2
printf 'proto\t1\n'
printf 'hostname\t%s\n' "$(cat /proc/sys/kernel/hostname)"
printf 'now\t%s\n' "$(date +%s)"
printf 'generation\t%s\n' "$(readlink /nix/var/nix/profiles/system 2>/dev/null || echo -)"
if [ -f /etc/nixos/configuration.nix ]; then
  printf 'config\t%s\n' "$(base64 -w0 < /etc/nixos/configuration.nix)"
fi
agents=" $* "
if [ -d "$mdir" ]; then
  for f in "$mdir"/*.nix; do
    [ -f "$f" ] || continue
    name=${f##*/}
    printf 'module\t%s\t%s\n' "$name" "$(base64 -w0 < "$f")"
    case $name in default.nix) ;; *) a=${name%.nix}; case $agents in *" $a "*) ;; *) agents="$agents$a ";; esac;; esac
  done
fi
if [ -d "$sdir" ]; then
  printf 'secretroot\t%s\n' "$(stat -c '%U	%G	%a' "$sdir")"
  for d in "$sdir"/*/; do
    [ -d "$d" ] || continue
    a=${d%/}; a=${a##*/}
    case $agents in *" $a "*) ;; *) agents="$agents$a ";; esac
  done
fi
if getent group keys >/dev/null 2>&1; then printf 'keysgroup\tyes\n'; else printf 'keysgroup\tno\n'; fi
for a in $agents; do
  d=$sdir/$a
  if [ -d "$d" ]; then
    printf 'secretdir\t%s\t%s\n' "$a" "$(stat -c '%U	%G	%a' "$d")"
    for kind in token ssh_key; do
      [ -f "$d/$kind" ] || continue
      sum=$(sha256sum < "$d/$kind"); sum=${sum%% *}
      printf 'secret\t%s\t%s\t%s\t%s\n' "$a" "$kind" "$sum" "$(stat -c '%U	%G	%a' "$d/$kind")"
    done
    for t in "$d"/.*.bkfleet-tmp.*; do [ -e "$t" ] && printf 'tempfile\t%s\n' "$t"; done
  fi
  printf 'user\t%s\t%s\n' "$a" "$(id -u "buildkite-agent-$a" 2>/dev/null || echo -)"
  report_unit "$a"
done
printf 'end\n'
"""#

    /// Applies file operations read from standard input, one header line each:
    /// `write PATH OWNER GROUP MODE LENGTH` followed by LENGTH bytes, written to a
    /// temporary file in the same directory (created 0600, filled, chowned, chmodded,
    /// synced), then renamed over PATH; `own PATH OWNER GROUP MODE`; `dir PATH OWNER
    /// GROUP MODE`; `rm PATH`; `rmdir PATH` (a whole agent secret folder); `end`.
    /// Arguments: module dir and secret dir; every path must lie inside one of them.
    /// Interrupted (lost connection, short input), it removes its temporary file.
    static let push = #"""
set -u
umask 077
mdir=$1; sdir=$2
tmp=
trap 'if [ -n "$tmp" ]; then rm -f "$tmp"; fi' EXIT
trap 'exit 1' HUP INT TERM PIPE
inside() {
  case $1 in *..*) return 1;; "$mdir"|"$mdir"/*|"$sdir"|"$sdir"/*) return 0;; *) return 1;; esac
}
for d in "$mdir" "$sdir"; do
  [ -d "$d" ] && find "$d" -maxdepth 2 -name '.*.bkfleet-tmp.*' -type f -delete
  # Parents of the managed folders are ordinary system folders: world-traversable.
  (umask 022 && mkdir -p "${d%/*}") || exit 1
done
while IFS=' ' read -r op path owner group mode len; do
  [ "$op" = end ] && { echo ok; exit 0; }
  inside "$path" || { echo "refusing path outside managed folders: $path" >&2; exit 2; }
  case $op in
    write)
      dir=${path%/*}; base=${path##*/}
      tmp=$(mktemp "$dir/.$base.bkfleet-tmp.XXXXXX") || exit 1
      head -c "$len" > "$tmp"
      got=$(wc -c < "$tmp")
      if [ "$got" -ne "$len" ]; then echo "input ended early for $path" >&2; exit 1; fi
      chown "$owner:$group" "$tmp" && chmod "$mode" "$tmp" && sync "$tmp" \
        && mv -f "$tmp" "$path" && sync "$dir" || exit 1
      tmp= ;;
    own) chown "$owner:$group" "$path" && chmod "$mode" "$path" || exit 1 ;;
    dir)
      mkdir -p "$path" && chown "$owner:$group" "$path" && chmod "$mode" "$path" || exit 1 ;;
    rm) rm -f "$path" || exit 1; sync "${path%/*}" ;;
    rmdir) case $path in "$sdir"/?*) rm -rf "$path" || exit 1;; *) exit 2;; esac ;;
    *) echo "unknown operation $op" >&2; exit 2 ;;
  esac
done
echo "input ended before 'end'" >&2
exit 1
"""#

    /// `plan --deep`: copies /etc/nixos to a private temporary folder, applies the planned
    /// module changes there (standard input: `write NAME LENGTH` + bytes, `rm NAME`,
    /// `end`; NAME inside the module folder), runs `nixos-rebuild dry-activate` against
    /// the copy, and removes the copy whatever happens. The live configuration, the
    /// generations and the units are never touched. Argument: the module folder's path
    /// relative to /etc/nixos.
    static let deepDryRun = #"""
set -u
rel=$1
stage=$(mktemp -d /tmp/bkfleet-deep.XXXXXX) || exit 1
trap 'rm -rf "$stage"' EXIT
trap 'exit 1' HUP INT TERM PIPE
cp -a /etc/nixos/. "$stage/" || exit 1
mkdir -p "$stage/$rel"
while IFS=' ' read -r op name len; do
  case $name in */*|..|.) echo "bad module name $name" >&2; exit 2;; esac
  case $op in
    end) break ;;
    write) head -c "$len" > "$stage/$rel/$name" ;;
    rm) rm -f "$stage/$rel/$name" ;;
    *) echo "unknown operation $op" >&2; exit 2 ;;
  esac
done
nixos-rebuild dry-activate -I "nixos-config=$stage/configuration.nix" 2>&1
"""#

    /// Reports the agents' units and registration log lines since each unit's start, for
    /// verification after a change. Arguments: agent names.
    static let unitState = #"""
set -u
\#(unitReport)
printf 'now\t%s\n' "$(date +%s)"
for a in "$@"; do report_unit "$a"; done
printf 'end\n'
"""#

    /// A shell function shared by the probe and the unit check: the `unit` records of
    /// `systemctl show` for agent $1, and its registration log lines since its start.
    static let unitReport = #"""
report_unit() {
  u=buildkite-agent-$1.service
  systemctl show "$u" --timestamp=unix -p LoadState -p ActiveState -p SubState \
    -p NRestarts -p RootDirectory -p BindReadOnlyPaths -p ExecMainStartTimestamp \
    -p MainPID 2>/dev/null | while IFS= read -r line; do
      printf 'unit\t%s\t%s\n' "$1" "$line"; done
  start=$(systemctl show "$u" --timestamp=unix -p ExecMainStartTimestamp --value 2>/dev/null)
  case $start in @*) journalctl -q -u "$u" --since "$start" -o cat 2>/dev/null \
    | grep -E 'Successfully registered agent|Buildkite rejected the registration' \
    | tail -n 3 | while IFS= read -r line; do printf 'log\t%s\t%s\n' "$1" "$line"; done;;
  esac
}
"""#

    /// Restarts the named units and reports nothing but systemctl's own errors.
    static let restart = #"""
set -u
units=
for a in "$@"; do units="$units buildkite-agent-$a.service"; done
systemctl restart $units
"""#
}
