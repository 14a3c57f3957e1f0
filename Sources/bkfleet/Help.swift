// Each command's help text, with examples. Kept beside the command table so a new
// option is documented where it is parsed.

enum Help {
    static func text(for command: String) -> String? {
        switch command {
        case "apply": return apply
        case "plan": return plan
        case "rotate": return RotateCommand.help
        case "check": return check
        case "render": return render
        case "hosts": return hosts
        case "status": return status
        case "retire": return retire
        case "completion": return completion
        case "help": return help
        default: return nil
        }
    }

    static let apply = """
        Usage: bkfleet apply [INVENTORY | PLAN-FILE] [OPTIONS]

        Makes every host run exactly the agents the inventory gives it: pushes each
        agent's token and SSH key (owner the agent's user, mode 0400), writes one NixOS
        module per agent, runs the rebuild, and verifies each agent is running,
        confined and registered with Buildkite.

        Options:
          --dry-run                 show the plan and change nothing (same as 'plan';
                                    with a PLAN-FILE: check it against the hosts now)
          --deep                    with --dry-run: ask NixOS (dry-activate) about the
                                    staged modules, as 'plan --deep' does
          --accept-new-host-keys    record unknown host keys in known_hosts (trust on
                                    first use); a changed key is always refused
          --no-rollback             a host that fails after its first write is left as
                                    it is for inspection instead of rolled back
          --parallel N              hosts in flight at once (default: inventory's
                                    'parallel', 50)
          --on SELECTION            only these hosts, comma-separated: names, globs
                                    ('builder-*'), @key=value for host tags, groups
                                    (@group=eu) and agent tags (@queue=nix)
          --shard K/N               only shard K (from 0) of N of the selected hosts,
                                    by a hash of the name; defaults to Buildkite's
                                    BUILDKITE_PARALLEL_JOB/BUILDKITE_PARALLEL_JOB_COUNT
          --batch N | P%            hosts per batch; a batch starts when the previous
                                    one has finished (--parallel still bounds each)
          --max-fail N | P%         failures tolerated (of the selected hosts); once
                                    exceeded no new host starts and the rest are
                                    reported as not attempted (exit code 1)
          --verbose, -v             print each step as it happens (above the live
                                    view on a terminal, as plain lines elsewhere)
          --no-color                no colours (also: the NO_COLOR variable)
          --json                    one JSON object per event on stdout, then a
                                    summary object (docs/events.md); no table

        On a terminal, a live line per host in flight (step, time so far) and a
        progress bar are redrawn in place, then the table of results. Off a terminal
        only the results are printed, unless -v. Per-host logs go under
        .bkfleet/runs/TIME/ beside the inventory; the last line names the folder.

        Given a plan saved with 'bkfleet plan --out FILE', applies exactly that plan:
        a host whose state, or whose rendered modules or secrets, changed since is
        refused with what drifted; an inventory changed since refuses the whole plan.

        Examples:
          bkfleet apply inventory/demo.toml
          bkfleet apply --on 'builder-0*' --parallel 10
          bkfleet apply --on @queue=nix --batch 25% --max-fail 2
          bkfleet plan --out reviewed.json && bkfleet apply reviewed.json
          bkfleet apply --json | jq -c 'select(.status == "failed")'
        """

    static let plan = """
        Usage: bkfleet plan [INVENTORY] [OPTIONS]

        Connects to every host, reads its state and shows what 'apply' would change:
        module diffs, secrets by fingerprint, ownership repairs and unit actions.
        Writes nothing to any host.

        Options:
          --detailed-exitcode       exit 0 when nothing would change, 2 when changes are
                                    pending, 1 on errors
          --out FILE                also save the plan (no secret values) for
                                    'bkfleet apply FILE'
          --json                    print the plan as one JSON document
                                    (docs/plan-format.md)
          --deep                    also stage the new modules in a temporary copy of
                                    /etc/nixos on each changing host and show what
                                    'nixos-rebuild dry-activate' says; the copy is
                                    removed afterwards
          --accept-new-host-keys, --parallel N, --on SELECTION, --shard K/N,
          --no-color: as for apply

        Examples:
          bkfleet plan inventory/demo.toml --detailed-exitcode
          bkfleet plan --on builder-02 --deep
          bkfleet plan --out reviewed.json
          bkfleet plan --json | jq '.hosts[].name'
        """

    static let check = """
        Usage: bkfleet check [INVENTORY] [--on SELECTION] [--shard K/N] [--parse]

        Validates the inventory without connecting anywhere and renders every host's
        modules. Errors name file:line:column and suggest a fix. With --on or
        --shard (as for apply), renders only those hosts and lists them, so a
        selection can be tried before it is used.

        With --parse, also parses each distinct rendered module with a local
        'nix-instantiate --parse' (in a private temporary folder, removed afterwards)
        and reports FILE:LINE:COLUMN errors with the hosts and agent that would get
        the file. Without Nix installed it says so and exits 69.

        Examples:
          bkfleet check inventory/example.toml
          bkfleet check inventory/example.toml --on @queue=nix --shard 0/4
          bkfleet check --parse
        """

    static let render = """
        Usage: bkfleet render [INVENTORY] --host NAME

        Prints the module files that 'apply' would write to host NAME.

        Examples:
          bkfleet render inventory/demo.toml --host builder-01
          bkfleet render --host builder-01 > /tmp/builder-01.nix
        """

    static let hosts = """
        Usage: bkfleet hosts [INVENTORY]

        Prints the inventory's host names, one per line, in inventory order. Shell
        completion uses it; so can scripts.

        Examples:
          bkfleet hosts inventory/demo.toml
          for h in $(bkfleet hosts); do ssh "$h" uptime; done
        """

    static let completion = """
        Usage: bkfleet completion bash|zsh|fish

        Prints a completion script: commands, each command's options, and host names
        (from 'bkfleet hosts') after --on and --host.

        Examples:
          source <(bkfleet completion bash)          # in ~/.bashrc
          bkfleet completion bash > /usr/share/bash-completion/completions/bkfleet
          bkfleet completion zsh > "${fpath[1]}/_bkfleet"
          bkfleet completion fish > ~/.config/fish/completions/bkfleet.fish
        """

    static let help = """
        Usage: bkfleet help [COMMAND]

        Prints the list of commands, or one command's help (same as COMMAND --help).

        Examples:
          bkfleet help
          bkfleet help apply
        """
}
