// `bkfleet rotate`: gives the selected agents a new token and retires the old one. It
// reuses the host pipeline (HostRun) with the new value in place of the old: push, restart
// of the units whose token changed or that still run an older one (no rebuild), verify.
// Around it: the API token's creation and store, batches that keep every queue's
// connected agents serving, restoring hosts that failed, revocation, and the summary.
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

/// A dry run showed its plan and said why the real run would refuse; `queueGap` when the
/// only reason is a queue left without agents (the real run's usage error).
public struct RotateRefused: Error {
    public var queueGap: Bool
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

extension TokenPlan: RotatedSecret {
    var oldValue: [UInt8]? { old?.bytes }
    var newValue: [UInt8]? { new?.bytes }
}

public final class TokenRotation: RotationSteps {
    let rotation: RotationRun
    /// Each API-managed token's store lock, held until the rotation ends.
    private var locks: [TokenStoreLock] = []

    public init(inventory: Inventory, renderer: ModuleRenderer, request: RotateRequest,
                say: @escaping (String) -> Void) {
        var options = RunOptions()
        // Also restart agents a killed earlier run left on an older token.
        options.restartStale = true
        options.recordAction = "rotate"
        rotation = RotationRun(inventory: inventory, renderer: renderer, request: request,
                               kind: .token, options: options, say: say)
    }

    /// Returns true when every selected agent ended on the new token.
    public func run() throws -> Bool {
        let pairs = rotation.selectedPairs()
        guard !pairs.isEmpty else {
            throw RotateError(description: "no agent selected: the chosen hosts run none of "
                              + "the named agents; check --agent and --on")
        }
        let touched = request.hosts.filter { host in pairs.contains { $0.host == host.name } }
        var plans = try tokenPlans(pairs)
        // Refused before anything is sent, as apply does (BoundSecretCheck.swift): the
        // other secrets, and each rotated token's old and new value where known.
        try BoundSecretCheck.refuse(
            hosts: touched, inventory: inventory,
            secrets: try rotation.otherSecrets(touched, rotated: plans),
            extra: plans.flatMap { plan in [plan.old, plan.new].compactMap { $0 }
                .map { KnownSecret(role: .token(plan.name), bytes: $0.bytes) } },
            // The rotation's own identity, so a passphrase is asked once, not again for
            // the host runs.
            identity: try rotation.identity())

        // 1. Read every host and plan with the new value (a stand-in before it exists).
        //    An agent is restarted when its token changes, or when its token file is
        //    already new but its process started before that (a killed earlier run).
        var reasons: [String: String] = [:]
        let (refusals, restartUnits, restartHosts, batches, gap) = try rotation.preflight(
            touched, rotated: plans, what: "rotation") { report, plan, refusals in
            if plan.needsRebuild {
                refusals.append("\(report.host) has module changes pending; rotate never "
                                + "rebuilds. Run 'bkfleet apply' first, then rotate")
            }
            if let other = plan.secrets.first(where: { $0.kind != .token }) {
                refusals.append("\(report.host) has changes pending besides the selected "
                                + "tokens (the SSH key of agent \(other.agent)); rotate "
                                + "changes nothing else. Run 'bkfleet apply' first, then "
                                + "rotate")
            }
            var agents: Set<String> = []
            for change in plan.secrets where change.kind == .token {
                agents.insert(change.agent)
                reasons["\(report.host)/\(change.agent)"] = "push the new token and restart"
            }
            for unit in plan.units where unit.actor == .bkfleet && !agents.contains(unit.agent) {
                agents.insert(unit.agent)
                reasons["\(report.host)/\(unit.agent)"] = "restart (\(unit.reason))"
            }
            return agents
        }

        if request.dryRun {
            // Who else runs the old token now (same entry or the same value elsewhere).
            let chosen = Set(pairs.map { "\($0.host)/\($0.agent)" })
            for index in plans.indices {
                plans[index].outsiders = checkedHolders(plans[index]).filter {
                    !chosen.contains($0)
                }
            }
            describeDryRun(plans, units: restartUnits, reasons: reasons, batches: batches)
            try rotation.refuseDryRun(refusals, gap: gap)
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
        let (failed, done) = try rotation.rollOut(batches, touched: touched, rotated: plans,
                                                  okText: "re-registered")

        if !failed.isEmpty {
            let restored = rotation.restore(failed, touched: touched, rotated: plans)
            let failedHosts = Set(failed.map(\.host))
            say("rotation incomplete; the old token was not revoked")
            summarize(pairs, plans: plans, fates: [:], onNew: { host in
                done.contains(host) || !restartHosts.contains(host) ? .new
                    : failedHosts.contains(host) && !restored.contains(host) ? .unsure : .old
            }, why: "\(failedHosts.count) host(s) failed: "
               + failedHosts.sorted().joined(separator: ", "))
            say("fix the failed host(s) and rerun 'bkfleet rotate' to finish")
            return false
        }

        // 4. Hosts that needed no restart are already on the new token: prove each of
        //    their agents registered since it started (and drop backups a killed run
        //    left there) before anything is revoked.
        let settled = touched.filter { !restartHosts.contains($0.name) }
        var unproven: [String] = []
        if !settled.isEmpty {
            say("checking \(settled.map(\.name).joined(separator: ", ")): already on the new "
                + "token")
            for report in try rotation.runHosts(settled, rotated: plans, dryRun: false,
                                                restore: false) {
                if case .failed(let step, let message) = report.outcome {
                    say("FAILED  \(report.host) at \(step.rawValue): \(message)")
                    unproven.append(report.host)
                } else {
                    let agents = report.agents.map(\.agent).joined(separator: ", ")
                    say("ok      \(report.host)  \(agents) registered on it")
                }
            }
        }
        if !unproven.isEmpty {
            say("rotation incomplete; the old token was not revoked")
            summarize(pairs, plans: plans, fates: [:], onNew: { host in
                unproven.contains(host) ? .unsure : .new
            }, why: "agents on \(unproven.joined(separator: ", ")) are not proven to run on "
               + "the new token")
            say("fix the failed host(s) and rerun 'bkfleet rotate' to finish")
            return false
        }
        // 5. The old token is revoked only once no agent anywhere runs it: the token files
        //    on every host that uses it (or a token entry with the same value) say so.
        for index in plans.indices { plans[index].outsiders = checkedHolders(plans[index]) }
        let fates = finish(plans)
        summarize(pairs, plans: plans, fates: fates, onNew: { _ in .new }, why: "")
        return !fates.values.contains { if case .keptRevokeFailed = $0 { return true }
                                         return false }
    }

    // MARK: Selection and tokens

    private func tokenPlans(_ pairs: [(host: String, agent: String)]) throws -> [TokenPlan] {
        var plans: [TokenPlan] = []
        for (name, secret) in rotation.entries(usedBy: pairs) {
            var plan = TokenPlan(name: name, secret: secret)
            plan.outsiders = rotation.outsiders(of: name, besides: pairs)
            if let api = secret.api {
                guard inventory.buildkite != nil else {
                    throw RotateError(description: "\(secret.location): token '\(name)' is "
                                      + "API-managed, but the inventory has no [buildkite] "
                                      + "section with org and api_token; add one")
                }
                let store = TokenStore(location: api.store, token: name)
                plan.store = store
                // A dry run writes nothing, so it does not wait for (or block) a real one.
                if !request.dryRun { locks.append(try store.lock()) }
                let document = try store.read()
                if let previous = document.previous, let current = document.current {
                    plan.old = previous
                    plan.new = current
                    plan.resumed = true
                    if let id = current.id, try !clusterHasToken(api.cluster, id: id) {
                        // The new token of the unfinished rotation was revoked (or never
                        // accepted): finishing with it would strand every agent. Start
                        // over from the token the agents still run.
                        say("token '\(name)': the new token \(current.fingerprint) (id \(id)) "
                            + "of an unfinished rotation no longer exists in Buildkite; "
                            + "discarding it and starting a fresh rotation from "
                            + "\(previous.fingerprint)")
                        plan.new = nil
                        plan.resumed = false
                    }
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

    /// Whether the cluster still lists token `id` (a revoked token is not listed).
    private func clusterHasToken(_ cluster: String, id: String) throws -> Bool {
        do {
            return try apiClient().listClusterTokens(cluster: cluster).contains { $0.id == id }
        } catch {
            throw RotateError(description: "cannot list the tokens of cluster \(cluster) "
                              + "through the Buildkite API (\(error)); check [buildkite] and "
                              + "the API token; nothing was changed")
        }
    }

    /// Agents (`host/agent`) whose token file on the host holds `old`: every host with an
    /// agent using token entry `name` or any entry whose value is the same. `unread` names
    /// the hosts that could not be read (then nobody can say the old token is unused).
    private func holders(of old: StoredToken, entry name: String) -> (agents: [String],
                                                                      unread: [String]) {
        let hex = Digest.sha256Hex(old.bytes)
        var related: Set<String> = [name]
        for (other, secret) in inventory.tokens where other != name {
            if let value = Self.currentValue(secret, name: other), value == old.bytes {
                related.insert(other)
            }
        }
        let hosts = inventory.hosts.filter { host in
            host.agents.contains { related.contains(inventory.agents[$0]?.token ?? "") }
        }
        var agents: [String] = []
        var unread: [String] = []
        let reports: [HostReport]
        do {
            reports = try rotation.probeHosts(hosts)
        } catch {
            return ([], hosts.map(\.name))
        }
        for report in reports {
            guard let snapshot = report.snapshot else {
                unread.append(report.host)
                continue
            }
            for (key, file) in snapshot.secrets where key.hasSuffix("/token")
                && file.hasPrefix(hex + " ") {
                agents.append("\(report.host)/\(key.dropLast("/token".count))")
            }
        }
        return (agents.sorted(), unread.sorted())
    }

    /// The agents still on the plan's old token, plus hosts that could not be read (they
    /// may run it); empty when the old token is unknown.
    private func checkedHolders(_ plan: TokenPlan) -> [String] {
        guard let old = plan.old else { return [] }
        let found = holders(of: old, entry: plan.name)
        return found.agents + found.unread.map { "\($0) (could not be read)" }
    }

    /// The value a token entry gives agents now (its store's current token for an
    /// API-managed entry), or nil when it cannot be read.
    static func currentValue(_ secret: NamedSecret, name: String) -> [UInt8]? {
        if let api = secret.api,
           let current = try? TokenStore(location: api.store, token: name).read().current {
            return current.bytes
        }
        if secret.source == .apiStore { return nil }
        return try? SecretReader().resolve(secret.source, role: .token(name))
    }

    /// Creates the API token and writes it to the store (keeping the old one as
    /// `previous`) before anything else can fail; a store that cannot be written gets
    /// the new token revoked again.
    private func create(_ plan: TokenPlan) throws -> StoredToken {
        guard let api = plan.secret.api, let store = plan.store else {
            throw RotateError(description: "token '\(plan.name)' has no new value")
        }
        let client = try apiClient()
        let stamp = UTCStamp.iso8601()
        let created = try client.createClusterToken(
            cluster: api.cluster, description: "bkfleet rotate \(plan.name) \(stamp)")
        let new = StoredToken(bytes: created.value, id: created.id)
        do {
            try store.write(TokenStoreDocument(current: new, previous: plan.old))
            // A store that swallowed the document would leave the new value nowhere.
            guard try store.read().current == new else {
                throw RotateError(description: "token '\(plan.name)': its "
                    + "\(store.description) does not hold the new token after writing it "
                    + "(check the store's write command or file)")
            }
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

    /// The name an agent registers under, as verification expects it: its display name
    /// (NixOS default `%hostname-<agent>-%n`) with the placeholders filled.
    static func registeredName(_ agent: AgentProfile, hostname: String) -> String {
        (agent.displayName ?? "%hostname-\(agent.name)-%n")
            .replacingOccurrences(of: "%hostname", with: hostname)
            .replacingOccurrences(of: "%n", with: "1")
    }

    // MARK: Reporting and the end

    private func describeDryRun(_ plans: [TokenPlan], units: [RestartUnit],
                                reasons: [String: String], batches: [[String]]) {
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
            say("would push nothing: every selected agent already runs the new token")
        }
        for unit in units {
            let reason = reasons["\(unit.host)/\(unit.agent)"] ?? "restart"
            if reason.hasPrefix("push") {
                say("would push the token of \(unit.agent) on \(unit.host) and restart "
                    + "buildkite-agent-\(unit.agent)")
            } else {
                say("would \(reason): buildkite-agent-\(unit.agent) on \(unit.host)")
            }
        }
        for index in batches.indices { say(RotationRun.batchLine(index, of: batches)) }
        for plan in plans { say(revocationText(plan)) }
        say("dry run: nothing was changed")
    }

    /// What the dry run says will happen to the old token.
    private func revocationText(_ plan: TokenPlan) -> String {
        switch expectedFate(plan) {
        case .revoked:
            return "token '\(plan.name)': would revoke \(plan.old!.fingerprint) (id "
                + "\(plan.old!.id!)) once every agent runs the new token"
        case let fate:
            let outcome = TokenOutcome(name: plan.name, newFingerprint: "",
                                       oldFingerprint: plan.old?.fingerprint,
                                       agentsByToken: [:], fate: fate)
            return "token '\(plan.name)': old token " + RotationSummary.fateText(outcome)
        }
    }

    /// What becomes of the old token if every agent moves: revoked when bkfleet may.
    private func expectedFate(_ plan: TokenPlan) -> OldTokenFate {
        guard let old = plan.old else { return .unknown }
        if !plan.outsiders.isEmpty { return .keptForOutsiders(plan.outsiders) }
        guard plan.secret.api != nil, old.id != nil else { return .keptWithoutID }
        return .revoked
    }

    /// After every agent is on the new token: revoke the old one when allowed, and drop
    /// its value from the store (kept only while agents outside the selection use it).
    private func finish(_ plans: [TokenPlan]) -> [String: OldTokenFate] {
        var fates: [String: OldTokenFate] = [:]
        for plan in plans {
            var fate = expectedFate(plan)
            if case .revoked = fate, let api = plan.secret.api, let id = plan.old?.id {
                do {
                    try apiClient().revokeClusterToken(cluster: api.cluster, id: id)
                    say("token '\(plan.name)': revoked \(plan.old!.fingerprint) (id \(id))")
                } catch let BuildkiteError.http(_, _, status, _) where status == 404 {
                    // Already revoked (an earlier run got this far).
                    say("token '\(plan.name)': \(plan.old!.fingerprint) (id \(id)) was "
                        + "already revoked")
                } catch {
                    fate = .keptRevokeFailed("\(error)")
                }
            }
            fates[plan.name] = fate
            guard let store = plan.store, let new = plan.new else { continue }
            if case .keptForOutsiders = fate { continue }
            if case .keptRevokeFailed = fate { continue }
            do {
                try store.write(TokenStoreDocument(current: new, previous: nil))
                store.removeLeftovers()
            } catch {
                say("token '\(plan.name)': \(error); rerun rotate to finish")
            }
        }
        return fates
    }

    enum AgentToken { case new, old, unsure }

    /// The closing lines: per token, which agents run on which token and what became
    /// of the old one. `fates` is empty when the rotation did not finish (`why` says
    /// what is missing).
    private func summarize(_ pairs: [(host: String, agent: String)], plans: [TokenPlan],
                           fates: [String: OldTokenFate], onNew: (String) -> AgentToken,
                           why: String) {
        var outcomes: [TokenOutcome] = []
        for plan in plans {
            let newPrint = plan.new?.fingerprint ?? "(not created)"
            let oldPrint = plan.old?.fingerprint ?? "the previous token"
            var byToken: [String: [String]] = [:]
            for pair in pairs where inventory.agents[pair.agent]?.token == plan.name {
                let key: String
                switch onNew(pair.host) {
                case .new: key = newPrint
                case .old: key = oldPrint
                case .unsure: key = "\(oldPrint) or \(newPrint) (check the host)"
                }
                byToken[key, default: []].append("\(pair.host)/\(pair.agent)")
            }
            if !plan.outsiders.isEmpty {
                byToken["\(oldPrint) (outside the selection)"] = plan.outsiders
            }
            outcomes.append(TokenOutcome(
                name: plan.name, newFingerprint: newPrint, oldFingerprint: plan.old?.fingerprint,
                agentsByToken: byToken, fate: fates[plan.name] ?? .leftForRerun(why)))
        }
        for line in RotationSummary.lines(outcomes) { say(line) }
    }
}
