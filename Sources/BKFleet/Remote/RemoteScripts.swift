// The shell scripts bkfleet runs on a builder, in one place. Each runs under /bin/sh
// with its values as positional arguments (quoted by Shell.quote), needs only what every
// NixOS system has (coreutils, systemd, grep) and prints lines of tab-separated fields
// that Swift parses. A script never receives a secret on its command line; the push
// script reads secret bytes from standard input.

enum RemoteScripts {
    /// Reads the host's state in one round trip. Arguments: module dir, secret dir,
    /// which agent log lines to read (`all`, or `trouble`: only for a unit not running,
    /// when the Buildkite API confirms registrations), then the agent names the inventory
    /// wants here. Writes nothing. Records: `hostname`, `generation`, `config`
    /// (configuration.nix, base64), `module NAME BASE64`, `secretdir AGENT OWNER GROUP
    /// MODE`, `secret AGENT KIND SHA256 OWNER GROUP MODE`, `tempfile PATH`, `moduletemp
    /// PATH`, `user AGENT UID` (agents whose user exists), `keysgroup yes|no`, `unit AGENT
    /// KEY=VALUE`, `log AGENT LINE`, `secretmtime AGENT KIND EPOCH`, `lastapply KEY=VALUE`
    /// (a line of the run record).
    /// Every program started costs the host a few milliseconds (most of a converged run's
    /// cost), so the script prefers the shell's builtins and asks systemd once per host.
    static let probe = #"""
set -u
\#(unitReport)
mdir=$1; sdir=$2; logs=$3; shift 3
nl='
'
# Leftover temporary files: a name an agent user chose may hold a line break or a tab,
# which would forge records, so such a name is shown as a placeholder (the push removes
# the file by its real name). Folders are not reported: the push removes only files.
say_temp() {
  [ -f "$2" ] || [ -L "$2" ] || return 0
  case $2 in
    *"$nl"*|*"	"*) printf '%s\t%s/(a name with a line break or tab)\n' "$1" "${2%/*}" ;;
    *) printf '%s\t%s\n' "$1" "$2" ;;
  esac
}
printf 'proto\t1\n'
read -r hn < /proc/sys/kernel/hostname
printf 'hostname\t%s\n' "$hn"
if [ -f /etc/nixos/configuration.nix ]; then
  printf 'config\t%s\n' "$(base64 -w0 < /etc/nixos/configuration.nix)"
fi
agents=" $* "
# Each managed folder is `absent`, `empty`, `marked` (bkfleet made it: it holds the
# .bkfleet marker) or `foreign` (it holds other things): bkfleet lists, changes and
# removes only inside folders that are absent, empty or marked.
for d in "$mdir" "$sdir"; do
  if [ ! -e "$d" ]; then st=absent
  elif [ -f "$d/.bkfleet" ]; then st=marked
  elif [ -d "$d" ] && [ -z "$(ls -A "$d" 2>/dev/null)" ]; then st=empty
  else st=foreign; fi
  printf 'folder\t%s\t%s\n' "$d" "$st"
done
if [ -f "$mdir/.bkfleet-switch-pending" ]; then printf 'pending\tyes\n'; fi
for t in "$mdir"/.*.bkfleet-tmp.*; do say_temp moduletemp "$t"; done
if [ -f "$mdir/.bkfleet" ]; then
  for f in "$mdir"/*.nix; do
    [ -f "$f" ] || continue
    name=${f##*/}
    printf 'module\t%s\t%s\n' "$name" "$(base64 -w0 < "$f")"
    case $name in default.nix) ;; *) a=${name%.nix}; case $agents in *" $a "*) ;; *) agents="$agents$a ";; esac;; esac
  done
fi
# Paths whose owner, group, mode and time one `stat` reports at the end (every program
# started costs the host a few milliseconds): the system profile (its target is the
# generation), the secret folder, each agent's folder and secret files.
paths=/nix/var/nix/profiles/system
if [ -f "$sdir/.bkfleet" ]; then
  paths="$paths $sdir"
  for d in "$sdir"/*/; do
    [ -d "$d" ] || continue
    a=${d%/}; a=${a##*/}
    case $agents in *" $a "*) ;; *) agents="$agents$a ";; esac
  done
fi
if [ -f \#(runRecord) ]; then
  while IFS= read -r l || [ -n "$l" ]; do printf 'lastapply\t%s\n' "$l"; done < \#(runRecord)
fi
if getent group keys >/dev/null 2>&1; then printf 'keysgroup\tyes\n'; else printf 'keysgroup\tno\n'; fi
users= files=
for a in $agents; do
  users="$users buildkite-agent-$a"
  d=$sdir/$a
  if [ -L "$d" ]; then
    # A link in place of an agent's folder: reported as no folder of the agent's, so the
    # plan makes a fresh one; nothing is read through the link.
    printf 'secretdir\t%s\tsymlink\tsymlink\t0\n' "$a"
  elif [ -d "$d" ]; then
    paths="$paths $d"
    for kind in token ssh_key; do
      # A link, folder or fifo where a secret belongs (a build job can plant one in its
      # agent's folder) is reported without reading it; the plan replaces it.
      if [ -L "$d/$kind" ] || { [ -e "$d/$kind" ] && [ ! -f "$d/$kind" ]; }; then
        paths="$paths $d/$kind"
      elif [ -f "$d/$kind" ]; then
        paths="$paths $d/$kind" files="$files $d/$kind"
      fi
    done
    for t in "$d"/.*.bkfleet-tmp.*; do say_temp tempfile "$t"; done
  fi
done
# The folders and paths here are checked by bkfleet to hold no blanks or wildcards, so
# the lists split into words safely. sha256sum prints `HASH  PATH` lines.
sums=
[ -z "$files" ] || sums=$(sha256sum $files 2>/dev/null)$nl
QUOTING_STYLE=literal stat -c '%n	%U	%G	%a	%Y	%F	%N' $paths 2>/dev/null |
  while IFS='	' read -r p u g m t ty link; do
    case $p in
      /nix/var/nix/profiles/system)
        case $link in *" -> "*) printf 'generation\t%s\n' "${link#* -> }" ;; esac ;;
      "$sdir") printf 'secretroot\t%s\t%s\t%s\n' "$u" "$g" "$m" ;;
      "$sdir"/*/*)
        r=${p#"$sdir"/}; a=${r%%/*}; kind=${r#*/}
        case $ty in
          "regular file"|"regular empty file")
            # A file gone since it was hashed is left out, as if absent.
            case $sums in *"  $p$nl"*) ;; *) continue ;; esac
            h=${sums%%"  $p$nl"*}; h=${h##*"$nl"}
            printf 'secret\t%s\t%s\t%s\t%s\t%s\t%s\n' "$a" "$kind" "$h" "$u" "$g" "$m"
            printf 'secretmtime\t%s\t%s\t%s\n' "$a" "$kind" "$t" ;;
          *) printf 'secret\t%s\t%s\tnot-a-regular-file\t%s\t%s\t%s\n' "$a" "$kind" \
               "$u" "$g" "$m" ;;
        esac ;;
      "$sdir"/*) printf 'secretdir\t%s\t%s\t%s\t%s\n' "${p#"$sdir"/}" "$u" "$g" "$m" ;;
    esac
  done
# One lookup for every agent's user; an agent without a user gets no `user` record.
if [ -n "$users" ]; then
  getent passwd $users 2>/dev/null | while IFS=: read -r u _ uid _; do
    printf 'user\t%s\t%s\n' "${u#buildkite-agent-}" "$uid"; done
fi
report_units "$logs" $agents
printf 'end\n'
"""#

    /// Applies file operations read from standard input, one header line each:
    /// `write PATH OWNER GROUP MODE LENGTH` followed by LENGTH bytes, written to a
    /// temporary file in the same directory (created 0600, filled, chowned, chmodded,
    /// synced), then renamed over PATH; `own PATH OWNER GROUP MODE`; `dir PATH OWNER
    /// GROUP MODE` (owner and mode set only where they differ); `mark PATH` (an empty
    /// marker file in the module folder, made if missing); `rm PATH`; `rmdir PATH` (a whole
    /// agent secret folder); `rmdata AGENT` (a removed agent's data folder,
    /// /var/lib/buildkite-agent-AGENT); `end`.
    /// Arguments: module dir and secret dir; every path must lie inside one of them.
    /// Optional third argument: this run's backup folder (root-only): before a path is
    /// first replaced, removed or re-owned, its current file (or a `.absent` marker) is
    /// copied there, so that a rollback can put it back. Other runs' backups stay: a run
    /// that died before its host verified left the last verified state there, and only a
    /// run that verifies (dropBackup) may remove it.
    /// Interrupted (lost connection, short input), it removes its temporary file.
    static let push = #"""
set -u
umask 077
mdir=$1; sdir=$2; bdir=${3:-}
tmp=
trap 'if [ -n "$tmp" ]; then rm -f "$tmp"; fi' EXIT
trap 'exit 1' HUP INT TERM PIPE
inside() {
  case $1 in *..*) return 1;; "$mdir"|"$mdir"/*|"$sdir"|"$sdir"/*) return 0;; *) return 1;; esac
}
backup() {
  [ -n "$bdir" ] || return 0
  rec=$bdir/files$1
  if [ -e "$rec" ] || [ -e "$rec.absent" ]; then return 0; fi
  [ -d "${rec%/*}" ] || mkdir -p "${rec%/*}" || return 1
  # Only regular files are kept; anything else (a planted link) is not read through and
  # rolls back to absent.
  if [ -L "$1" ] || { [ -e "$1" ] && [ ! -f "$1" ]; }; then
    : > "$rec.absent" || return 1
  elif [ -f "$1" ]; then
    tmp=$rec.bkfleet-tmp
    cp -p "$1" "$tmp" && sync "$tmp" && mv -f "$tmp" "$rec" || return 1
    tmp=
  elif [ ! -e "$1" ]; then
    : > "$rec.absent" || return 1
  fi
}
# Every program started costs the host a few milliseconds: the shell's own tests and
# globs come first, programs only where something is to be done.
for d in "$mdir" "$sdir"; do
  # Temporary files a killed run left behind (they may hold a secret's bytes).
  for t in "$d"/.*.bkfleet-tmp.* "$d"/*/.*.bkfleet-tmp.*; do
    if [ -f "$t" ] || [ -L "$t" ]; then rm -f "$t" || exit 1; fi
  done
  # Parents of the managed folders are ordinary system folders: world-traversable.
  [ -d "${d%/*}" ] || (umask 022 && mkdir -p "${d%/*}") || exit 1
done
# (A killed run's copies in progress in the backups are skipped by `restore` and go with
# the backups themselves.)
if [ -n "$bdir" ] && [ -L "${bdir%/*}" ]; then
  echo "${bdir%/*} is a link, not a folder: bkfleet keeps no backups through it;" \
    "make it a root-only folder" >&2
  exit 2
fi
[ -z "$bdir" ] || [ -d "$bdir" ] || mkdir -p "$bdir" || exit 1
while IFS=' ' read -r op path owner group mode len; do
  [ "$op" = end ] && { echo ok; exit 0; }
  if [ "$op" = rmdata ]; then
    # A removed agent's data folder holds the copy of its token that NixOS's pre-start
    # writes (buildkite-agent.cfg) and of its SSH key: it goes with the agent.
    case $path in *[!a-z0-9-]*|"") echo "bad agent name $path" >&2; exit 2;; esac
    rm -rf "/var/lib/buildkite-agent-$path" || exit 1
    continue
  fi
  inside "$path" || { echo "refusing path outside managed folders: $path" >&2; exit 2; }
  case $op in
    write|rm|own|mark) backup "$path" || exit 1 ;;
    rmdir) for f in "$path"/*; do [ -f "$f" ] && { backup "$f" || exit 1; }; done ;;
  esac
  case $op in
    write)
      dir=${path%/*}; base=${path##*/}
      # A folder where a file belongs is removed; a link or fifo is replaced by the
      # rename itself (-T: never into whatever a link points at).
      if [ -d "$path" ] && [ ! -L "$path" ]; then rm -rf "$path" || exit 1; fi
      tmp=$(mktemp "$dir/.$base.bkfleet-tmp.XXXXXX") || exit 1
      head -c "$len" > "$tmp"
      got=$(wc -c < "$tmp")
      if [ "$got" -ne "$len" ]; then echo "input ended early for $path" >&2; exit 1; fi
      # A new file in the (root's) module folder is root's already.
      case $path:$owner:$group in
        "$mdir"/*:root:root) ;;
        *) chown -h "$owner:$group" "$tmp" || exit 1 ;;
      esac
      [ ! -L "$tmp" ] && chmod "$mode" "$tmp" && sync "$tmp" && mv -fT "$tmp" "$path" \
        && sync "$dir" || exit 1
      tmp= ;;
    mark)
      # An empty file whose being there is all it says (root's, in the module folder):
      # made durable before anything after it is written.
      case $path in "$mdir"/*) ;; *) echo "refusing to mark $path" >&2; exit 2 ;; esac
      if [ -L "$path" ] || [ ! -f "$path" ]; then
        rm -rf "$path" && : > "$path" && sync "${path%/*}" || exit 1
      fi ;;
    own)
      # Never re-own through a link (a build job may swap its token for a link to
      # another agent's): such a path is planned as a replacement, so refuse here.
      # LIMITATION: a job racing between this test and chmod is not excluded.
      if [ -L "$path" ] || { [ ! -f "$path" ] && [ ! -d "$path" ]; }; then
        echo "refusing to change owner of $path: not a regular file or folder;" \
          "rerun apply to replace it" >&2; exit 2
      fi
      chown -h "$owner:$group" "$path" && [ ! -L "$path" ] && chmod "$mode" "$path" \
        || exit 1 ;;
    dir)
      if [ -L "$path" ] || { [ -e "$path" ] && [ ! -d "$path" ]; }; then
        rm -f "$path" || exit 1
      fi
      [ -d "$path" ] || mkdir -p "$path" || exit 1
      # Owner and mode are set where they differ.
      [ "$(stat -c '%U %G %a' "$path")" = "$owner $group $mode" ] \
        || { chown -h "$owner:$group" "$path" && chmod "$mode" "$path"; } || exit 1 ;;
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

    /// Reports the agents' units (and log lines, as the probe does) for verification
    /// after a change. Arguments: `all` or `trouble` (see `probe`), then agent names.
    static let unitState = #"""
set -u
\#(unitReport)
logs=$1; shift
printf 'now\t%s\n' "$(date +%s)"
report_units "$logs" "$@"
printf 'end\n'
"""#

    /// A shell function shared by the probe and the unit check. `report_units MODE
    /// AGENT...` prints the `unit AGENT KEY=VALUE` records of one `systemctl show` for
    /// all the agents' units, then each agent's registration log lines since its unit
    /// started (`log AGENT LINE`, the last three): for every agent with MODE `all`, with
    /// `trouble` only for a unit that is not active and running.
    static let unitReport = #"""
report_units() {
  mode=$1; shift
  [ $# -gt 0 ] || return 0
  units=
  for a in "$@"; do units="$units buildkite-agent-$a.service"; done
  # systemctl prints one block per unit, blank lines between, its properties in
  # systemd's own order: a block is kept until its end, when its Id is known.
  { systemctl show $units --timestamp=unix -p Id -p LoadState -p ActiveState \
      -p SubState -p NRestarts -p RootDirectory -p BindReadOnlyPaths \
      -p ExecMainStartTimestamp -p MainPID 2>/dev/null; echo; } | {
    set -f
    nl='
'
    block= id= start= active= sub=
    while IFS= read -r line; do
      if [ -n "$line" ]; then
        case $line in
          Id=*) id=${line#Id=} ;;
          *) block=$block$line$nl
             case $line in
               ExecMainStartTimestamp=*) start=${line#*=} ;;
               ActiveState=*) active=${line#*=} ;;
               SubState=*) sub=${line#*=} ;;
             esac ;;
        esac
        continue
      fi
      [ -n "$id" ] || continue
      a=${id#buildkite-agent-}; a=${a%.service}
      old=$IFS; IFS=$nl
      for l in $block; do printf 'unit\t%s\t%s\n' "$a" "$l"; done
      IFS=$old
      case $mode/$active/$sub in trouble/active/running) ;; *)
        case $start in @*) journalctl -q -u "$id" --since "$start" -o cat 2>/dev/null \
          | grep -E 'Successfully registered agent|Buildkite rejected the registration' \
          | tail -n 3 | while IFS= read -r l; do printf 'log\t%s\t%s\n' "$a" "$l"; done ;;
        esac ;;
      esac
      block= id= start= active= sub=
    done
  }
}
"""#

    /// Where a successful apply or retire leaves its run record: `key=value` lines
    /// (time, run, operator, action, version). Not secret; read back by the probe.
    static let runRecord = "/var/lib/bkfleet/last-apply"

    /// Where each run keeps its backups (`backupRoot/RUN`) until its host verified.
    static let backupRoot = "/var/lib/bkfleet/backup"

    /// Restarts the named units and reports nothing but systemctl's own errors.
    static let restart = #"""
set -u
units=
for a in "$@"; do units="$units buildkite-agent-$a.service"; done
systemctl restart $units
"""#

    // MARK: - Faults: host lock, detached rebuild, rollback

    /// Takes the host lock, an flock on /run/bkfleet.lock held by this script's process
    /// for as long as its standard input stays open: when bkfleet ends, or its connection
    /// or process dies, sshd closes that input and the lock goes with it, so a killed
    /// run never leaves a lock behind. Arguments: seconds to wait, run id, holder text
    /// (operator machine, pid, start time), then the caller's own. Prints `lockwait
    /// HOLDER` while it waits, `lockbusy HOLDER` and exits 75 when time runs out. A lock
    /// held by the same run id (its connection dropped but the host has not noticed yet)
    /// is taken over by ending that holder. Also prints `stalebackup PATH` for backups
    /// left by runs that died. Continue with a body, then `lockHold`.
    static let lockTake = #"""
set -u
lwait=$1; lrun=$2; lwho=$3; shift 3
lock=/run/bkfleet.lock
umask 077
exec 9>>"$lock" || { echo "cannot open $lock" >&2; exit 1; }
holder() { tr '\n\t' '  ' < "$lock"; }
if ! flock -n 9; then
  h=$(holder)
  case $h in "run=$lrun "*)
    old=${h##*holder-pid=}; old=${old%% *}
    if [ -n "$old" ] && grep -q bkfleet-lock "/proc/$old/cmdline" 2>/dev/null; then
      kill "$old" 2>/dev/null
    fi;;
  esac
  printf 'lockwait\t%s\n' "$h"
  if ! flock -w "$lwait" 9; then printf 'lockbusy\t%s\n' "$(holder)"; exit 75; fi
fi
printf 'run=%s %s holder-pid=%s\n' "$lrun" "$lwho" "$$" > "$lock"
printf 'locked\n'
# Backups left by a run that died before verifying (they hold old secret copies).
[ -L \#(backupRoot) ] ||
  for b in \#(backupRoot)/*; do [ -e "$b" ] && printf 'stalebackup\t%s\n' "$b"; done
umask 022
"""#

    /// The end of every lock script: says `end`, then holds the lock until standard
    /// input closes, and marks the lock file free. What a run that converged the host
    /// sends on that input first is done before the lock is let go, on `commit`:
    /// `unmark PATH` removes the pending-switch mark, `dropbackups` every run's backups
    /// (this host verified), lines `record KEY=VALUE` become the run record, written
    /// whole. Exit status 3 says one of them failed.
    /// Reading with the shell's own `read` starts no program, so none of this costs a
    /// converged host a command of its own.
    static let lockHold = #"""
printf 'end\n'
rec= drop= mark= rc=0
while IFS= read -r line; do
  case $line in
    "record "*) rec="$rec${line#record }
" ;;
    dropbackups) drop=yes ;;
    "unmark "*) mark=${line#unmark } ;;
    commit)
      # fd 9 (the lock) stays with this shell alone, so a takeover can end it.
      case $mark in */.bkfleet-switch-pending) rm -f "$mark" 9>&- || rc=3 ;; esac
      # Only a real folder: a link there is left alone, and nothing behind it removed.
      if [ -n "$drop" ] && [ -d \#(backupRoot) ] && [ ! -L \#(backupRoot) ]; then
        for b in \#(backupRoot)/*; do [ -e "$b" ] && { rm -rf "$b" 9>&- || rc=3; }; done
      fi
      if [ -n "$rec" ]; then
        f=\#(runRecord)
        t=$f.bkfleet-tmp.$$
        if { [ -d "${f%/*}" ] || mkdir -p "${f%/*}" 9>&-; } && printf '%s' "$rec" > "$t" \
          && mv -fT "$t" "$f" 9>&-; then :; else rm -f "$t" 9>&-; rc=3; fi
      fi ;;
  esac
done
: > "$lock"
exit $rc
"""#

    /// The probe under the host lock, in one round trip (apply only; plan takes no lock).
    static let lockedProbe = lockTake + "\n" + probe + "\n" + lockHold

    /// The lock alone, taken again after a reconnect.
    static let lockOnly = lockTake + "\n" + lockHold

    /// Starts the rebuild as a transient systemd unit `bkfleet-rebuild-RUN` (or
    /// `bkfleet-rollback-RUN`), so that a dropped connection cannot stop a switch half
    /// way, then waits for it in the same round trip (`rebuildWaitBody`). Output goes to
    /// DIR/RUN/KIND.log, the exit status to DIR/RUN/KIND.status (written whole, by
    /// rename). Keeps the ten newest run folders. Arguments: run id, runs folder, kind
    /// (`rebuild` or `rollback`), the command, seconds to wait. Starting twice is a no-op;
    /// while an earlier run's rebuild unit is still active it prints `busy UNIT` and
    /// stops, otherwise `started` and then what the wait prints.
    static let rebuildStart = #"""
set -u
run=$1; dir=$2; kind=$3; cmd=$4; max=$5
umask 077
rd=$dir/$run; unit=bkfleet-$kind-$run
[ -d "$rd" ] || mkdir -p "$rd" || exit 1
chmod 700 "$dir" || exit 1
n=0; for f in "$dir"/*; do n=$((n + 1)); done
if [ "$n" -gt 10 ]; then
  ls -1t "$dir" | tail -n +11 | while IFS= read -r old; do
    [ "$dir/$old" = "$rd" ] || rm -rf "${dir:?}/$old"; done
fi
if [ ! -e "$rd/$kind.status" ]; then
  # One look at the active rebuild units: this run's own may be going already (a start
  # repeated after a reconnect); a killed run's must end first, never two at once.
  active=$(systemctl list-units --plain --no-legend --state=active 'bkfleet-rebuild-*' \
    'bkfleet-rollback-*' 2>/dev/null)
  mine= other=
  while read -r u _; do
    case $u in "$unit.service") mine=yes ;; ?*) other=${other:-$u} ;; esac
  done <<EOF
$active
EOF
  if [ -z "$mine" ]; then
    if [ -n "$other" ]; then echo "busy $other"; exit 0; fi
    set -- --setenv=PATH="$PATH"
    [ -n "${NIX_PATH:-}" ] && set -- "$@" --setenv=NIX_PATH="$NIX_PATH"
    # The unit holds an flock on KIND.lock while it runs, so the wait sleeps in the
    # kernel until it ends instead of asking over and over.
    # -o: what the command leaves running does not keep holding it.
    systemd-run --quiet --collect --unit="$unit" "$@" flock -o "$rd/$kind.lock" /bin/sh -c \
      '/bin/sh -c "$3" > "$1/$2.log" 2>&1; echo $? > "$1/$2.status.tmp"
       mv -f "$1/$2.status.tmp" "$1/$2.status"' \
      bkfleet-rebuild "$rd" "$kind" "$cmd" || exit 1
  fi
fi
echo started
\#(rebuildWaitBody)
"""#

    /// Waits up to SECONDS more for a detached rebuild to end (after a reconnect, or when
    /// the first wait ran out). Arguments: run id, runs folder, kind, seconds.
    static let rebuildWait = #"""
set -u
run=$1; dir=$2; kind=$3; max=$4
rd=$dir/$run; unit=bkfleet-$kind-$run
\#(rebuildWaitBody)
"""#

    /// Waits up to $max seconds for the rebuild of $rd/$kind. Prints `running`, or `lost`
    /// (the unit is gone without a status: killed), or `status N`, `generation G`,
    /// `output` followed by the command's output.
    static let rebuildWaitBody = #"""
# While the unit holds KIND.lock, flock waits for its end without using the CPU the
# rebuild needs. Otherwise (not started yet, gone, or started by a bkfleet without the
# lock) the status file is looked for every 0.2 s, the unit asked after once a second.
i=0; gone=0
while [ ! -e "$rd/$kind.status" ]; do
  if [ -e "$rd/$kind.lock" ]; then
    left=$((max - i / 5))
    [ "$left" -gt 0 ] || { echo running; exit 0; }
    flock -s -w "$left" "$rd/$kind.lock" true 2>/dev/null || { echo running; exit 0; }
    [ -e "$rd/$kind.status" ] && break
  fi
  if [ $((i % 5)) -eq 0 ]; then
    if systemctl is-active -q "$unit"; then gone=0; else gone=$((gone + 1)); fi
    if [ "$gone" -ge 3 ] && [ ! -e "$rd/$kind.status" ]; then echo lost; exit 0; fi
  fi
  if [ "$i" -ge $((max * 5)) ]; then echo running; exit 0; fi
  # A sleep without fractions (not coreutils) fails at once: then wait whole seconds.
  sleep 0.2 2>/dev/null || { sleep 1; i=$((i + 4)); }
  i=$((i + 1))
done
read -r st < "$rd/$kind.status"
printf 'status\t%s\n' "$st"
printf 'generation\t%s\n' "$(readlink /nix/var/nix/profiles/system 2>/dev/null || echo -)"
echo output
cat "$rd/$kind.log" 2>/dev/null
"""#

    /// Puts back what a run's push replaced: every file saved in the backup folder is
    /// copied back atomically (temporary file, sync, rename), every `.absent` marker's
    /// path is removed (except the `.bkfleet` folder markers). Backups of earlier runs
    /// that never verified (killed) are restored after this run's, newest first, so each
    /// path ends as the earliest of them saved it: the last verified state. Arguments:
    /// this run's backup folder. Prints `restored N`, then `earlier K` (backups of
    /// unverified earlier runs used) and `noindex` when a module index was put back to
    /// absent.
    static let restore = #"""
set -u
umask 077
bdir=$1
tmp=
trap 'if [ -n "$tmp" ]; then rm -f "$tmp"; fi' EXIT
trap 'exit 1' HUP INT TERM PIPE
n=0; k=0; noindex=
# Run ids begin with a UTC timestamp: reverse name order is newest first.
for b in $(ls -1r "${bdir%/*}" 2>/dev/null); do
  b=${bdir%/*}/$b
  [ "$b" = "$bdir" ] || [ "$b" \< "$bdir" ] || continue
  [ -d "$b/files" ] || continue
  [ "$b" = "$bdir" ] || k=$((k + 1))
  for rec in $(cd "$b/files" && find . -type f ! -name '*.bkfleet-tmp' | sort); do
    p=${rec#.}
    case $p in
      # A folder bkfleet made stays marked as bkfleet's, so later runs may use it.
      */.bkfleet.absent) continue ;;
      */default.nix.absent) rm -f "${p%.absent}" || exit 1; noindex=yes ;;
      *.absent) rm -f "${p%.absent}" || exit 1 ;;
      *)
        case $p in */default.nix) noindex= ;; esac
        # A path that is no regular file now (a link a job planted) is replaced, not
        # written through.
        if [ -L "$p" ] || { [ -e "$p" ] && [ ! -f "$p" ]; }; then rm -rf "$p" || exit 1; fi
        mkdir -p "${p%/*}" || exit 1
        tmp=$(mktemp "${p%/*}/.${p##*/}.bkfleet-tmp.XXXXXX") || exit 1
        cp -p "$b/files$p" "$tmp" && sync "$tmp" && mv -f "$tmp" "$p" || exit 1
        tmp= ;;
    esac
    n=$((n + 1))
  done
done
sync
echo "restored $n"
echo "earlier $k"
[ -z "$noindex" ] || echo noindex
"""#

}
