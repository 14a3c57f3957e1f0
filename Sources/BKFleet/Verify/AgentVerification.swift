// The verify step of a host's run: every agent running with a steady restart count,
// confined (RootDirectory set, token bound) and registered with Buildkite, through the
// REST API or the agent's own log. It reads; it changes nothing on the host.
import Foundation

extension HostRun {
    /// Agents that nothing touched: one look at what the probe saw.
    func verifyOnce(desired: DesiredState, state: HostState) -> [AgentResult] {
        desired.agents.keys.sorted().map { name in
            let agent = desired.agents[name]!
            return judge(agent, found: state.agents[name] ?? AgentOnHost(),
                         hostname: state.hostname, final: true).result
        }
    }

    /// Agents started or restarted in this run: wait until each has settled (running,
    /// restart count steady over a short window) and registered, or the time runs out.
    func verifyAfterChange(_ session: SSHSession, plan: HostPlan,
                                   desired: DesiredState, before: HostState) throws
        -> [AgentResult] {
        let names = desired.agents.keys.sorted()
        guard !names.isEmpty else { return [] }
        context.events.event(host: host.name, step: .verify,
                             message: "waiting for \(names.joined(separator: ", "))")
        let deadline = Date().addingTimeInterval(inventory.defaults.verifyTimeout)
        var previous: HostState?
        var steadySince: [String: Date] = [:]
        while true {
            let now = try unitStates(session, agents: names)
            var results: [AgentResult] = []
            var pending = false
            for name in names {
                let found = now.agents[name] ?? AgentOnHost()
                let last = previous?.agents[name]?.unit
                if found.unit.isRunning, let last, last.isRunning,
                   last.restarts == found.unit.restarts,
                   last.startedAt == found.unit.startedAt {
                    if steadySince[name] == nil { steadySince[name] = Date() }
                } else {
                    steadySince[name] = nil
                }
                let settled = steadySince[name].map { Date().timeIntervalSince($0) >= 2 } ?? false
                let verdict = judge(desired.agents[name]!, found: found,
                                    hostname: before.hostname,
                                    final: Date() >= deadline, settled: settled)
                if verdict.pending { pending = true }
                results.append(verdict.result)
            }
            if !pending || Date() >= deadline { return results }
            previous = now
            Thread.sleep(forTimeInterval: 1)
        }
    }

    struct Verdict {
        var result: AgentResult
        var pending: Bool
    }

    /// One agent against the three promises: running and settled, confined, registered.
    func judge(_ agent: DesiredAgent, found: AgentOnHost, hostname: String,
                       final: Bool, settled: Bool = true) -> Verdict {
        let name = agent.profile.name
        let fingerprint = agent.secrets[.token]?.fingerprint
        func result(_ ok: Bool, _ detail: String, pending: Bool = false) -> Verdict {
            Verdict(result: AgentResult(agent: name, ok: ok, detail: detail,
                                        tokenFingerprint: fingerprint),
                    pending: pending && !final)
        }
        let unit = found.unit
        if found.logLines.last?.contains("Buildkite rejected the registration") == true {
            return result(false, "Buildkite rejected its token \(fingerprint ?? "")"
                          + " (unit is \(unit.summary), restarted \(unit.restarts)×)")
        }
        guard unit.isRunning else {
            return result(false, "unit \(agent.profile.unitName) is \(unit.summary)"
                          + (unit.restarts > 0 ? ", restarted \(unit.restarts)×" : ""),
                          pending: true)
        }
        guard settled else { return result(false, "unit still settling", pending: true) }
        if agent.profile.confinement {
            let token = ModuleRenderer.secretPath(inventory, agent: name, kind: .token)
            guard !unit.rootDirectory.isEmpty else {
                return result(false, "unit runs without RootDirectory: not confined")
            }
            guard unit.readOnlyBinds.contains(token) else {
                return result(false, "token \(token) is not bound into the confinement")
            }
        }
        let expected = expectedName(agent.profile, hostname: hostname)
        var tags = ""
        var registeredTags: [String] = []
        switch context.registrations {
        case .agentLog:
            let marker = "Successfully registered agent \"\(expected)\""
            guard let line = found.logLines.last(where: { $0.contains(marker) }) else {
                return result(false, "no registration as \"\(expected)\" logged since the unit "
                              + "started", pending: true)
            }
            if let range = line.range(of: " with tags [") {
                tags = " with tags [" + line[range.upperBound...]
                registeredTags = line[range.upperBound...].dropLast()
                    .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            }
        case .api(let board):
            let startedAt = Date(timeIntervalSince1970: TimeInterval(unit.startedAt ?? 0))
            do {
                let agents = try board.agents(fetchedAfter: Date().addingTimeInterval(-0.5))
                guard let match = RegistrationMatch.find(in: agents, name: expected,
                                                         hostname: hostname,
                                                         startedAfter: startedAt, skew: 5)
                else {
                    return result(false, "Buildkite lists no connected agent \"\(expected)\" "
                                  + "registered since the unit started", pending: true)
                }
                tags = " with tags [" + match.metaData.joined(separator: ", ") + "]"
                registeredTags = match.metaData
            } catch {
                return result(false, "Buildkite API: \(error)", pending: true)
            }
        }
        // An agent that registered with other tags runs an old configuration (a switch
        // that did not restart it, say): it is not what the inventory asks for.
        let missing = agent.profile.tags.sorted(by: { $0.key < $1.key })
            .map { "\($0.key)=\($0.value)" }.filter { !registeredTags.contains($0) }
        if !missing.isEmpty {
            return result(false, "registered as \"\(expected)\"\(tags), without "
                          + missing.joined(separator: ", ") + " from the inventory: it runs an "
                          + "older configuration", pending: true)
        }
        let confined = agent.profile.confinement ? ", confined" : ""
        return result(true, "running\(confined), registered as \"\(expected)\"\(tags)")
    }

    /// The name the agent registers under: its display name (NixOS default
    /// `%hostname-<agent>-%n`) with the agent's own placeholders filled.
    func expectedName(_ agent: AgentProfile, hostname: String) -> String {
        (agent.displayName ?? "%hostname-\(agent.name)-%n")
            .replacingOccurrences(of: "%hostname", with: hostname)
            .replacingOccurrences(of: "%n", with: "1")
    }
}
