// `bkfleet rotate --ssh-key`: gives the selected agents a new ed25519 key. The new key is
// written to the inventory's key file first (old one kept as `<file>.previous`), then
// pushed with the host pipeline (HostRun) like a token: rolling restarts, no rebuild,
// verify; a host that fails gets its old key back. `--finish` drops `<file>.previous`.
// It registers no deploy key anywhere: the operator adds the printed public keys.
import Foundation

/// One `[ssh_keys.NAME]` entry being rotated. Values are what apply would push (the
/// file's bytes as SecretReader gives them: exactly one final newline), so a later apply
/// sees no change and the `sha256:` fingerprints match what plan and status show.
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

    var oldPrint: String { old.map { SSHKeyFingerprint.both(pushed: $0) } ?? "(no key)" }
    var newPrint: String { new.map { SSHKeyFingerprint.both(pushed: $0) } ?? "(new key)" }
}

extension KeyPlan: RotatedSecret {
    var oldValue: [UInt8]? { old }
    var newValue: [UInt8]? { new }
}

public final class KeyRotation: RotationSteps {
    let rotation: RotationRun

    public init(inventory: Inventory, renderer: ModuleRenderer, request: RotateRequest,
                say: @escaping (String) -> Void) {
        var options = RunOptions()
        // The host's run record says what last changed it (status shows it).
        options.recordAction = "rotate"
        rotation = RotationRun(inventory: inventory, renderer: renderer, request: request,
                               kind: .sshKey, options: options, say: say)
    }

    /// Returns true when every selected agent ended on the new key.
    public func run() throws -> Bool {
        let pairs = try selectedPairs()
        let touched = request.hosts.filter { host in pairs.contains { $0.host == host.name } }
        var plans = try keyPlans(pairs)

        // 1. Read and plan every host with the new key (a stand-in before it exists).
        let (refusals, restartUnits, restartHosts, batches, gap) = try rotation.preflight(
            touched, rotated: plans, what: "key rotation") { report, plan, refusals in
            // Anything else pending (a module, a token, the key of an agent left out of
            // the selection) is apply's to change, not a key rotation's.
            let other = plan.secrets.first {
                $0.kind != .sshKey || !(request.agents?.contains($0.agent) ?? true)
            }
            if plan.needsRebuild || other != nil {
                let what = plan.needsRebuild ? "module changes"
                    : "the \(other!.kind == .sshKey ? "SSH key" : "token") of agent "
                        + "\(other!.agent)"
                refusals.append("\(report.host) has changes pending besides the selected SSH "
                                + "keys (\(what)); rotate never rebuilds and changes nothing "
                                + "else. Run 'bkfleet apply' first, then rotate")
            }
            return Set(plan.secrets.filter { $0.kind == .sshKey }.map(\.agent))
        }

        if request.dryRun {
            describeDryRun(plans, units: restartUnits, batches: batches)
            try rotation.refuseDryRun(refusals, gap: gap)
            return true
        }

        // 2. The new key is in the key file (old one kept) before any host sees it.
        for index in plans.indices {
            try prepare(&plans[index])
        }

        // 3. Rolling restarts; a failed batch stops the rollout.
        let (failed, done) = try rotation.rollOut(batches, touched: touched, rotated: plans,
                                                  okText: "running on the new key")
        if batches.isEmpty { say("every selected agent already has the new key") }

        if !failed.isEmpty {
            let restored = rotation.restore(failed, touched: touched, rotated: plans)
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
        for (name, secret) in rotation.entries(usedBy: pairs) {
            let file = try SSHKeyFile.writable(secret, agents: users(of: name))
            let state = try file.read()
            guard state.previous != nil else {
                say("SSH key '\(name)': nothing to finish (no \(file.previousPath))")
                continue
            }
            // As pushed (SecretReader), so the `sha256:` part matches plan and status.
            let print = (try? pushed(file.previousPath, name))
                .map { SSHKeyFingerprint.both(pushed: $0) } ?? "?"
            _ = try file.dropPrevious()
            say("SSH key '\(name)': removed the previous key \(print) (\(file.previousPath)); "
                + "remove its public key from wherever it was registered. \(file.path) holds "
                + "the current key, which apply pushes")
        }
        return true
    }

    // MARK: Selection and keys

    private func selectedPairs() throws -> [(host: String, agent: String)] {
        let pairs = rotation.selectedPairs().filter { inventory.agents[$0.agent]?.sshKey != nil }
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
        var plans: [KeyPlan] = []
        for (name, secret) in rotation.entries(usedBy: pairs) {
            let profiles = users(of: name)
            let file = try SSHKeyFile.writable(secret, agents: profiles)
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
            plan.profiles = profiles
            plan.outsiders = rotation.outsiders(of: name, besides: pairs)
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
        for index in batches.indices { say(RotationRun.batchLine(index, of: batches)) }
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
