// One host's whole run, start to finish, on its own thread: connect, check the host key,
// probe, plan, push, rebuild, hand secrets over to new agent users, verify. Straight-line
// code over blocking SSH calls; each step either moves on or ends the host with a
// message naming the step. It decides nothing about other hosts.
import Foundation

final class HostRun {
    let host: Host
    let context: RunContext
    var inventory: Inventory { context.inventory }
    private var log: HostLog
    private let started = Date()

    init(host: Host, context: RunContext) {
        self.host = host
        self.context = context
        self.log = HostLog(directory: context.runDirectory, host: host.name)
    }

    func run() -> HostReport {
        var report = HostReport(host: host.name, outcome: .unchanged)
        do {
            try converge(&report)
        } catch let failure as HostFailure {
            report.outcome = .failed(step: failure.step, message: context.scrub(failure.message))
            log.write("FAILED at \(failure.step.rawValue): \(context.scrub(failure.message))")
        } catch {
            report.outcome = .failed(step: .done, message: context.scrub("\(error)"))
        }
        report.seconds = Date().timeIntervalSince(started)
        report.logPath = log.path
        // The sink reports the failure (or the success) from the finished report.
        context.events.finished(report)
        return report
    }

    // MARK: - The steps

    private func converge(_ report: inout HostReport) throws {
        let session = try connect()
        defer { session.close() }

        let state = try probe(session)
        try checkImport(state)
        let desired = try step(.plan) {
            try DesiredState(host: host, inventory: inventory, renderer: context.renderer,
                             secrets: context.secrets)
        }
        let plan = Planner.plan(desired: desired, state: state,
                                secretDir: inventory.defaults.secretDir)
        report.plan = plan
        report.snapshot = HostSnapshot(state)
        try checkApproved(report)
        if context.options.dryRun {
            report.outcome = plan.isEmpty ? .unchanged : .changed
            if context.options.deep && plan.needsRebuild {
                report.deepOutput = try deepDryRun(session, plan: plan)
            }
            return
        }
        if plan.isEmpty {
            report.agents = verifyOnce(desired: desired, state: state)
            if let bad = report.agents.first(where: { !$0.ok }) {
                throw HostFailure(.verify, "agent \(bad.agent): \(bad.detail)")
            }
            return
        }

        report.outcome = .changed
        try push(session, plan: plan, desired: desired, state: state)
        if plan.needsRebuild {
            try rebuild(session)
            report.rebuilt = true
        }
        try finish(session, plan: plan, desired: desired)
        report.agents = try verifyAfterChange(session, plan: plan, desired: desired,
                                              before: state)
        if let bad = report.agents.first(where: { !$0.ok }) {
            throw HostFailure(.verify, "agent \(bad.agent): \(bad.detail)")
        }
    }

    /// Connects, checks the host key before anything else is sent, and logs in.
    private func connect() throws -> SSHSession {
        let endpoint = SSHEndpoint(name: host.name, address: host.address, port: host.port)
        let defaults = inventory.defaults
        context.events.event(host: host.name, step: .connect,
                             message: "connecting to \(endpoint.addressAndPort)")
        let session: SSHSession
        do {
            session = try SSHSession.connect(to: endpoint, timeout: defaults.connectTimeout,
                                             keepaliveSeconds: 15)
        } catch {
            throw HostFailure(.connect, "\(error); check the host's address and port in "
                              + "the inventory and that sshd runs there (waited up to "
                              + "\(Int(defaults.connectTimeout)) s, connect_timeout)")
        }
        do {
            try checkHostKey(session)
            try step(.authenticate) {
                try session.authenticate(user: host.user, identity: context.identity)
            }
        } catch {
            session.close()
            throw error
        }
        return session
    }

    private func checkHostKey(_ session: SSHSession) throws {
        let file = inventory.defaults.knownHosts
        switch session.checkHostKey(knownHostsFile: file) {
        case .match:
            return
        case .unknown(let fingerprint, let line):
            if context.options.acceptNewHostKeys {
                try step(.hostKey) { try appendKnownHost(line: line, file: file) }
                log.write("recorded new host key \(fingerprint) in \(file)")
                context.events.event(host: host.name, step: .hostKey,
                                     message: "recorded new host key \(fingerprint)")
                return
            }
            throw HostFailure(.hostKey, """
                unknown host key \(fingerprint) for \(session.endpoint.label); nothing was \
                sent. Check it out of band (e.g. `ssh-keygen -lf \
                /etc/ssh/ssh_host_ed25519_key.pub` on the host), then rerun with \
                --accept-new-host-keys or add this line to \(file):
                  \(line)
                """)
        case .changed(let fingerprint, let knownLine):
            let whereKnown = knownLine.map { "\(file):\($0)" } ?? file
            throw HostFailure(.hostKey, """
                HOST KEY CHANGED for \(session.endpoint.label): it now offers \
                \(fingerprint), which does not match \(whereKnown). Nothing was sent. If the \
                host was reinstalled, remove the old line and rerun; otherwise investigate.
                """)
        }
    }

    private func probe(_ session: SSHSession) throws -> HostState {
        context.events.event(host: host.name, step: .probe, message: "reading state")
        let output = try remote(session, .probe, script: RemoteScripts.probe,
                                name: "bkfleet-probe",
                                arguments: [inventory.defaults.moduleDir,
                                            inventory.defaults.secretDir] + host.agents)
        return try step(.probe) { try HostState.parse(output) }
    }

    /// A host whose configuration never imports bkfleet's folder would "converge"
    /// without running a single agent, so stop and say what to add.
    private func checkImport(_ state: HostState) throws {
        guard host.rebuildCommand.hasPrefix("nixos-rebuild")
                && !host.rebuildCommand.contains("--flake") else { return }
        let dir = inventory.defaults.moduleDir
        guard let config = state.configurationNix else {
            throw HostFailure(.probe, "/etc/nixos/configuration.nix not found on the host; "
                              + "is this NixOS? For a flake, set rebuild_command")
        }
        let relative = dir.hasPrefix("/etc/nixos/")
            ? "./" + dir.dropFirst("/etc/nixos/".count) : nil
        let active = config.split(separator: "\n").map { line -> Substring in
            line.firstIndex(of: "#").map { line[..<$0] } ?? line
        }.joined(separator: "\n")
        let imported = [relative, dir].compactMap { $0 }.contains { path in
            active.range(of: #"(^|[\s\["])\#(NSRegularExpression.escapedPattern(for: path))/?($|[\s\]";])"#,
                         options: .regularExpression) != nil
        }
        if !imported {
            throw HostFailure(.probe, """
                /etc/nixos/configuration.nix does not import \(dir), so its agents would \
                never run. Add this line inside the configuration's top-level attribute set, \
                then rerun:
                  imports = [ \(relative ?? dir) ];
                (or add \(relative ?? dir) to an existing imports list)
                """)
        }
    }

    /// With a saved plan, the host must plan now exactly as it did then.
    private func checkApproved(_ report: HostReport) throws {
        guard let approved = context.options.approved else { return }
        guard let then = approved[host.name], then.error == nil else {
            throw HostFailure(.plan, "not in the saved plan (or it could not be read when "
                              + "the plan was made); make a new plan")
        }
        let differences = then.differences(from: SavedHostPlan(report: report,
                                                               address: host.address))
        if !differences.isEmpty {
            throw HostFailure(.plan, "refused: the host drifted since the plan was made ("
                              + differences.joined(separator: "; ")
                              + "); nothing was changed. Make a new plan and review it.")
        }
    }

    /// Writes secrets and modules in one round trip, secret bytes on standard input.
    private func push(_ session: SSHSession, plan: HostPlan, desired: DesiredState,
                      state: HostState) throws {
        var ops = PushBatch()
        let dirs = inventory.defaults
        ops.dir(dirs.secretDir, Planner.secretRootOwnership)
        for name in desired.agents.keys.sorted() {
            let agent = desired.agents[name]!.profile
            ops.dir("\(dirs.secretDir)/\(name)",
                    Planner.secretDirOwnership(agent: agent, on: state))
        }
        var written = 0
        for change in plan.secrets where change.action != .remove {
            guard let value = desired.agents[change.agent]?.secrets[change.kind] else { continue }
            let agent = desired.agents[change.agent]!.profile
            ops.write(ModuleRenderer.secretPath(inventory, agent: change.agent, kind: change.kind),
                      Planner.secretOwnership(agent: agent, on: state), value.bytes)
            written += 1
        }
        for change in plan.secrets where change.action == .remove
            && desired.agents[change.agent] != nil {
            ops.remove(ModuleRenderer.secretPath(inventory, agent: change.agent,
                                                 kind: change.kind))
        }
        for repair in plan.ownership { ops.own(repair.path, repair.to) }
        if !plan.modules.isEmpty {
            ops.dir(dirs.moduleDir, FileOwnership(owner: "root", group: "root", mode: "755"))
        }
        for change in plan.modules {
            let path = "\(dirs.moduleDir)/\(change.file)"
            if let text = change.new {
                ops.write(path, FileOwnership(owner: "root", group: "root", mode: "644"),
                          Array(text.utf8))
            } else {
                ops.remove(path)
            }
        }
        context.events.event(host: host.name, step: .push,
                             message: "\(written) secret(s), \(plan.modules.count) module file(s)")
        _ = try remote(session, .push, script: RemoteScripts.push, name: "bkfleet-push",
                       arguments: [dirs.moduleDir, dirs.secretDir], stdin: ops.payload())
    }

    /// Stages the planned modules in a temporary copy of /etc/nixos and asks NixOS what
    /// it would start, stop and restart. Module text only: no secret is sent.
    private func deepDryRun(_ session: SSHSession, plan: HostPlan) throws -> String {
        let moduleDir = inventory.defaults.moduleDir
        guard moduleDir.hasPrefix("/etc/nixos/") else {
            throw HostFailure(.plan, "--deep stages /etc/nixos, but module_dir \(moduleDir) "
                              + "is outside it")
        }
        var input: [UInt8] = []
        for change in plan.modules {
            if let text = change.new {
                input += Array("write \(change.file) \(text.utf8.count)\n".utf8) + Array(text.utf8)
            } else {
                input += Array("rm \(change.file) 0\n".utf8)
            }
        }
        input += Array("end\n".utf8)
        context.events.event(host: host.name, step: .plan,
                             message: "nixos-rebuild dry-activate on staged modules")
        let command = Shell.command(script: RemoteScripts.deepDryRun, name: "bkfleet-deep",
                                    arguments: [String(moduleDir.dropFirst("/etc/nixos/".count))],
                                    sudo: host.user != "root")
        let result = try step(.plan) {
            try session.run(command, stdin: input, timeout: inventory.defaults.rebuildTimeout)
        }
        let output = context.scrub(result.stdoutText + result.stderrText)
        log.write("dry-activate of the staged modules:\n\(output)")
        if result.exitStatus != 0 {
            throw HostFailure(.plan, "nixos-rebuild dry-activate of the planned modules "
                              + "failed (status \(result.exitStatus)):\n    "
                              + output.split(separator: "\n").suffix(15)
                                .joined(separator: "\n    "))
        }
        return output
    }

    private func rebuild(_ session: SSHSession) throws {
        context.events.event(host: host.name, step: .rebuild, message: host.rebuildCommand)
        let command = (host.user == "root" ? "" : "sudo -n ") + host.rebuildCommand
        let result = try step(.rebuild) {
            try session.run(command, timeout: inventory.defaults.rebuildTimeout)
        }
        let output = context.scrub(result.stdoutText + result.stderrText)
        log.write("$ \(command)\n\(output)")
        if result.exitStatus != 0 {
            let tail = output.split(separator: "\n").suffix(15).joined(separator: "\n    ")
            throw HostFailure(.rebuild, """
                `\(host.rebuildCommand)` exited with status \(result.exitStatus); last lines:
                    \(tail)
                full output: \(log.path ?? "(no log)")
                """)
        }
    }

    /// After the switch: secrets of agents whose user did not exist yet go to that user,
    /// removed agents lose their secret folders, and units whose secret changed under an
    /// unchanged module (or which were found stopped) are restarted.
    private func finish(_ session: SSHSession, plan: HostPlan, desired: DesiredState) throws {
        var ops = PushBatch()
        let secretDir = inventory.defaults.secretDir
        var restart = Set(plan.units.filter { $0.actor == .bkfleet }.map(\.agent))
        if !plan.handover.isEmpty {
            let fresh = try unitStates(session, agents: plan.handover)
            for name in plan.handover {
                guard let agent = desired.agents[name], fresh.agents[name]?.uid != nil
                        || fresh.agents[name]?.unit.loaded == true else { continue }
                let owner = FileOwnership(owner: agent.profile.userName,
                                          group: agent.profile.userName, mode: "400")
                ops.dir("\(secretDir)/\(name)",
                        FileOwnership(owner: owner.owner, group: owner.group, mode: "700"))
                for kind in agent.secrets.keys.sorted(by: { $0.rawValue < $1.rawValue }) {
                    ops.own(ModuleRenderer.secretPath(inventory, agent: name, kind: kind), owner)
                }
                if fresh.agents[name]?.unit.isRunning != true { restart.insert(name) }
            }
        }
        for name in plan.removedAgents { ops.removeDirectory("\(secretDir)/\(name)") }
        if !ops.isEmpty {
            context.events.event(host: host.name, step: .handover,
                                 message: "secrets to agent users: \(plan.handover.joined(separator: ", "))")
            _ = try remote(session, .handover, script: RemoteScripts.push, name: "bkfleet-push",
                           arguments: [inventory.defaults.moduleDir, secretDir],
                           stdin: ops.payload())
        }
        if !restart.isEmpty {
            context.events.event(host: host.name, step: .handover,
                                 message: "restarting \(restart.sorted().joined(separator: ", "))")
            _ = try remote(session, .handover, script: RemoteScripts.restart,
                           name: "bkfleet-restart", arguments: restart.sorted())
        }
    }

    // MARK: - Verification

    /// Agents that nothing touched: one look at what the probe saw.
    private func verifyOnce(desired: DesiredState, state: HostState) -> [AgentResult] {
        desired.agents.keys.sorted().map { name in
            let agent = desired.agents[name]!
            return judge(agent, found: state.agents[name] ?? AgentOnHost(),
                         hostname: state.hostname, final: true).result
        }
    }

    /// Agents started or restarted in this run: wait until each has settled (running,
    /// restart count steady over a short window) and registered, or the time runs out.
    private func verifyAfterChange(_ session: SSHSession, plan: HostPlan,
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

    private struct Verdict {
        var result: AgentResult
        var pending: Bool
    }

    /// One agent against the three promises: running and settled, confined, registered.
    private func judge(_ agent: DesiredAgent, found: AgentOnHost, hostname: String,
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
        switch context.registrations {
        case .agentLog:
            let marker = "Successfully registered agent \"\(expected)\""
            guard let line = found.logLines.last(where: { $0.contains(marker) }) else {
                return result(false, "no registration as \"\(expected)\" logged since the unit "
                              + "started", pending: true)
            }
            if let range = line.range(of: " with tags [") {
                tags = " with tags [" + line[range.upperBound...]
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
            } catch {
                return result(false, "Buildkite API: \(error)", pending: true)
            }
        }
        let confined = agent.profile.confinement ? ", confined" : ""
        return result(true, "running\(confined), registered as \"\(expected)\"\(tags)")
    }

    /// The name the agent registers under: its display name (NixOS default
    /// `%hostname-<agent>-%n`) with the agent's own placeholders filled.
    private func expectedName(_ agent: AgentProfile, hostname: String) -> String {
        (agent.displayName ?? "%hostname-\(agent.name)-%n")
            .replacingOccurrences(of: "%hostname", with: hostname)
            .replacingOccurrences(of: "%n", with: "1")
    }

    // MARK: - Plumbing

    private func unitStates(_ session: SSHSession, agents: [String]) throws -> HostState {
        let output = try remote(session, .verify, script: RemoteScripts.unitState,
                                name: "bkfleet-units", arguments: agents)
        return try step(.verify) { try HostState.parse(output) }
    }

    /// Runs one of bkfleet's scripts; a non-zero exit ends the host with its stderr.
    private func remote(_ session: SSHSession, _ step: Step, script: String, name: String,
                        arguments: [String], stdin: [UInt8] = []) throws -> String {
        let command = Shell.command(script: script, name: name, arguments: arguments,
                                    sudo: host.user != "root")
        let result = try self.step(step) {
            try session.run(command, stdin: stdin, timeout: inventory.defaults.commandTimeout)
        }
        if result.exitStatus != 0 {
            let err = context.scrub(result.stderrText.trimmingCharacters(in: .whitespacesAndNewlines))
            if err.contains("a password is required") || err.contains("a terminal is required") {
                throw HostFailure(step, "sudo on the host wants a password for \(host.user); "
                                  + "give it NOPASSWD for bkfleet's commands, or log in as root")
            }
            throw HostFailure(step, "\(name) exited with status \(result.exitStatus): \(err)")
        }
        return result.stdoutText
    }

    /// Runs `body`, turning any error into a failure of `step`.
    private func step<T>(_ step: Step, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let failure as HostFailure {
            throw failure
        } catch {
            throw HostFailure(step, "\(error)")
        }
    }
}

/// Why a host stopped, and at which step.
struct HostFailure: Error {
    var step: Step
    var message: String

    init(_ step: Step, _ message: String) {
        self.step = step
        self.message = message
    }
}
