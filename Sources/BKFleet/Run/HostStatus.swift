// `status`: one read-only look at a host, agent by agent: module up to date, token and
// SSH key fingerprints on the host against the inventory's, owner and mode, unit, confinement,
// registration, Buildkite's connected flag, restart pending, the run record of the last
// apply and whether the host was retired. It runs only the probe and the registration
// check; it never writes to the host (nor records host keys). The table is StatusTable.
import Foundation

public struct AgentStatus: Sendable, Codable, Equatable {
    public var agent: String
    /// False for an agent the host has that the inventory no longer gives it.
    public var inInventory: Bool
    public var moduleUpToDate: Bool
    /// `sha256:` fingerprints; nil when there is no token (on the host, or wanted).
    public var tokenOnHost: String?
    public var tokenWanted: String?
    public var tokenOwner: String?
    public var tokenMode: String?
    /// Owner, group and mode the inventory wants (`owner:group 0400`); nil when unwanted.
    public var ownershipWanted: String?
    /// Owner and mode as the inventory wants them on this host.
    public var ownershipOK: Bool
    /// `active/running`, `inactive/dead`, or `not loaded`.
    public var unit: String
    public var running: Bool
    /// Nil when the unit does not run: confinement is a property of a running process.
    public var confined: Bool?
    /// Registered since the unit started. Nil when not checked (the unit does not run).
    public var registered: Bool?
    public var registration: String
    /// Buildkite's agent list shows a connected agent of this name on this host. Nil
    /// without `[buildkite]` API access (or for an agent the inventory does not know).
    public var connected: Bool?
    /// The unit started before its token (or SSH key) file last changed.
    public var restartPending: Bool
    /// The SSH key file's `sha256:` fingerprint on the host, and the inventory's; nil when
    /// there is none. Shown in `--json`; the table says it only in a note, when they differ.
    public var sshKeyOnHost: String? = nil
    public var sshKeyWanted: String? = nil
    /// False for an agent of a host that could not be read: only what the inventory says
    /// is known, and `--json` shows every host-side field as null.
    public var readFromHost = true

    enum CodingKeys: String, CodingKey {
        case agent, inInventory = "in_inventory", moduleUpToDate = "module_up_to_date"
        case tokenOnHost = "token_on_host", tokenWanted = "token_wanted"
        case tokenOwner = "token_owner", tokenMode = "token_mode"
        case ownershipWanted = "ownership_wanted"
        case ownershipOK = "ownership_ok", unit, running, confined, registered, registration
        case connected, restartPending = "restart_pending"
        case sshKeyOnHost = "ssh_key_on_host", sshKeyWanted = "ssh_key_wanted"
    }

    // Written by hand so that an unknown value is `null`, not a missing key: a pipeline
    // reading `.registered` must find it on every agent (docs/events.md).
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(agent, forKey: .agent)
        try c.encode(inInventory, forKey: .inInventory)
        let known = readFromHost
        try c.encode(known ? moduleUpToDate : nil, forKey: .moduleUpToDate)
        try c.encode(tokenOnHost, forKey: .tokenOnHost)
        try c.encode(tokenWanted, forKey: .tokenWanted)
        try c.encode(tokenOwner, forKey: .tokenOwner)
        try c.encode(tokenMode, forKey: .tokenMode)
        try c.encode(ownershipWanted, forKey: .ownershipWanted)
        try c.encode(known ? ownershipOK : nil, forKey: .ownershipOK)
        try c.encode(known ? unit : nil, forKey: .unit)
        try c.encode(known ? running : nil, forKey: .running)
        try c.encode(confined, forKey: .confined)
        try c.encode(registered, forKey: .registered)
        try c.encode(registration, forKey: .registration)
        try c.encode(connected, forKey: .connected)
        try c.encode(known ? restartPending : nil, forKey: .restartPending)
        try c.encode(sshKeyOnHost, forKey: .sshKeyOnHost)
        try c.encode(sshKeyWanted, forKey: .sshKeyWanted)
    }

    /// Everything as the inventory wants it.
    public var ok: Bool {
        inInventory && moduleUpToDate && tokenOnHost != nil && tokenOnHost == tokenWanted
            && sshKeyOK && ownershipOK && running && registered == true && !restartPending
            && confined == true && connected != false
    }

    /// The SSH key file on the host is the inventory's, or the inventory gives none.
    // LIMITATION: a key left on the host after the inventory dropped it is not flagged.
    public var sshKeyOK: Bool {
        sshKeyWanted == nil || sshKeyOnHost == sshKeyWanted
    }

    /// Confinement as the status reports it: nil when the unit does not run; true when
    /// the inventory turned confinement off for the agent; else RootDirectory set and
    /// the token file bound read-only.
    public static func confinement(of unit: UnitState, tokenPath: String,
                                   wanted: Bool) -> Bool? {
        guard unit.isRunning else { return nil }
        guard wanted else { return true }
        return !unit.rootDirectory.isEmpty && unit.readOnlyBinds.contains(tokenPath)
    }

    /// The unit's main process started before the newest change to a secret file.
    public static func restartPending(_ unit: UnitState, secretsChanged: [Int]) -> Bool {
        guard unit.isRunning, let started = unit.startedAt,
              let changed = secretsChanged.max() else { return false }
        return started < changed
    }
}

public struct HostStatus: Sendable, Codable, Equatable {
    public var host: String
    public var address: String
    public var reachable: Bool
    /// Why the host could not be read.
    public var error: String?
    /// The index module (`default.nix`) matches the inventory.
    public var indexUpToDate: Bool
    /// The run record: `time` (ISO 8601, UTC), `run`, `operator`, `action`, `version`.
    public var lastApply: [String: String]
    /// The last run here was a retire and no agent of bkfleet's is left on the host.
    public var retired: Bool
    public var agents: [AgentStatus]
    /// An earlier switch did not finish (`.bkfleet-switch-pending` in the module folder):
    /// the files may not be what runs.
    public var switchPending = false
    /// Temporary files a killed push left in the module or secret folders.
    public var tempFiles: [String] = []
    /// The notes the table prints for this host, in words; filled by
    /// `StatusTable.annotated` once the host was read.
    public var notes: [String] = []

    public init(host: String, address: String, reachable: Bool, error: String? = nil,
                indexUpToDate: Bool, lastApply: [String: String], retired: Bool = false,
                agents: [AgentStatus]) {
        self.host = host
        self.address = address
        self.reachable = reachable
        self.error = error
        self.indexUpToDate = indexUpToDate
        self.lastApply = lastApply
        self.retired = retired
        self.agents = agents
    }

    enum CodingKeys: String, CodingKey {
        case host, address, reachable, error, indexUpToDate = "index_up_to_date"
        case lastApply = "last_apply", retired, agents
        case switchPending = "switch_pending", tempFiles = "temp_files", notes
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(host, forKey: .host)
        try c.encode(address, forKey: .address)
        try c.encode(reachable, forKey: .reachable)
        try c.encode(error, forKey: .error)
        try c.encode(indexUpToDate, forKey: .indexUpToDate)
        try c.encode(lastApply, forKey: .lastApply)
        try c.encode(retired, forKey: .retired)
        try c.encode(agents, forKey: .agents)
        try c.encode(switchPending, forKey: .switchPending)
        try c.encode(tempFiles, forKey: .tempFiles)
        try c.encode(notes, forKey: .notes)
    }

    public var ok: Bool {
        reachable && error == nil && indexUpToDate && agents.allSatisfy(\.ok)
            && !switchPending && tempFiles.isEmpty
    }

    /// The run record as status shows it: `time`, kept on the host as seconds since the
    /// epoch, becomes ISO 8601 in UTC (`2024-05-01T12:00:00Z`); other keys as they are.
    public static func presentRecord(_ record: [String: String]) -> [String: String] {
        var shown = record
        if let seconds = record["time"].flatMap(Double.init) {
            shown["time"] = UTCStamp.iso8601(Date(timeIntervalSince1970: seconds))
        }
        return shown
    }

    /// A host reads as retired when its last run was a retire and the probe found no
    /// module, secret folder or loaded unit of any agent on it.
    public static func isRetired(_ state: HostState) -> Bool {
        guard state.lastApply["action"] == "retire" else { return false }
        return !state.agents.values.contains { found in
            found.secretDir != nil || found.unit.loaded || !found.secrets.isEmpty
        } && state.modules.keys.allSatisfy { $0 == "default.nix" }
    }
}

public enum FleetStatus {
    /// Reads every host (at most `parallel` at once), in the given order.
    public static func read(hosts: [Host], context: RunContext) -> [HostStatus] {
        let limit = context.options.parallel ?? context.inventory.defaults.parallel
        let box = StatusBox()
        _ = FleetRunner.run(hosts: hosts, parallel: limit, rollout: Rollout()) { host in
            box.add(HostRun(host: host, context: context).status())
            return HostReport(host: host.name, outcome: .unchanged)
        }
        return hosts.map { host in
            box.status(of: host.name)
                ?? HostStatus(host: host.name, address: host.address, reachable: false,
                              error: "not read", indexUpToDate: false, lastApply: [:],
                              agents: [])
        }
    }
}

/// Statuses handed in by host threads, guarded by a lock.
private final class StatusBox: @unchecked Sendable {
    private let lock = NSLock()
    private var statuses: [String: HostStatus] = [:]

    func add(_ status: HostStatus) { lock.withLock { statuses[status.host] = status } }

    func status(of host: String) -> HostStatus? { lock.withLock { statuses[host] } }
}

extension HostRun {
    func status() -> HostStatus {
        var status = HostStatus(host: host.name, address: host.address, reachable: false,
                                indexUpToDate: false, lastApply: [:], agents: [])
        do {
            let session = try connect()
            defer { session.close() }
            status.reachable = true
            let state = try probe(session)
            let desired = try step(.plan) {
                try DesiredState(host: host, inventory: inventory, renderer: context.renderer,
                                 secrets: context.secrets)
            }
            let plan = Planner.plan(desired: desired, state: state,
                                    secretDir: inventory.defaults.secretDir,
                                    moduleDir: inventory.defaults.moduleDir)
            let changed = Set(plan.modules.map(\.file))
            status.indexUpToDate = !changed.contains("default.nix")
            status.lastApply = HostStatus.presentRecord(state.lastApply)
            status.retired = HostStatus.isRetired(state)
            status.switchPending = state.switchPending
            status.tempFiles = (state.agents.values.flatMap(\.tempFiles)
                + state.moduleTempFiles).sorted()
            let names = Set(desired.agents.keys).union(state.agents.keys.filter { name in
                state.modules["\(name).nix"] != nil || state.agents[name]?.secretDir != nil
                    || state.agents[name]?.unit.loaded == true
            })
            status.agents = names.sorted().map { name in
                agentStatus(name, desired: desired.agents[name],
                            found: state.agents[name] ?? AgentOnHost(), state: state,
                            moduleChanged: changed.contains("\(name).nix"))
            }
        } catch let failure as HostFailure {
            status.error = context.scrub("at \(failure.step.rawValue): \(failure.message)")
            log.write("status failed at \(failure.step.rawValue): "
                      + context.scrub(failure.message))
        } catch {
            status.error = context.scrub("\(error)")
        }
        if status.error != nil && status.agents.isEmpty {
            status.agents = host.agents.sorted().map(unreadAgent)
        }
        return status
    }

    /// An agent of a host that could not be read: the inventory's side only.
    private func unreadAgent(_ name: String) -> AgentStatus {
        let wanted = context.secrets.tokens[inventory.agents[name]?.token ?? ""]
        let key = inventory.agents[name]?.sshKey.flatMap { context.secrets.sshKeys[$0] }
        var agent = AgentStatus(
            agent: name, inInventory: true, moduleUpToDate: false, tokenOnHost: nil,
            tokenWanted: wanted?.fingerprint, tokenOwner: nil,
            tokenMode: nil, ownershipWanted: nil, ownershipOK: false, unit: "unknown",
            running: false, confined: nil, registered: nil,
            registration: "not checked: the host could not be read", connected: nil,
            restartPending: false, sshKeyOnHost: nil,
            sshKeyWanted: key?.fingerprint)
        agent.readFromHost = false
        return agent
    }

    private func agentStatus(_ name: String, desired: DesiredAgent?, found: AgentOnHost,
                             state: HostState, moduleChanged: Bool) -> AgentStatus {
        let profile = desired?.profile ?? inventory.agents[name]
        let unit = found.unit
        let token = found.secrets[.token]
        let wantedOwner = profile.map { Planner.secretOwnership(agent: $0, on: state) }
        let tokenPath = ModuleRenderer.secretPath(inventory, agent: name, kind: .token)
        var registered: Bool?
        var registration = "not checked: the unit does not run"
        if unit.isRunning, let profile {
            (registered, registration) = self.registration(profile, found: found,
                                                           hostname: state.hostname)
        }
        var connected: Bool?
        if case .api(let board) = context.registrations, let profile {
            let expected = expectedName(profile, hostname: state.hostname)
            let host = state.hostname.lowercased()
            connected = (try? board.agents(fetchedAfter: Date().addingTimeInterval(-30)))
                .map { agents in
                    agents.contains { $0.isConnected && $0.name == expected
                        && $0.hostname.lowercased() == host }
                }
        }
        return AgentStatus(
            agent: name, inInventory: desired != nil, moduleUpToDate: !moduleChanged,
            tokenOnHost: token.map { Digest.fingerprint(hex: $0.sha256) },
            tokenWanted: desired?.secrets[.token]?.fingerprint,
            tokenOwner: token.map { "\($0.ownership.owner):\($0.ownership.group)" },
            tokenMode: token.map { Self.fourDigits($0.ownership.mode) },
            ownershipWanted: desired == nil ? nil : wantedOwner.map {
                "\($0.owner):\($0.group) \(Self.fourDigits($0.mode))"
            },
            ownershipOK: token != nil && token?.ownership == wantedOwner,
            unit: unit.loaded ? unit.summary : "not loaded", running: unit.isRunning,
            confined: AgentStatus.confinement(of: unit, tokenPath: tokenPath,
                                              wanted: profile?.confinement != false),
            registered: registered, registration: registration, connected: connected,
            restartPending: AgentStatus.restartPending(
                unit, secretsChanged: Array(found.secretModified.values)),
            sshKeyOnHost: found.secrets[.sshKey].map { Digest.fingerprint(hex: $0.sha256) },
            sshKeyWanted: desired?.secrets[.sshKey]?.fingerprint)
    }

    private static func fourDigits(_ mode: String) -> String {
        mode.count == 3 ? "0" + mode : mode
    }

    /// Registered since the unit started: through the API when configured, otherwise
    /// from the agent's log.
    private func registration(_ profile: AgentProfile, found: AgentOnHost,
                              hostname: String) -> (Bool, String) {
        let expected = expectedName(profile, hostname: hostname)
        switch context.registrations {
        case .agentLog:
            if found.logLines.last?.contains("Buildkite rejected the registration") == true {
                return (false, "Buildkite rejected its token (agent log)")
            }
            let marker = "Successfully registered agent \"\(expected)\""
            return found.logLines.contains { $0.contains(marker) }
                ? (true, "registered as \"\(expected)\" (agent log)")
                : (false, "no registration as \"\(expected)\" logged since the unit started")
        case .api(let board):
            let started = Date(timeIntervalSince1970: TimeInterval(found.unit.startedAt ?? 0))
            do {
                let agents = try board.agents(fetchedAfter: Date().addingTimeInterval(-30))
                if RegistrationMatch.find(in: agents, name: expected, hostname: hostname,
                                          startedAfter: started, skew: 5) != nil {
                    return (true, "registered as \"\(expected)\" (Buildkite API)")
                }
                return (false, "Buildkite lists no connected agent \"\(expected)\"")
            } catch {
                return (false, "Buildkite API: \(error)")
            }
        }
    }
}
