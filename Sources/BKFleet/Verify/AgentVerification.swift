// The verify step of a host's run: every agent running with a steady restart count,
// confined (RootDirectory set, token bound) and registered with Buildkite, through the
// REST API or the agent's own log. It reads; it changes nothing on the host.
import Foundation

extension HostRun {
    /// Agents that nothing touched: one look at what the probe saw.
    func verifyOnce(desired: DesiredState, state: HostState) -> [AgentResult] {
        desired.agents.keys.sorted().map { name in
            let agent = desired.agents[name]!
            let found = state.agents[name] ?? AgentOnHost()
            // Every converged host of the run shares one listing, the first fetched after
            // the run started; a unit that started since needs a listing younger than it.
            let unitStart = Date(timeIntervalSince1970: TimeInterval(found.unit.startedAt ?? 0))
            let listedAfter = max(context.started, min(unitStart, Date()))
            return judge(agent, found: found, hostname: state.hostname, final: true,
                         listedAfter: listedAfter).result
        }
    }

    /// Agents started or restarted in this run: wait until each has settled (running, the
    /// same main process for over 2 s) and registered, or the time runs out. `firstLook`
    /// is a look at the units taken just before (by `finish`), if any.
    func verifyAfterChange(_ session: SSHSession, desired: DesiredState,
                           before: HostState, firstLook: HostState? = nil) throws
        -> [AgentResult] {
        let names = desired.agents.keys.sorted()
        guard !names.isEmpty else { return [] }
        context.events.event(host: host.name, step: .verify,
                             message: "waiting for \(names.joined(separator: ", "))")
        let deadline = Date().addingTimeInterval(inventory.defaults.verifyTimeout)
        var previous: HostState?
        var steadySince: [String: Date] = [:]
        var now = try firstLook ?? unitStates(session, agents: names)
        while true {
            var results: [AgentResult] = []
            var pending = false
            // Agents that wait only for Buildkite to list them: settled and confined.
            var unlisted: [(DesiredAgent, AgentOnHost)] = []
            for name in names {
                let found = now.agents[name] ?? AgentOnHost()
                if Self.steady(found.unit, since: previous?.agents[name]?.unit) {
                    if steadySince[name] == nil { steadySince[name] = Date() }
                } else {
                    steadySince[name] = nil
                }
                // Settled: the same main process has run for over 2 s. The host's own start
                // time proves that in one look (whole seconds, so 3 apart means over 2 s);
                // watching the restart count stay put for 2 s is the fallback, and took
                // every changed host 3 s or more after its rebuild.
                let age = found.unit.startedAt.map { now.now - $0 }
                let settled = (found.unit.isRunning && now.now > 0 && (age ?? 0) >= 3)
                    || (steadySince[name].map { Date().timeIntervalSince($0) >= 2 } ?? false)
                let verdict = judge(desired.agents[name]!, found: found,
                                    hostname: before.hostname,
                                    final: Date() >= deadline, settled: settled)
                if verdict.pending { pending = true }
                if verdict.unlisted { unlisted.append((desired.agents[name]!, found)) }
                results.append(verdict.result)
            }
            if !pending || Date() >= deadline { return results }
            let waiting = results.filter { !$0.ok }.count
            if case .api = context.registrations, unlisted.count == waiting {
                // Only Buildkite's listing is awaited: ask it (one listing shared by every
                // host) every half second, and the host only every 3 s, to see that the
                // agents still run as the same processes, or why not. Each look at the
                // host starts programs there, on CPU that other hosts' rebuilds and the
                // agents' own registration need.
                let nextLook = min(deadline, Date().addingTimeInterval(3))
                while Date() < nextLook {
                    Thread.sleep(forTimeInterval: 0.5)
                    let listed = unlisted.allSatisfy { agent, found in
                        !judge(agent, found: found, hostname: before.hostname, final: false)
                            .unlisted
                    }
                    if listed { break }
                }
            } else {
                // Half a second: a settled, registered agent is seen soon after it is.
                Thread.sleep(forTimeInterval: 0.5)
            }
            previous = now
            now = try unitStates(session, agents: names)
        }
    }

    /// Running now and at the last look, as the same process with the same restart count.
    static func steady(_ unit: UnitState, since last: UnitState?) -> Bool {
        guard let last else { return false }
        return unit.isRunning && last.isRunning && last.restarts == unit.restarts
            && last.startedAt == unit.startedAt
    }

    struct Verdict {
        var result: AgentResult
        var pending: Bool
        /// Running, settled and confined; only not (yet) listed by Buildkite as
        /// registered with the inventory's tags.
        var unlisted = false
    }

    /// One agent against the three promises: running and settled, confined, registered.
    func judge(_ agent: DesiredAgent, found: AgentOnHost, hostname: String,
               final: Bool, settled: Bool = true, listedAfter: Date? = nil) -> Verdict {
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
        let tags: String
        let registeredTags: [String]
        switch registration(as: expected, hostname: hostname, found: found,
                             listedAfter: listedAfter) {
        case .missing(let detail):
            var verdict = result(false, detail, pending: true)
            verdict.unlisted = true
            return verdict
        case .registered(let list, let text):
            registeredTags = list
            tags = text
        }
        // An agent that registered with other tags runs an old configuration (a switch
        // that did not restart it, say): it is not what the inventory asks for.
        let missing = agent.profile.tags.sorted(by: { $0.key < $1.key })
            .map { "\($0.key)=\($0.value)" }.filter { !registeredTags.contains($0) }
        if !missing.isEmpty {
            var verdict = result(false, "registered as \"\(expected)\"\(tags), without "
                                 + missing.joined(separator: ", ") + " from the inventory: it "
                                 + "runs an older configuration", pending: true)
            verdict.unlisted = true
            return verdict
        }
        let confined = agent.profile.confinement ? ", confined" : ""
        return result(true, "running\(confined), registered as \"\(expected)\"\(tags)")
    }

    enum Registration {
        /// Registered since the unit started, with these tags (` with tags [...]` as
        /// text, empty when the log line names none).
        case registered([String], String)
        /// Not (yet) registered: why, for the report.
        case missing(String)
    }

    /// Whether the agent of `found`'s unit registered as `expected` since the unit last
    /// started: from its log line, or from Buildkite's agent list when the API is given,
    /// a list fetched after `listedAfter` (default: half a second ago).
    func registration(as expected: String, hostname: String, found: AgentOnHost,
                      listedAfter: Date? = nil) -> Registration {
        switch context.registrations {
        case .agentLog:
            let marker = "Successfully registered agent \"\(expected)\""
            guard let line = found.logLines.last(where: { $0.contains(marker) }) else {
                return .missing("no registration as \"\(expected)\" logged since the unit "
                                + "started")
            }
            guard let range = line.range(of: " with tags [") else { return .registered([], "") }
            return .registered(Self.tagList(line[range.upperBound...]),
                               " with tags [" + line[range.upperBound...])
        case .api(let board):
            let startedAt = Date(timeIntervalSince1970: TimeInterval(found.unit.startedAt ?? 0))
            do {
                let agents = try board.agents(
                    fetchedAfter: listedAfter ?? Date().addingTimeInterval(-0.5))
                guard let match = RegistrationMatch.find(in: agents, name: expected,
                                                         hostname: hostname,
                                                         startedAfter: startedAt, skew: 5)
                else {
                    return .missing("Buildkite lists no connected agent \"\(expected)\" "
                                    + "registered since the unit started")
                }
                return .registered(match.metaData, " with tags ["
                                   + match.metaData.joined(separator: ", ") + "]")
            } catch {
                return .missing("Buildkite API: \(error)")
            }
        }
    }

    /// The tags of a registration log line, from `rest` (what follows ` with tags [`).
    static func tagList(_ rest: Substring) -> [String] {
        rest.dropLast().split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    }

    /// The name the agent registers under: its display name (NixOS default
    /// `%hostname-<agent>-%n`) with the agent's own placeholders filled.
    func expectedName(_ agent: AgentProfile, hostname: String) -> String {
        (agent.displayName ?? "%hostname-\(agent.name)-%n")
            .replacingOccurrences(of: "%hostname", with: hostname)
            .replacingOccurrences(of: "%n", with: "1")
    }
}
