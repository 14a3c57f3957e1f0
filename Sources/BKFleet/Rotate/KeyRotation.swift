// `bkfleet rotate --ssh-key`: gives the selected agents a new ed25519 key. The new key is
// written to the inventory's key file first (old one kept as `<file>.previous`), then
// pushed with the host pipeline (HostRun) like a token: rolling restarts, no rebuild,
// verify; a host that fails gets its old key back. `--finish` drops `<file>.previous`.
// It registers no deploy key anywhere: the operator adds the printed public keys.
import Foundation

/// One `[ssh_keys.NAME]` entry being rotated. Values are what apply would push (the
/// file's bytes without trailing newlines), so a later apply sees no change.
struct KeyPlan {
    var name: String
    var secret: NamedSecret
    var file: SSHKeyFile
    /// What agents run now; nil when the key file did not exist before.
    var old: [UInt8]?
    /// The new key; nil until generated (and in a dry run of a fresh rotation).
    var new: [UInt8]?
    var publicKey: String?
    var resumed = false
    /// Agents outside the selection that use this key (`host/agent`).
    var outsiders: [String] = []
    /// Agent profiles that use this key, anywhere in the inventory.
    var profiles: [String] = []

    var oldPrint: String { old.map { SSHKeyFingerprint.of(privateKey: $0) } ?? "(no key)" }
    var newPrint: String { new.map { SSHKeyFingerprint.of(privateKey: $0) } ?? "(new key)" }
}

public final class KeyRotation {
    let inventory: Inventory
    let renderer: ModuleRenderer
    let request: RotateRequest
    let say: (String) -> Void
    /// Suffix of the stand-in key name selected agents get in the run's inventory copy;
    /// names cannot contain it, so it never collides with a real entry.
    static let marker = "\u{1F}rotated-key"

    public init(inventory: Inventory, renderer: ModuleRenderer, request: RotateRequest,
                say: @escaping (String) -> Void) {
        self.inventory = inventory
        self.renderer = renderer
        self.request = request
        self.say = say
    }

    /// Returns true when every selected agent ended on the new key.
    public func run() throws -> Bool {
        let pairs = try selectedPairs()
        let touched = request.hosts.filter { host in pairs.contains { $0.host == host.name } }
        var plans = try keyPlans(pairs)

        // 1. Read and plan every host with the new key (a stand-in before it exists).
        let preflight = try runHosts(touched, plans: plans, dryRun: true, restore: false)
        var restartUnits: [RestartUnit] = []
        var restartHosts: [String] = []
        for report in preflight {
            if case .failed(let step, let message) = report.outcome {
                throw RotateError(description: "\(report.host): cannot plan the key rotation "
                                  + "(at \(step.rawValue)): \(message); nothing was changed")
            }
            guard let plan = report.plan else { continue }
            // Anything else pending (a module, a token, the key of an agent left out of
            // the selection) is apply's to change, not a key rotation's.
            let other = plan.secrets.first {
                $0.kind != .sshKey || !(request.agents?.contains($0.agent) ?? true)
            }
            if plan.needsRebuild || other != nil {
                let what = plan.needsRebuild ? "module changes"
                    : "the \(other!.kind == .sshKey ? "SSH key" : "token") of agent "
                        + "\(other!.agent)"
                throw RotateError(description: "\(report.host) has changes pending besides "
                                  + "the selected SSH keys (\(what)); rotate never rebuilds "
                                  + "and changes nothing else. Run 'bkfleet apply' first, "
                                  + "then rotate; nothing was changed")
            }
            let agents = Set(plan.secrets.map(\.agent))
            if !agents.isEmpty { restartHosts.append(report.host) }
            for agent in agents.sorted() {
                restartUnits.append(RestartUnit(host: report.host, agent: agent,
                                                queue: inventory.agents[agent]?.tags["queue"]))
            }
        }
        let batches = try RotationBatches.plan(
            hosts: restartHosts, units: restartUnits, servers: queueServers(),
            batchSize: request.batchSize, allowQueueGap: request.allowQueueGap)

        if request.dryRun {
            describeDryRun(plans, units: restartUnits, batches: batches)
            return true
        }

        // 2. The new key is in the key file (old one kept) before any host sees it.
        for index in plans.indices {
            try prepare(&plans[index])
        }

        // 3. Rolling restarts; a failed batch stops the rollout.
        var failed: [HostReport] = []
        var done: Set<String> = []
        for (number, batch) in batches.enumerated() {
            say("batch \(number + 1)/\(batches.count): \(batch.joined(separator: ", "))")
            let hosts = touched.filter { batch.contains($0.name) }
            for report in try runHosts(hosts, plans: plans, dryRun: false, restore: false) {
                if case .failed(let step, let message) = report.outcome {
                    say("FAILED  \(report.host) at \(step.rawValue): \(message)")
                    failed.append(report)
                } else {
                    done.insert(report.host)
                    let agents = report.agents.map(\.agent).joined(separator: ", ")
                    say("ok      \(report.host)  \(agents) running on the new key "
                        + String(format: "(%.1fs)", report.seconds))
                }
            }
            if !failed.isEmpty { break }
        }
        if batches.isEmpty { say("every selected agent already has the new key") }

        if !failed.isEmpty {
            let restored = restore(failed, touched: touched, plans: plans)
            summarizeFailure(pairs, plans: plans, done: done, restartHosts: restartHosts,
                             failed: Set(failed.map(\.host)), restored: restored)
            return false
        }
        summarizeSuccess(plans)
        return true
    }

    /// `--finish`: drops `<file>.previous` of the selected agents' keys. Local only.
    // LIMITATION: it does not check that every agent already runs the new key; the
    // runbook says to confirm with `bkfleet plan` (no changes) first.
    public func finish() throws -> Bool {
        let pairs = try selectedPairs()
        let names = Set(pairs.compactMap { inventory.agents[$0.agent]?.sshKey }).sorted()
        for name in names {
            guard let secret = inventory.sshKeys[name] else { continue }
            let file = try SSHKeyFile.writable(secret, agents: users(of: name))
            let state = try file.read()
            guard state.previous != nil else {
                say("SSH key '\(name)': nothing to finish (no \(file.previousPath))")
                continue
            }
            let print = state.previous.map {
                SSHKeyFingerprint.of(privateKey: SecretReader.trimmingTrailingNewlines($0))
            } ?? "?"
            _ = try file.dropPrevious()
            say("SSH key '\(name)': removed the previous key \(print) (\(file.previousPath)); "
                + "remove its public key from wherever it was registered. \(file.path) holds "
                + "the current key, which apply pushes")
        }
        return true
    }

    // MARK: Selection and keys

    private func selectedPairs() throws -> [(host: String, agent: String)] {
        let pairs = request.hosts.flatMap { host in
            host.agents.filter { request.agents?.contains($0) ?? true }
                .filter { inventory.agents[$0]?.sshKey != nil }
                .map { (host: host.name, agent: $0) }
        }
        guard !pairs.isEmpty else {
            throw RotateError(description: "no selected agent has an SSH key (ssh_key = "
                              + "\"NAME\" in [agents.NAME]); check --agent and --on")
        }
        return pairs
    }

    /// Agent profiles using key `name` in the whole inventory.
    private func users(of name: String) -> [String] {
        inventory.agents.values.filter { $0.sshKey == name }.map(\.name).sorted()
    }

    private func keyPlans(_ pairs: [(host: String, agent: String)]) throws -> [KeyPlan] {
        let chosen = Set(pairs.map { "\($0.host)/\($0.agent)" })
        let names = Set(pairs.compactMap { inventory.agents[$0.agent]?.sshKey }).sorted()
        var plans: [KeyPlan] = []
        for name in names {
            guard let secret = inventory.sshKeys[name] else { continue }
            let file = try SSHKeyFile.writable(secret, agents: users(of: name))
            if let identity = inventory.defaults.identityFile,
               Self.sameFile(identity, file.path) {
                // Replacing bkfleet's own login key would lock it out of every host.
                throw RotateError(description: "\(secret.location): SSH key '\(name)' is the "
                                  + "file bkfleet logs in with (identity_file \(identity)); "
                                  + "give the agents a key of their own in [ssh_keys.\(name)]"
                                  + ". Nothing was changed")
            }
            let state = try file.read()
            var plan = KeyPlan(name: name, secret: secret, file: file)
            plan.profiles = users(of: name)
            plan.outsiders = inventory.hosts.flatMap { host in
                host.agents.filter { inventory.agents[$0]?.sshKey == name }
                    .map { "\(host.name)/\($0)" }
            }.filter { !chosen.contains($0) }
            if state.inProgress {
                plan.old = try pushed(file.previousPath, name)
                plan.new = try pushed(file.path, name)
                plan.resumed = true
            } else {
                plan.old = state.current == nil ? nil : try pushed(file.path, name)
            }
            plans.append(plan)
        }
        return plans
    }

    /// A key file's value exactly as apply reads it (SecretReader), so what rotate
    /// pushes is what a later apply wants and that apply changes nothing.
    private func pushed(_ path: String, _ name: String) throws -> [UInt8] {
        try SecretReader().resolve(.file(path: path), role: .sshKey(name))
    }

    static func sameFile(_ one: String, _ other: String) -> Bool {
        var first = stat(), second = stat()
        if stat(one, &first) == 0, stat(other, &second) == 0 {
            return first.st_dev == second.st_dev && first.st_ino == second.st_ino
        }
        return (one as NSString).standardizingPath == (other as NSString).standardizingPath
    }

    /// Generates and installs a new key, or (finishing an earlier rotation) makes sure
    /// its public key is saved; says both fingerprints and where the public key is.
    private func prepare(_ plan: inout KeyPlan) throws {
        if plan.new == nil {
            let comment = "bkfleet-" + (plan.profiles.count == 1 ? plan.profiles[0] : plan.name)
            let key = try SSHKeyGenerator.generate(comment: comment)
            try plan.file.install(key)
            plan.new = try pushed(plan.file.path, plan.name)
            plan.publicKey = key.publicKey
        } else if let new = plan.new {
            plan.publicKey = plan.file.savedPublicKey(matching: new)
            if plan.publicKey == nil,
               let line = SSHKeyFingerprint.publicLine(ofPrivateKey: new,
                                                       comment: "bkfleet-" + plan.name) {
                try plan.file.savePublicKey(line)
                plan.publicKey = line
            }
        }
        say("SSH key '\(plan.name)': \(plan.oldPrint) → \(plan.newPrint)"
            + (plan.resumed ? " (finishing an earlier rotation)" : "") + "; new key in "
            + "\(plan.file.path)" + (plan.old == nil ? "" : ", old one kept in "
            + plan.file.previousPath))
        if let line = plan.publicKey {
            say("  public key (saved to \(plan.file.publicPath)):")
            say("  \(line)")
        }
    }

    /// Every agent of each queue in the whole inventory, as `host/agent`.
    private func queueServers() -> [String: Set<String>] {
        var servers: [String: Set<String>] = [:]
        for host in inventory.hosts {
            for name in host.agents {
                if let queue = inventory.agents[name]?.tags["queue"] {
                    servers[queue, default: []].insert("\(host.name)/\(name)")
                }
            }
        }
        return servers
    }

    // MARK: Running hosts

    /// Runs the host pipeline with selected agents on the new key (or, to restore, on
    /// the old one) and every other agent on what it has now.
    private func runHosts(_ hosts: [Host], plans: [KeyPlan], dryRun: Bool,
                          restore: Bool) throws -> [HostReport] {
        guard !hosts.isEmpty else { return [] }
        var copy = inventory
        var others = inventory
        for plan in plans { others.sshKeys[plan.name] = nil }
        var secrets = try RunSetup.readSecrets(for: hosts, inventory: others)
        let placeholder = Array("bkfleet-rotate-dry-run".utf8)
        var standIns: [String: String] = [:]
        for plan in plans {
            guard let selected = restore ? plan.old : (plan.new ?? placeholder) else {
                continue
            }
            let stand = plan.name + Self.marker
            copy.sshKeys[stand] = plan.secret
            secrets.sshKeys[stand] = SecretValue(bytes: selected)
            standIns[plan.name] = stand
            // Agents of this key that are not selected keep the key they run now.
            if let current = plan.old ?? plan.new {
                secrets.sshKeys[plan.name] = SecretValue(bytes: current)
            }
        }
        for (name, profile) in copy.agents where request.agents?.contains(name) ?? true {
            if let key = profile.sshKey, let stand = standIns[key] {
                copy.agents[name]?.sshKey = stand
            }
        }
        var options = RunOptions()
        options.dryRun = dryRun
        options.acceptNewHostKeys = request.acceptNewHostKeys
        let sink = LineEventSink(verbose: request.verbose) { [say] in say($0) }
        let context = RunContext(
            inventory: copy, renderer: renderer, secrets: secrets,
            identity: try RunSetup.identity(for: inventory), options: options,
            registrations: try RunSetup.registrations(for: inventory), events: sink,
            runDirectory: try logFolder())
        return FleetRunner.run(hosts: hosts, context: context)
    }

    /// One log folder for the whole rotation (plan, batches, restore).
    private var runDirectory: String?
    private func logFolder() throws -> String {
        if let runDirectory { return runDirectory }
        let folder = try RunSetup.runDirectory(for: inventory)
        runDirectory = folder
        return folder
    }

    /// Puts the old key back on hosts whose agents did not come back and restarts them;
    /// returns the hosts running on the old key again. The host run already rolled a
    /// failed host back from its backup; this pass proves its agents are running again.
    private func restore(_ failed: [HostReport], touched: [Host],
                         plans: [KeyPlan]) -> Set<String> {
        let names = failed.map(\.host)
        guard plans.allSatisfy({ $0.old != nil }) else {
            // No old key is known (the key file did not exist): only the host's own
            // rollback can have put back what it had.
            return Set(failed.filter { report in
                if case .failed(_, let message) = report.outcome {
                    return message.contains("\nrolled back: ")
                }
                return false
            }.map(\.host))
        }
        var restored: Set<String> = []
        let hosts = touched.filter { names.contains($0.name) }
        let reports = (try? runHosts(hosts, plans: plans, dryRun: false, restore: true)) ?? []
        for report in reports {
            if case .failed(let step, let message) = report.outcome {
                say("FAILED  \(report.host): restoring the previous SSH key failed at "
                    + "\(step.rawValue): \(message)")
            } else {
                restored.insert(report.host)
                say("restored \(report.host): previous SSH key back, agents running")
            }
        }
        return restored
    }

    // MARK: Reporting

    private func describeDryRun(_ plans: [KeyPlan], units: [RestartUnit],
                                batches: [[String]]) {
        for plan in plans {
            if plan.new != nil {
                say("SSH key '\(plan.name)': \(plan.oldPrint) → \(plan.newPrint) (finishing "
                    + "an earlier rotation)")
            } else {
                say("SSH key '\(plan.name)': \(plan.oldPrint) → a new ed25519 key, written to "
                    + "\(plan.file.path) (old one kept in \(plan.file.previousPath), public "
                    + "key in \(plan.file.publicPath))")
            }
        }
        if units.isEmpty {
            say("would push nothing: every selected agent already has the new key")
        }
        for unit in units {
            say("would push the SSH key of \(unit.agent) on \(unit.host) and restart "
                + "buildkite-agent-\(unit.agent)")
        }
        for (number, batch) in batches.enumerated() {
            say("batch \(number + 1)/\(batches.count): \(batch.joined(separator: ", "))")
        }
        say("dry run: nothing was changed")
    }

    private func summarizeSuccess(_ plans: [KeyPlan]) {
        say("SSH key rotation done. Add each new public key where the old one is "
            + "registered (e.g. as a deploy key):")
        for plan in plans {
            say("  \(plan.name) \(plan.newPrint): \(plan.file.publicPath)")
            if let line = plan.publicKey { say("    \(line)") }
            if !plan.outsiders.isEmpty {
                say("  \(plan.name): agents outside the selection still run \(plan.oldPrint) ("
                    + plan.outsiders.prefix(5).joined(separator: ", ") + "); rotate them too "
                    + "(the same command without --agent/--on) before --finish")
            }
        }
        if plans.contains(where: { $0.old != nil }) {
            say("then remove the old public keys there and run 'bkfleet rotate --ssh-key "
                + "--finish' to delete the kept old private key(s)")
        }
    }

    private func summarizeFailure(_ pairs: [(host: String, agent: String)],
                                  plans: [KeyPlan], done: Set<String>,
                                  restartHosts: [String], failed: Set<String>,
                                  restored: Set<String>) {
        var onKey: [String: [String]] = [:]
        for pair in pairs {
            guard let name = inventory.agents[pair.agent]?.sshKey,
                  let plan = plans.first(where: { $0.name == name }) else { continue }
            let key: String
            if done.contains(pair.host) || !restartHosts.contains(pair.host) {
                key = plan.newPrint
            } else if failed.contains(pair.host) && !restored.contains(pair.host) {
                key = "\(plan.oldPrint) or \(plan.newPrint) (restore failed; check the host)"
            } else {
                // Restored, or in a batch that never started.
                key = plan.oldPrint
            }
            onKey[key, default: []].append("\(pair.host)/\(pair.agent)")
        }
        say("SSH key rotation incomplete. Agents by key:")
        for (fingerprint, agents) in onKey.sorted(by: { $0.key < $1.key }) {
            say("  \(fingerprint): \(agents.joined(separator: ", "))")
        }
        for plan in plans where plan.old != nil {
            say("  \(plan.file.path) holds the new key, \(plan.file.previousPath) the old one")
        }
        say("fix the failed host(s) and rerun 'bkfleet rotate --ssh-key' to finish: it "
            + "pushes the same new key. Do not run --finish before that")
    }
}
