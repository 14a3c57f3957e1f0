// Each command's help text, with examples. Kept beside the command table so a new
// option is documented where it is parsed.

enum Help {
    static func text(for command: String) -> String? {
        switch command {
        case "apply": return apply
        case "plan": return plan
        case "check": return check
        case "render": return render
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
          --dry-run                 show the plan and change nothing (same as 'plan')
          --accept-new-host-keys    record unknown host keys in known_hosts (trust on
                                    first use); a changed key is always refused
          --parallel N              hosts in flight at once (default: inventory's
                                    'parallel', 50)
          --on SELECTION            only these hosts: names or globs, comma-separated
          --verbose, -v             print each step as it happens
          --no-color                plain output even on a terminal

        Given a plan saved with 'bkfleet plan --out FILE', applies exactly that plan:
        a host whose state, or whose rendered modules or secrets, changed since is
        refused with what drifted; an inventory changed since refuses the whole plan.

        Examples:
          bkfleet apply inventory/demo.toml
          bkfleet apply --on 'builder-0*' --parallel 10
          bkfleet plan --out reviewed.json && bkfleet apply reviewed.json
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
          --accept-new-host-keys, --parallel N, --on SELECTION, --no-color: as for apply

        Example:
          bkfleet plan inventory/demo.toml --detailed-exitcode
        """

    static let check = """
        Usage: bkfleet check [INVENTORY]

        Validates the inventory without connecting anywhere and renders every host's
        modules. Errors name file:line:column and suggest a fix.

        Example:
          bkfleet check inventory/example.toml
        """

    static let render = """
        Usage: bkfleet render [INVENTORY] --host NAME

        Prints the module files that 'apply' would write to host NAME.

        Example:
          bkfleet render inventory/demo.toml --host builder-01
        """
}
