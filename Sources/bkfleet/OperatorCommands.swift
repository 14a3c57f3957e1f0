// `status` (a read-only report of every selected host and agent, as a table or one JSON
// document) and `retire` (stop and remove a host's agents, modules and secrets). They
// parse, set up and print; the work is in the library (Run/HostStatus.swift,
// Run/HostRecord.swift). Neither revokes a token: see retire's closing note.
import BKFleet
import Foundation

enum StatusCommand {
    static func run(_ words: [String]) throws -> ExitCode {
        let arguments = try Arguments.parse(
            words, command: "status", flags: ["json", "verbose", "no-color"],
            options: ["on", "shard", "parallel"])
        if arguments.flags.contains("help") {
            print(Help.status)
            return .success
        }
        let environment = ProcessInfo.processInfo.environment
        let inventory = try InventoryLoader.load(path: try inventoryPath(arguments),
                                                 environment: environment)
        let hosts = try selectHosts(inventory, arguments, environment: environment)
        var options = RunOptions()
        options.dryRun = true
        options.parallel = try arguments.int("parallel", atLeast: 1)
        let context = RunContext(
            inventory: inventory,
            renderer: ModuleRenderer(templates: try Templates.locate(environment: environment)),
            secrets: try RunSetup.readSecrets(for: hosts, inventory: inventory),
            identity: try RunSetup.identity(for: inventory), options: options,
            registrations: try RunSetup.registrations(for: inventory),
            events: LineEventSink(verbose: arguments.flags.contains("verbose")) {
                FileHandle.standardError.write(Data(($0 + "\n").utf8))
            },
            runDirectory: try RunSetup.runDirectory(for: inventory))
        let statuses = FleetStatus.read(hosts: hosts, context: context)
        let logged = keepRunFolderIfLogged(context.runDirectory)

        // Notes name the inventory as the operator gave it, so they can be pasted.
        let apply = arguments.positional.first.map { "bkfleet apply \($0)" }
            ?? "bkfleet apply"
        if arguments.flags.contains("json") {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            let document = StatusDocument(
                inventory: inventory.path, ok: statuses.allSatisfy(\.ok),
                hosts: StatusTable.annotated(statuses, applyCommand: apply))
            print(String(decoding: try encoder.encode(document), as: UTF8.self))
        } else {
            print(StatusTable.render(statuses, color: useColor(arguments),
                                     applyCommand: apply))
            if logged { print("Logs: \(context.runDirectory)") }
        }
        return statuses.allSatisfy(\.ok) ? .success : .hostsFailed
    }

    struct StatusDocument: Encodable {
        var inventory: String
        var ok: Bool
        var hosts: [HostStatus]
    }
}

enum RetireCommand {
    static func run(_ words: [String]) throws -> ExitCode {
        let arguments = try Arguments.parse(
            words, command: "retire",
            flags: ["dry-run", "verbose", "no-color", "accept-new-host-keys"],
            options: ["inventory", "address", "port", "user"])
        if arguments.flags.contains("help") {
            print(Help.retire)
            return .success
        }
        // HOST words, and an inventory either by --inventory or as a word ending in .toml.
        var names = arguments.positional
        var given = arguments.options["inventory"]
        if given == nil, let file = names.first(where: { $0.hasSuffix(".toml") }) {
            given = file
            names.removeAll { $0 == file }
        }
        guard !names.isEmpty else {
            throw UsageError(description: "retire needs at least one host name, e.g. "
                             + "'bkfleet retire builder-04'")
        }
        let environment = ProcessInfo.processInfo.environment
        var pathArguments = Arguments()
        if let given { pathArguments.positional = [given] }
        let inventory = try InventoryLoader.load(path: try inventoryPath(pathArguments),
                                                 environment: environment)
        let port = try arguments.int("port", atLeast: 1)
        let unknown = names.filter { name in !inventory.hosts.contains { $0.name == name } }
        if let missing = unknown.first, arguments.options["address"] == nil
            || unknown.count > 1 {
            throw UsageError(description: "'\(missing)' is not in \(inventory.path); to retire "
                             + "a host the inventory no longer lists, name it alone with "
                             + "--address ADDRESS (and --port, --user if not the defaults)")
        }
        if unknown.isEmpty, arguments.options["address"] != nil {
            throw UsageError(description: "--address is only for a host the inventory does "
                             + "not list; \(names.joined(separator: ", ")) come(s) from it")
        }

        var hosts: [BKFleet.Host] = []
        var retired: [String: [String]] = [:]
        for name in names where !hosts.contains(where: { $0.name == name }) {
            if var host = inventory.hosts.first(where: { $0.name == name }) {
                retired[name] = host.agents
                host.agents = []
                hosts.append(host)
            } else {
                hosts.append(BKFleet.Host(
                    name: name, address: arguments.options["address"]!,
                    port: port ?? inventory.defaults.port,
                    user: arguments.options["user"] ?? inventory.defaults.user, agents: [],
                    rebuildCommand: inventory.defaults.rebuildCommand,
                    location: SourceLocation(file: "the command line", line: 1, column: 1)))
            }
        }

        // Refused before any connection, as apply does: a secret's value in a retired
        // agent's tags, hooks or extra config (BoundSecretCheck.swift).
        let identity = try RunSetup.identity(for: inventory)
        let listed = inventory.hosts.filter { retired[$0.name] != nil }
        try BoundSecretCheck.refuse(
            hosts: listed, inventory: inventory,
            secrets: BoundSecretCheck.readable(for: listed, inventory: inventory),
            identity: identity)

        var options = RunOptions()
        options.retire = true
        options.dryRun = arguments.flags.contains("dry-run")
        options.acceptNewHostKeys = arguments.flags.contains("accept-new-host-keys")
        let view = EventView.choose(arguments, hosts: hosts.count, json: false)
        let context = RunContext(
            inventory: inventory,
            renderer: ModuleRenderer(templates: try Templates.locate(environment: environment)),
            secrets: SecretValues(), identity: identity,
            options: options, registrations: .agentLog, events: view.sink,
            runDirectory: try RunSetup.runDirectory(for: inventory))
        context.retiredAgents = retired
        view.start()
        let reports = FleetRunner.run(hosts: hosts, context: context)
        view.stop()
        let color = useColor(arguments)
        let code = options.dryRun
            ? ApplyCommand.printPlan(reports, hosts: hosts, inventory: inventory, color: color,
                                     detailed: false)
            : ApplyCommand.printApply(reports, hosts: hosts, context: context, color: color)
        for line in tokenNotes(inventory: inventory, retired: Set(names)) { print(line) }
        if !unknown.isEmpty || !retired.isEmpty {
            print("Remove the retired host(s) from \(inventory.path) too, or the next apply "
                  + "brings their agents back.")
        }
        return code
    }

    /// Tokens the retired hosts used that no remaining host's agent uses. bkfleet leaves
    /// them alive: inventory v1 gives no token id to revoke by, and a token may serve
    /// agents outside this inventory.
    // LIMITATION: no revocation; the note says how to do it by hand.
    static func tokenNotes(inventory: Inventory, retired: Set<String>) -> [String] {
        func tokens(_ hosts: [BKFleet.Host]) -> Set<String> {
            Set(hosts.flatMap(\.agents).compactMap { inventory.agents[$0]?.token })
        }
        let gone = tokens(inventory.hosts.filter { retired.contains($0.name) })
        let kept = tokens(inventory.hosts.filter { !retired.contains($0.name) })
        return gone.subtracting(kept).sorted().map { token in
            "Token '\(token)' ([tokens.\(token)]) is used by no remaining host in the "
                + "inventory; it was left alive. Revoke it in Buildkite if nothing else "
                + "uses it."
        } + kept.intersection(gone).sorted().map { token in
            "Token '\(token)' stays alive: remaining hosts' agents use it."
        }
    }
}

extension Help {
    static let status = """
        Usage: bkfleet status [INVENTORY] [--on SELECTION] [--json] [-v]

        Reads every selected host and reports, per agent: module up to date, token
        fingerprint on the host against the inventory's (sha256:…), the token file's
        owner and mode, unit state (and "restart pending" when the agent started before
        its token last changed), confinement ("-" when the unit does not run),
        registration since the unit started (API when [buildkite] is set, else the
        agent's log), whether Buildkite lists it as connected (API only, else "-") and
        the host's last apply. A host whose last run was `retire` reads "(retired)".
        Under the table, one note per row that differs: what, and what to run. It writes
        nothing on any host. Exit 0 when everything is as the inventory wants, 1 when a
        host could not be read or something differs.

        Options:
          --on SELECTION   hosts by name, glob or @tag (docs/fleet-scale.md)
          --shard K/N      this process's share of the hosts
          --parallel N     hosts read at once (default: the inventory's parallel)
          --json           one JSON document on stdout (fields in docs/events.md)
          -v, --verbose    progress lines on stderr

        Examples:
          bkfleet status
          bkfleet status inventory/demo.toml --on builder-02 --json | jq '.ok'
        """

    static let retire = """
        Usage: bkfleet retire HOST... [--inventory FILE] [--dry-run]
               bkfleet retire HOST --address ADDRESS [--port N] [--user NAME]

        Stops and removes every agent bkfleet put on each HOST: writes an empty module
        index, deletes the agents' modules and secret folders, runs the rebuild, and
        proves no agent of the host still runs. HOST is a name from the inventory
        (connection settings, jump host and agents come from there); a host the
        inventory no longer lists needs --address (one host at a time). Tokens are never
        revoked: retire says which tokens no remaining host uses. Remove the host from
        the inventory afterwards, or the next apply brings its agents back.

        Options:
          --inventory FILE   the inventory (also: a word ending in .toml; default
                             $BKFLEET_INVENTORY, then ./inventory.toml)
          --dry-run          show what would be removed, change nothing
          --address ADDRESS  for a host not in the inventory; with --port, --user
          --accept-new-host-keys   record unknown host keys (trust on first use)
          -v, --verbose      progress lines

        Examples:
          bkfleet retire builder-04 --dry-run
          bkfleet retire builder-04
          bkfleet retire old-07 --address 10.0.4.17 --inventory fleet.toml
        """
}
