// `status`: one read-only look at a host, agent by agent: module up to date, token
// fingerprint on the host against the inventory's, owner and mode, unit, confinement,
// registration, restart pending, and the run record of the last apply. It runs only the
// probe and the registration check; it never writes to the host (nor records host keys).
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
    /// Owner and mode as the inventory wants them on this host.
    public var ownershipOK: Bool
    /// `active/running`, `inactive/dead`, or `not loaded`.
    public var unit: String
    public var running: Bool
    public var confined: Bool
    /// Nil when not checked (the unit does not run).
    public var registered: Bool?
    public var registration: String
    /// The unit started before its token (or SSH key) file last changed.
    public var restartPending: Bool

    enum CodingKeys: String, CodingKey {
        case agent, inInventory = "in_inventory", moduleUpToDate = "module_up_to_date"
        case tokenOnHost = "token_on_host", tokenWanted = "token_wanted"
        case tokenOwner = "token_owner", tokenMode = "token_mode"
        case ownershipOK = "ownership_ok", unit, running, confined, registered, registration
        case restartPending = "restart_pending"
    }

    /// Everything as the inventory wants it.
    public var ok: Bool {
        inInventory && moduleUpToDate && tokenOnHost != nil && tokenOnHost == tokenWanted
            && ownershipOK && running && registered == true && !restartPending
            && confined
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
    /// The run record: `time` (epoch seconds), `run`, `operator`, `action`, `version`.
    public var lastApply: [String: String]
    public var agents: [AgentStatus]

    enum CodingKeys: String, CodingKey {
        case host, address, reachable, error, indexUpToDate = "index_up_to_date"
        case lastApply = "last_apply", agents
    }

    public var ok: Bool { reachable && indexUpToDate && agents.allSatisfy(\.ok) }
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
            status.lastApply = state.lastApply
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
        return status
    }

    private func agentStatus(_ name: String, desired: DesiredAgent?, found: AgentOnHost,
                             state: HostState, moduleChanged: Bool) -> AgentStatus {
        let profile = desired?.profile ?? inventory.agents[name]
        let unit = found.unit
        let token = found.secrets[.token]
        let wantedOwner = profile.map { Planner.secretOwnership(agent: $0, on: state) }
        let tokenPath = ModuleRenderer.secretPath(inventory, agent: name, kind: .token)
        let confined = !unit.rootDirectory.isEmpty && unit.readOnlyBinds.contains(tokenPath)
        var registered: Bool?
        var registration = "not checked: the unit does not run"
        if unit.isRunning, let profile {
            (registered, registration) = self.registration(profile, found: found,
                                                           hostname: state.hostname)
        }
        let lastChange = found.secretModified.values.max()
        let pending = unit.isRunning && lastChange != nil && unit.startedAt != nil
            && unit.startedAt! < lastChange!
        return AgentStatus(
            agent: name, inInventory: desired != nil, moduleUpToDate: !moduleChanged,
            tokenOnHost: token.map { Digest.fingerprint(hex: $0.sha256) },
            tokenWanted: desired?.secrets[.token]?.fingerprint,
            tokenOwner: token.map { "\($0.ownership.owner):\($0.ownership.group)" },
            tokenMode: token.map { $0.ownership.mode.count == 3 ? "0" + $0.ownership.mode
                                                                 : $0.ownership.mode },
            ownershipOK: token != nil && token?.ownership == wantedOwner,
            unit: unit.loaded ? unit.summary : "not loaded", running: unit.isRunning,
            confined: profile?.confinement == false ? true : confined,
            registered: registered, registration: registration, restartPending: pending)
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
