// `bkfleet rotate`: parses its options and hands the work to TokenRotation (tokens) or
// KeyRotation (`--ssh-key`) in the library. It prints what the rotation says, line by
// line, and picks the exit code; it decides nothing about hosts itself.
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
          --batch N                 hosts restarted at once (default: as many as
                                    keep every queue served)
          --allow-queue-gap         accept a gap no order avoids (a queue on one host)
          --dry-run                 show the whole plan (pushes, batches, revocation
                                    or key files), then why the real run would
                                    refuse, if it would (exit 64 for a queue gap)
          --accept-new-host-keys    record unknown host keys in known_hosts
          --verbose, -v             show each host's steps
          --ssh-key                 rotate the agents' SSH keys instead of tokens
          --finish                  with --ssh-key: delete the kept old private keys

        With --ssh-key, bkfleet generates a new ed25519 key per [ssh_keys.NAME] the
        selected agents use (ssh-keygen), writes it to the entry's file (mode 0600,
        the old key kept as FILE.previous, the public key saved as FILE.pub), pushes
        it, restarts the agents in batches and checks each came back. Only file
        sources can be written; the login key (identity_file) is refused. Keys are
        shown as SHA256:… (OpenSSH, as ssh-keygen -lf prints) with the sha256:… that
        plan and status show. Add the printed public keys as deploy keys, then run
        'bkfleet rotate --ssh-key --finish' to delete FILE.previous.

        Examples:
          bkfleet rotate inventory.toml --dry-run
          bkfleet rotate inventory.toml --batch 1
          bkfleet rotate inventory.toml --agent deploy --on builder-01
          bkfleet rotate inventory.toml --ssh-key --dry-run
          bkfleet rotate inventory.toml --ssh-key --batch 1
          bkfleet rotate inventory.toml --ssh-key --finish
        """

    static func run(_ words: [String]) throws -> ExitCode {
        let arguments = try Arguments.parse(
            words, command: "rotate",
            flags: ["dry-run", "allow-queue-gap", "accept-new-host-keys", "verbose",
                    "no-color", "ssh-key", "finish"],
            options: ["agent", "on", "shard", "batch"])
        if arguments.flags.contains("help") {
            print(help)
            return .success
        }
        if arguments.flags.contains("finish") && !arguments.flags.contains("ssh-key") {
            throw UsageError(description: "--finish goes with --ssh-key: 'bkfleet rotate "
                             + "--ssh-key --finish' deletes the kept old SSH keys")
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
        let say: (String) -> Void = { line in
            print(line)
            fflush(stdout)
        }
        do {
            if arguments.flags.contains("ssh-key") {
                let keys = KeyRotation(inventory: inventory, renderer: renderer,
                                       request: request, say: say)
                let finished = arguments.flags.contains("finish") ? try keys.finish()
                    : try keys.run()
                return finished ? .success : .hostsFailed
            }
            let rotation = TokenRotation(inventory: inventory, renderer: renderer,
                                         request: request, say: say)
            return try rotation.run() ? .success : .hostsFailed
        } catch let error as RotateError {
            printError(error.description)
            return .hostsFailed
        } catch let refused as RotateRefused {
            printError("dry run: the real run would refuse (reasons above)")
            return refused.queueGap ? .usage : .hostsFailed
        } catch let error as QueueGapError {
            printError(error.description + "; nothing was changed")
            return .usage
        } catch let error as SecretError {
            printError(error.message)
            return .badInput
        }
    }
}
