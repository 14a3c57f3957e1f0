// `bkfleet rotate`: gives the selected agents a new token and retires the old one. It
// reuses the host pipeline (HostRun) with the new value in place of the old: push, restart
// of the units whose token changed (no rebuild), verify. Around it: the API token's
// creation and store, queue-safe batches, restoring hosts that failed, and revocation.
// It does not rotate SSH keys and never rebuilds: a host with module changes is refused.
import Foundation

public struct RotateRequest: Sendable {
    /// Hosts chosen by --on/--shard (all by default).
    public var hosts: [Host]
    /// `--agent` names; nil rotates every agent on the chosen hosts.
    public var agents: Set<String>?
    public var dryRun = false
    public var allowQueueGap = false
    public var batchSize: Int?
    public var acceptNewHostKeys = false
    public var verbose = false

    public init(hosts: [Host], agents: Set<String>?) {
        self.hosts = hosts
        self.agents = agents
    }
}

public struct RotateError: Error, CustomStringConvertible {
    public var description: String
}

/// One token being rotated.
struct TokenPlan {
    var name: String
    var secret: NamedSecret
    /// What agents run now; nil when nothing local knows it (an inventory source the
    /// operator already changed, or the first token of an API-managed entry).
    var old: StoredToken?
    /// The new token; nil before the API created it (and in a dry run).
    var new: StoredToken?
    var resumed = false
    var store: TokenStore?
    /// Agents outside the selection that use this token (`host/agent`).
    var outsiders: [String] = []
}

public final class TokenRotation {
    let inventory: Inventory
    let renderer: ModuleRenderer
    let request: RotateRequest
    let say: (String) -> Void
    /// Suffix of the stand-in token name selected agents get in the run's inventory copy;
    /// token names cannot contain it, so it never collides.
    static let marker = "\u{1F}rotated"

    public init(inventory: Inventory, renderer: ModuleRenderer, request: RotateRequest,
                say: @escaping (String) -> Void) {
        self.inventory = inventory
        self.renderer = renderer
        self.request = request
        self.say = say
    }

    /// Returns true when every selected agent ended on the new token.
    public func run() throws -> Bool {
        let pairs = selectedPairs()
        guard !pairs.isEmpty else {
            throw RotateError(description: "no agent selected: the chosen hosts run none of "
                              + "the named agents; check --agent and --on")
        }
        let touched = request.hosts.filter { host in pairs.contains { $0.host == host.name } }
        var plans = try tokenPlans(pairs)

        // 1. Read every host and plan with the new value (a stand-in before it exists).
        let preflight = try runHosts(touched, plans: plans, dryRun: true, restore: false)
        var restartUnits: [RestartUnit] = []
        var restartHosts: [String] = []
        for report in preflight {
            if case .failed(let step, let message) = report.outcome {
                throw RotateError(description: "\(report.host): cannot plan the rotation (at "
                                  + "\(step.rawValue)): \(message); nothing was changed")
            }
            guard let plan = report.plan else { continue }
            if plan.needsRebuild {
                throw RotateError(description: "\(report.host) has module changes pending; "
                                  + "rotate never rebuilds. Run 'bkfleet apply' first, then "
                                  + "rotate; nothing was changed")
            }
            let agents = Set(plan.secrets.filter { $0.kind == .token }.map(\.agent))
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

        // 2. New tokens exist and are stored before any host sees them.
        for index in plans.indices where plans[index].new == nil {
            plans[index].new = try create(plans[index])
        }
        for plan in plans {
            say("token '\(plan.name)': \(plan.old?.fingerprint ?? "(unknown)") → "
                + "\(plan.new!.fingerprint)" + (plan.resumed ? " (finishing an earlier "
                + "rotation)" : ""))
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
                    say("ok      \(report.host)  \(agents) re-registered "
                        + String(format: "(%.1fs)", report.seconds))
                }
            }
            if !failed.isEmpty { break }
        }

        if !failed.isEmpty {
            let restored = restore(failed, touched: touched, plans: plans)
            summarizeFailure(pairs, plans: plans, done: done, restartHosts: restartHosts,
                             failed: Set(failed.map(\.host)), restored: restored)
            return false
        }
        finish(plans)
        return true
    }

    // MARK: Selection and tokens

    private func selectedPairs() -> [(host: String, agent: String)] {
        request.hosts.flatMap { host in
            host.agents.filter { request.agents?.contains($0) ?? true }
                .map { (host: host.name, agent: $0) }
        }
    }

    private func tokenPlans(_ pairs: [(host: String, agent: String)]) throws -> [TokenPlan] {
        let chosen = Set(pairs.map { "\($0.host)/\($0.agent)" })
        let names = Set(pairs.compactMap { inventory.agents[$0.agent]?.token }).sorted()
        var plans: [TokenPlan] = []
        for name in names {
            guard let secret = inventory.tokens[name] else { continue }
            var plan = TokenPlan(name: name, secret: secret)
            plan.outsiders = inventory.hosts.flatMap { host in
                host.agents.filter { inventory.agents[$0]?.token == name }
                    .map { "\(host.name)/\($0)" }
            }.filter { !chosen.contains($0) }
            if let api = secret.api {
                guard inventory.buildkite != nil else {
                    throw RotateError(description: "\(secret.location): token '\(name)' is "
                                      + "API-managed, but the inventory has no [buildkite] "
                                      + "section with org and api_token; add one")
                }
                let store = TokenStore(location: api.store, token: name)
                plan.store = store
                let document = try store.read()
                if let previous = document.previous, let current = document.current {
                    plan.old = previous
                    plan.new = current
                    plan.resumed = true
                } else if let current = document.current {
                    plan.old = current
                } else if secret.source != .apiStore {
                    plan.old = StoredToken(bytes: try SecretReader().resolve(
                        secret.source, role: .token(name)), id: secret.apiID)
                }
            } else {
                // The operator already put the new value in the source; the old one is
                // only on the hosts.
                plan.new = StoredToken(bytes: try SecretReader().resolve(
                    secret.source, role: .token(name)), id: secret.apiID)
            }
            plans.append(plan)
        }
        return plans
    }

    /// Creates the API token and writes it to the store (keeping the old one as
    /// `previous`) before anything else can fail; a store that cannot be written gets
    /// the new token revoked again.
    private func create(_ plan: TokenPlan) throws -> StoredToken {
        guard let api = plan.secret.api, let store = plan.store else {
            throw RotateError(description: "token '\(plan.name)' has no new value")
        }
        let client = try apiClient()
        let stamp = ISO8601DateFormatter().string(from: Date())
        let created = try client.createClusterToken(
            cluster: api.cluster, description: "bkfleet rotate \(plan.name) \(stamp)")
        let new = StoredToken(bytes: created.value, id: created.id)
        do {
            try store.write(TokenStoreDocument(current: new, previous: plan.old))
        } catch {
            try? client.revokeClusterToken(cluster: api.cluster, id: created.id)
            throw RotateError(description: "\(error); the token just created (id \(created.id))"
                              + " was revoked again and nothing else was changed")
        }
        say("created token '\(plan.name)' \(new.fingerprint) (id \(created.id)) and saved it "
            + "to its \(store.description)")
        return new
    }

    private func apiClient() throws -> BuildkiteClient {
        guard let api = inventory.buildkite else {
            throw RotateError(description: "the inventory has no [buildkite] section")
        }
        let token = try SecretReader().resolve(api.token, role: .apiToken)
        return BuildkiteClient(api: api, token: token)
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

    /// Runs the host pipeline with selected agents on the new token (or, to restore, on
    /// the old one) and every other agent on what it has now.
    private func runHosts(_ hosts: [Host], plans: [TokenPlan], dryRun: Bool,
                          restore: Bool) throws -> [HostReport] {
        guard !hosts.isEmpty else { return [] }
        var copy = inventory
        var secrets = try otherSecrets(hosts, plans: plans)
        let placeholder = StoredToken(bytes: Array("bkfleet-rotate-dry-run".utf8), id: nil)
        for plan in plans {
            let selectedValue = restore ? plan.old : (plan.new ?? placeholder)
            guard let selectedValue else { continue }
            let stand = plan.name + Self.marker
            copy.tokens[stand] = plan.secret
            secrets.tokens[stand] = SecretValue(bytes: selectedValue.bytes)
            // Agents of this token that are not selected keep the value they run now.
            if let old = plan.old ?? plan.new {
                secrets.tokens[plan.name] = SecretValue(bytes: old.bytes)
            }
        }
        for (name, profile) in copy.agents where request.agents?.contains(name) ?? true {
            if plans.contains(where: { $0.name == profile.token }) {
                copy.agents[name]?.token = profile.token + Self.marker
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

    /// Tokens not being rotated and SSH keys, read from their sources as apply does.
    private func otherSecrets(_ hosts: [Host], plans: [TokenPlan]) throws -> SecretValues {
        var others = inventory
        for plan in plans { others.tokens[plan.name] = nil }
        return try RunSetup.readSecrets(for: hosts, inventory: others)
    }

    /// Puts the old token back on hosts whose agents did not come back, and restarts them.
    /// Returns the hosts that are running on the old token again.
    /// The host run itself already rolled the failed host back to the files it had; with
    /// the old value known, a second pass proves the agents registered on it again.
    private func restore(_ failed: [HostReport], touched: [Host],
                         plans: [TokenPlan]) -> Set<String> {
        let names = failed.map(\.host)
        guard plans.allSatisfy({ $0.old != nil }) else {
            // The old value came from a source the operator already changed: only the
            // host's own rollback (from its backup) can have put it back.
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
                say("FAILED  \(report.host): restoring the previous token failed at "
                    + "\(step.rawValue): \(message)")
            } else {
                restored.insert(report.host)
                say("restored \(report.host): previous token back, agents running")
            }
        }
        return restored
    }

    // MARK: Reporting and the end

    private func describeDryRun(_ plans: [TokenPlan], units: [RestartUnit],
                                batches: [[String]]) {
        for plan in plans {
            let old = plan.old?.fingerprint ?? "(what the hosts have)"
            if let new = plan.new {
                say("token '\(plan.name)': \(old) → \(new.fingerprint)"
                    + (plan.resumed ? " (finishing an earlier rotation)" : ""))
            } else {
                say("token '\(plan.name)': \(old) → a new token created in cluster "
                    + "\(plan.secret.api?.cluster ?? "?") and saved to its "
                    + "\(plan.store?.description ?? "store")")
            }
        }
        if units.isEmpty {
            say("would push nothing: every selected agent already has the new token")
        }
        for unit in units {
            say("would push the token of \(unit.agent) on \(unit.host) and restart "
                + "buildkite-agent-\(unit.agent)")
        }
        for (number, batch) in batches.enumerated() {
            say("batch \(number + 1)/\(batches.count): \(batch.joined(separator: ", "))")
        }
        for plan in plans { say(revocationText(plan, dryRun: true)) }
        say("dry run: nothing was changed")
    }

    private func revocationText(_ plan: TokenPlan, dryRun: Bool) -> String {
        let verb = dryRun ? "would revoke" : "revoking"
        guard let old = plan.old else {
            return "token '\(plan.name)': no previous token is known to bkfleet; if one is "
                + "still valid in Buildkite, revoke it there"
        }
        if !plan.outsiders.isEmpty {
            return "token '\(plan.name)': left \(old.fingerprint) alive: agents outside the "
                + "selection still use it (\(plan.outsiders.prefix(5).joined(separator: ", ")))"
                + "; rotate them too to revoke it"
        }
        guard plan.secret.api != nil, let id = old.id else {
            return "token '\(plan.name)': left \(old.fingerprint) alive: bkfleet does not know "
                + "its API id; revoke it in Buildkite, or give id = \"...\" in "
                + "[tokens.\(plan.name)]"
        }
        return "token '\(plan.name)': \(verb) \(old.fingerprint) (id \(id))"
    }

    /// After every agent is on the new token: revoke the old one when allowed, and drop
    /// it from the store.
    private func finish(_ plans: [TokenPlan]) {
        for plan in plans {
            say(revocationText(plan, dryRun: false))
            guard let api = plan.secret.api, let store = plan.store, let new = plan.new,
                  plan.outsiders.isEmpty else { continue }
            if let id = plan.old?.id {
                do {
                    try apiClient().revokeClusterToken(cluster: api.cluster, id: id)
                } catch let BuildkiteError.http(_, _, status, _) where status == 404 {
                    // Already revoked (an earlier run got this far).
                } catch {
                    say("token '\(plan.name)': could not revoke \(plan.old!.fingerprint): "
                        + "\(error); rerun rotate to try again")
                    continue
                }
            }
            do {
                try store.write(TokenStoreDocument(current: new, previous: nil))
            } catch {
                say("token '\(plan.name)': \(error); rerun rotate to finish")
            }
        }
    }

    private func summarizeFailure(_ pairs: [(host: String, agent: String)],
                                  plans: [TokenPlan], done: Set<String>,
                                  restartHosts: [String], failed: Set<String>,
                                  restored: Set<String>) {
        var onToken: [String: [String]] = [:]
        for pair in pairs {
            guard let name = inventory.agents[pair.agent]?.token,
                  let plan = plans.first(where: { $0.name == name }) else { continue }
            let newPrint = plan.new?.fingerprint ?? "?"
            let oldPrint = plan.old?.fingerprint ?? "the previous token"
            let key: String
            if done.contains(pair.host) || !restartHosts.contains(pair.host) {
                key = newPrint
            } else if failed.contains(pair.host) && !restored.contains(pair.host) {
                key = "\(oldPrint) or \(newPrint) (restore failed; check the host)"
            } else {
                // Restored, or in a batch that never started.
                key = oldPrint
            }
            onToken[key, default: []].append("\(pair.host)/\(pair.agent)")
        }
        say("rotation incomplete; the old token was not revoked. Agents by token:")
        for (fingerprint, agents) in onToken.sorted(by: { $0.key < $1.key }) {
            say("  \(fingerprint): \(agents.joined(separator: ", "))")
        }
        say("fix the failed host(s) and rerun 'bkfleet rotate' to finish")
    }
}
