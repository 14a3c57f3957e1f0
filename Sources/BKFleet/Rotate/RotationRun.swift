// What token and SSH key rotations share: the host pipeline (HostRun) run with the rotated
// secret put in for the selected agents while every other agent keeps what it runs, the
// preflight, rolling batches, putting the old value back on failed hosts, one log folder, SSH
// identity and registration source per rotation. It plans no batches, makes no secrets
// and words no summary: TokenRotation and KeyRotation do.
import Foundation

/// A secret a rotation replaces, as the host runs need it.
protocol RotatedSecret {
    var name: String { get }
    var secret: NamedSecret { get }
    /// What agents run now; nil when nothing local knows it.
    var oldValue: [UInt8]? { get }
    /// The new value; nil before it exists.
    var newValue: [UInt8]? { get }
}

/// Which inventory entries a rotation replaces, and how messages name them.
struct RotatedKind {
    var entries: WritableKeyPath<Inventory, [String: NamedSecret]>
    var values: WritableKeyPath<SecretValues, [String: SecretValue]>
    /// The entry of this kind an agent profile uses, if any.
    var usedBy: (AgentProfile) -> String?
    var use: (inout AgentProfile, String) -> Void
    /// Suffix of the stand-in entry selected agents get in the run's inventory copy;
    /// entry names cannot contain it, so it never collides with a real entry.
    var marker: String
    var noun: String

    static let token = RotatedKind(
        entries: \.tokens, values: \.tokens, usedBy: { $0.token }, use: { $0.token = $1 },
        marker: "\u{1F}rotated", noun: "token")
    static let sshKey = RotatedKind(
        entries: \.sshKeys, values: \.sshKeys, usedBy: { $0.sshKey }, use: { $0.sshKey = $1 },
        marker: "\u{1F}rotated-key", noun: "SSH key")
}

/// A rotation built on a RotationRun, which holds the inventory, request and output.
protocol RotationSteps {
    var rotation: RotationRun { get }
}

extension RotationSteps {
    var inventory: Inventory { rotation.inventory }
    var request: RotateRequest { rotation.request }
    var say: (String) -> Void { rotation.say }
}

final class RotationRun {
    let inventory: Inventory
    let renderer: ModuleRenderer
    let request: RotateRequest
    let kind: RotatedKind
    /// What every host run starts from; dry run and host keys are set per run.
    let options: RunOptions
    let say: (String) -> Void

    init(inventory: Inventory, renderer: ModuleRenderer, request: RotateRequest,
         kind: RotatedKind, options: RunOptions, say: @escaping (String) -> Void) {
        self.inventory = inventory
        self.renderer = renderer
        self.request = request
        self.kind = kind
        self.options = options
        self.say = say
    }

    // MARK: Selection

    /// Every `--agent` (all by default) on the `--on` hosts.
    func selectedPairs() -> [(host: String, agent: String)] {
        request.hosts.flatMap { host in
            host.agents.filter { request.agents?.contains($0) ?? true }
                .map { (host: host.name, agent: $0) }
        }
    }

    /// The entries of this kind the `pairs` use, each once, by name.
    func entries(usedBy pairs: [(host: String, agent: String)])
        -> [(name: String, secret: NamedSecret)] {
        let names = Set(pairs.compactMap { inventory.agents[$0.agent].flatMap(kind.usedBy) })
        return names.sorted().compactMap { name in
            inventory[keyPath: kind.entries][name].map { (name: name, secret: $0) }
        }
    }

    /// Agents besides `pairs` that use entry `name`, anywhere, as `host/agent`.
    func outsiders(of name: String, besides pairs: [(host: String, agent: String)])
        -> [String] {
        let chosen = Set(pairs.map { "\($0.host)/\($0.agent)" })
        return inventory.hosts.flatMap { host in
            host.agents.filter { agent in inventory.agents[agent].flatMap(kind.usedBy) == name }
                .map { "\(host.name)/\($0)" }
        }.filter { !chosen.contains($0) }
    }

    /// The units a host restarts, with their queues for the batch plan.
    func restartUnits(host: String, agents: Set<String>) -> [RestartUnit] {
        agents.sorted().map {
            RestartUnit(host: host, agent: $0, queue: inventory.agents[$0]?.tags["queue"])
        }
    }

    /// Every agent of each queue in the whole inventory, as `host/agent`. Without the API
    /// this is all a rotation can count, and it cannot see an agent that is down.
    func inventoryQueueServers() -> [String: Set<String>] {
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

    /// The connected agents of each queue, from one Buildkite agent listing (token and
    /// SSH key rotations alike). Without
    /// API access only the inventory can answer, which cannot see an agent that is down.
    func queueServers(touched: [Host], hostnames: [String: String]) throws
        -> [String: Set<String>] {
        guard case .api(let board) = try registrations() else {
            say("note: no [buildkite] API access; queues are counted from the inventory, "
                + "so an agent that is down elsewhere still counts as serving its queue")
            return inventoryQueueServers()
        }
        var members: [QueueMember] = []
        for host in touched {
            guard let hostname = hostnames[host.name] else { continue }
            for agent in host.agents {
                guard let profile = inventory.agents[agent] else { continue }
                members.append(QueueMember(host: host.name, agent: agent, hostname: hostname,
                                           name: TokenRotation.registeredName(profile,
                                                                     hostname: hostname)))
            }
        }
        let listing: [BuildkiteAgent]
        do {
            listing = try board.agents(fetchedAfter: Date())
        } catch {
            throw RotateError(description: "cannot list the connected agents through the "
                              + "Buildkite API (\(error)), so no queue can be kept served; "
                              + "check [buildkite] and the API token; nothing was changed")
        }
        return RotationBatches.connectedServers(listing: listing, members: members)
    }

    // MARK: Running hosts

    /// The secrets of every entry not being rotated, read from their sources as apply does.
    func otherSecrets(_ hosts: [Host], rotated: [some RotatedSecret]) throws -> SecretValues {
        var others = inventory
        for entry in rotated { others[keyPath: kind.entries][entry.name] = nil }
        return try RunSetup.readSecrets(for: hosts, inventory: others)
    }

    /// Runs the host pipeline with selected agents on the new value (or, to restore, on
    /// the old one) and every other agent on what it has now.
    func runHosts(_ hosts: [Host], rotated: [some RotatedSecret], dryRun: Bool,
                  restore: Bool) throws -> [HostReport] {
        guard !hosts.isEmpty else { return [] }
        var copy = inventory
        var secrets = try otherSecrets(hosts, rotated: rotated)
        // Stands in for a new value that does not exist yet, so a dry run can plan.
        let placeholder = Array("bkfleet-rotate-dry-run".utf8)
        var standIns: [String: String] = [:]
        for entry in rotated {
            guard let selected = restore ? entry.oldValue : (entry.newValue ?? placeholder)
            else { continue }
            let stand = entry.name + kind.marker
            copy[keyPath: kind.entries][stand] = entry.secret
            secrets[keyPath: kind.values][stand] = SecretValue(bytes: selected)
            standIns[entry.name] = stand
            // Agents of this entry that are not selected keep the value they run now.
            if let current = entry.oldValue ?? entry.newValue {
                secrets[keyPath: kind.values][entry.name] = SecretValue(bytes: current)
            }
        }
        for (name, profile) in copy.agents where request.agents?.contains(name) ?? true {
            if let used = kind.usedBy(profile), let stand = standIns[used] {
                var changed = profile
                kind.use(&changed, stand)
                copy.agents[name] = changed
            }
        }
        var options = self.options
        options.dryRun = dryRun
        options.acceptNewHostKeys = request.acceptNewHostKeys
        // Agents outside the selection keep their files and units exactly as they are:
        // what the run gives them above only fills their modules, it is never pushed.
        options.onlyAgents = request.agents
        let sink = LineEventSink(verbose: request.verbose) { [say] in say($0) }
        let context = RunContext(
            inventory: copy, renderer: renderer, secrets: secrets,
            identity: try identity(), options: options,
            registrations: try registrations(), events: sink,
            runDirectory: try logFolder())
        return FleetRunner.run(hosts: hosts, context: context)
    }

    /// Reads and plans `hosts` against the inventory as it is (nothing rotated, nothing
    /// changed), for what their probes saw: which secret file each agent has.
    func probeHosts(_ hosts: [Host]) throws -> [HostReport] {
        guard !hosts.isEmpty else { return [] }
        var options = self.options
        options.dryRun = true
        options.acceptNewHostKeys = request.acceptNewHostKeys
        let sink = LineEventSink(verbose: request.verbose) { [say] in say($0) }
        let context = RunContext(
            inventory: inventory, renderer: renderer,
            secrets: try RunSetup.readSecrets(for: hosts, inventory: inventory),
            identity: try identity(), options: options,
            registrations: try registrations(), events: sink,
            runDirectory: try logFolder())
        return FleetRunner.run(hosts: hosts, context: context)
    }

    // MARK: Preflight

    /// Step 1 of a rotation: reads and plans `touched` with the new value (a stand-in before
    /// it exists) and batches the restarts. `check` adds a planned host's own refusals and
    /// returns its agents to restart. A real run throws the first refusal; a dry run gets
    /// them back so it can show its whole plan first. `what` names the rotation in messages.
    func preflight(_ touched: [Host], rotated: [some RotatedSecret], what: String,
                   check: (HostReport, HostPlan, inout [String]) -> Set<String>) throws
        -> (refusals: [String], units: [RestartUnit], hosts: [String], batches: [[String]],
            gap: QueueGapError?) {
        let reports = try runHosts(touched, rotated: rotated, dryRun: true, restore: false)
        var refusals: [String] = []
        var units: [RestartUnit] = []
        var hosts: [String] = []
        var hostnames: [String: String] = [:]
        for report in reports {
            if case .failed(let step, let message) = report.outcome {
                refusals.append("\(report.host): cannot plan the \(what) (at "
                                + "\(step.rawValue)): \(message)")
                continue
            }
            guard let plan = report.plan else { continue }
            hostnames[report.host] = report.hostname
            let agents = check(report, plan, &refusals)
            if !agents.isEmpty { hosts.append(report.host) }
            units += restartUnits(host: report.host, agents: agents)
        }
        if !request.dryRun, let first = refusals.first {
            throw RotateError(description: first + "; nothing was changed")
        }
        // Queues are counted from the connected agents: an agent that is down elsewhere
        // does not keep its queue served.
        let servers = try queueServers(touched: touched, hostnames: hostnames)
        // A dry run still shows the whole plan, then says why the real run refuses.
        let (batches, gap) = try self.batches(hosts: hosts, units: units, servers: servers)
        return (refusals, units, hosts, batches, gap)
    }

    // MARK: Batches and the dry run's verdict

    /// The restart batches. A dry run that meets a queue gap still gets batches (planned
    /// as if the gap were allowed) so it can show the whole plan, plus the gap to report;
    /// a real run throws the gap.
    func batches(hosts: [String], units: [RestartUnit], servers: [String: Set<String>])
        throws -> (batches: [[String]], gap: QueueGapError?) {
        do {
            return (try RotationBatches.plan(
                hosts: hosts, units: units, servers: servers, batchSize: request.batchSize,
                allowQueueGap: request.allowQueueGap), nil)
        } catch let gap as QueueGapError where request.dryRun {
            return (try RotationBatches.plan(
                hosts: hosts, units: units, servers: servers, batchSize: request.batchSize,
                allowQueueGap: true), gap)
        }
    }

    /// Ends a dry run that has shown its plan: when the real run would refuse, says every
    /// reason (the hosts' refusals, then the queue gap) and throws RotateRefused.
    func refuseDryRun(_ refusals: [String], gap: QueueGapError?) throws {
        let reasons = refusals + (gap.map { [$0.description] } ?? [])
        guard !reasons.isEmpty else { return }
        say("the real run would refuse, and change nothing:")
        for reason in reasons { say("  \(reason)") }
        throw RotateRefused(queueGap: gap != nil && reasons.count == 1)
    }

    static func batchLine(_ index: Int, of batches: [[String]]) -> String {
        "batch \(index + 1)/\(batches.count): \(batches[index].joined(separator: ", "))"
    }

    /// Rolling restarts, one batch at a time; a batch with a failed host stops the rollout.
    /// `okText` follows the agents on a host that succeeded.
    func rollOut(_ batches: [[String]], touched: [Host], rotated: [some RotatedSecret],
                 okText: String) throws -> (failed: [HostReport], done: Set<String>) {
        var failed: [HostReport] = []
        var done: Set<String> = []
        for index in batches.indices {
            say(Self.batchLine(index, of: batches))
            let hosts = touched.filter { batches[index].contains($0.name) }
            for report in try runHosts(hosts, rotated: rotated, dryRun: false, restore: false) {
                if case .failed(let step, let message) = report.outcome {
                    say("FAILED  \(report.host) at \(step.rawValue): \(message)")
                    failed.append(report)
                } else {
                    done.insert(report.host)
                    let agents = report.agents.map(\.agent).joined(separator: ", ")
                    say("ok      \(report.host)  \(agents) \(okText) "
                        + String(format: "(%.1fs)", report.seconds))
                }
            }
            if !failed.isEmpty { break }
        }
        return (failed, done)
    }

    /// Puts the old value back on hosts whose agents did not come back and restarts them;
    /// returns the hosts running on the old value again. The host run already rolled a
    /// failed host back from its backup; with the old value known, this pass proves its
    /// agents are running on it again.
    func restore(_ failed: [HostReport], touched: [Host],
                 rotated: [some RotatedSecret]) -> Set<String> {
        let names = failed.map(\.host)
        guard rotated.allSatisfy({ $0.oldValue != nil }) else {
            // No old value is known (no key file before, or a token source the operator
            // already changed): only the host's own rollback can have put it back.
            return Set(failed.filter { report in
                if case .failed(_, let message) = report.outcome {
                    return message.contains("\nrolled back: ")
                }
                return false
            }.map(\.host))
        }
        var restored: Set<String> = []
        let hosts = touched.filter { names.contains($0.name) }
        let reports = (try? runHosts(hosts, rotated: rotated, dryRun: false, restore: true))
            ?? []
        for report in reports {
            if case .failed(let step, let message) = report.outcome {
                say("FAILED  \(report.host): restoring the previous \(kind.noun) failed at "
                    + "\(step.rawValue): \(message)")
            } else {
                restored.insert(report.host)
                say("restored \(report.host): previous \(kind.noun) back, agents running")
            }
        }
        return restored
    }

    // MARK: Read once per rotation

    private var sshIdentity: SSHIdentity?
    private var registrationSource: RegistrationSource?
    private var runDirectory: String?

    /// The SSH identity: a passphrase is asked at most once per rotation.
    func identity() throws -> SSHIdentity {
        try Self.once(&sshIdentity) { try RunSetup.identity(for: inventory) }
    }

    /// The queue count and every host's verification share the same agent listings (and
    /// read the API token once).
    func registrations() throws -> RegistrationSource {
        try Self.once(&registrationSource) { try RunSetup.registrations(for: inventory) }
    }

    /// One log folder for the whole rotation (plan, batches, restore).
    func logFolder() throws -> String {
        try Self.once(&runDirectory) { try RunSetup.runDirectory(for: inventory) }
    }

    private static func once<Value>(_ slot: inout Value?,
                                    _ read: () throws -> Value) rethrows -> Value {
        if let slot { return slot }
        let value = try read()
        slot = value
        return value
    }
}
