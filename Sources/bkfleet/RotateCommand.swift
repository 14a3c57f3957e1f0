// `bkfleet rotate`: parses its options and hands the work to TokenRotation in the
// library. It prints what the rotation says, line by line, and picks the exit code; SSH
// key rotation (`--ssh-key`) is not implemented and is refused with a pointer.
import BKFleet
import Foundation

enum RotateCommand {
    static let help = """
        Usage: bkfleet rotate [INVENTORY] [OPTIONS]

        Gives the selected agents a new token and retires the old one. For a token
        with `api = { ... }` in [tokens.NAME], bkfleet creates a new cluster agent
        token through the Buildkite API and saves it in the token's store first; for
        any other token, it uses what the token's source gives now (update it first).
        Then it pushes the token to every agent using it, restarts those agents in
        rolling batches (no rebuild), checks that each registered again, and only then
        revokes the old token (when bkfleet knows its API id and no agent outside the
        selection still uses it). An agent that does not come back gets the old token
        back; rerunning rotate finishes an interrupted or failed rotation.

        Options:
          --agent NAME[,NAME]       only these agent profiles
          --on SELECTION            only these hosts (as for apply)
          --shard K/N               only this shard of the selected hosts
          --batch N                 hosts restarted at once (default: all)
          --allow-queue-gap         allow a batch that leaves a queue without agents
          --dry-run                 say what would be pushed, restarted and revoked
          --accept-new-host-keys    record unknown host keys in known_hosts
          --verbose, -v             show each host's steps

        Examples:
          bkfleet rotate inventory.toml --dry-run
          bkfleet rotate inventory.toml --batch 1
          bkfleet rotate inventory.toml --agent deploy --on builder-01
        """

    static func run(_ words: [String]) throws -> ExitCode {
        let arguments = try Arguments.parse(
            words, command: "rotate",
            flags: ["dry-run", "allow-queue-gap", "accept-new-host-keys", "verbose",
                    "no-color", "ssh-key"],
            options: ["agent", "on", "shard", "batch"])
        if arguments.flags.contains("help") {
            print(help)
            return .success
        }
        if arguments.flags.contains("ssh-key") {
            throw UsageError(description: "rotate --ssh-key is not implemented yet; rotate an "
                             + "SSH key by hand as docs/runbook.md describes")
        }
        let environment = ProcessInfo.processInfo.environment
        let inventory = try InventoryLoader.load(path: try inventoryPath(arguments),
                                                 environment: environment)
        let hosts = try selectHosts(inventory, arguments, environment: environment)
        var agents: Set<String>?
        if let text = arguments.options["agent"] {
            let names = Set(text.split(separator: ",").map {
                $0.trimmingCharacters(in: .whitespaces) })
            for name in names where inventory.agents[name] == nil {
                throw UsageError(description: "--agent \(name): no [agents.\(name)] in "
                                 + "\(inventory.path)")
            }
            agents = names
        }
        var request = RotateRequest(hosts: hosts, agents: agents)
        request.dryRun = arguments.flags.contains("dry-run")
        request.allowQueueGap = arguments.flags.contains("allow-queue-gap")
        request.batchSize = try arguments.int("batch", atLeast: 1)
        request.acceptNewHostKeys = arguments.flags.contains("accept-new-host-keys")
        request.verbose = arguments.flags.contains("verbose")

        let renderer = ModuleRenderer(templates: try Templates.locate(environment: environment))
        let rotation = TokenRotation(inventory: inventory, renderer: renderer,
                                     request: request) { line in
            print(line)
            fflush(stdout)
        }
        do {
            return try rotation.run() ? .success : .hostsFailed
        } catch let error as RotateError {
            printError(error.description)
            return .hostsFailed
        } catch let error as QueueGapError {
            printError(error.description + "; nothing was changed")
            return .usage
        } catch let error as SecretError {
            printError(error.message)
            return .badInput
        }
    }
}
