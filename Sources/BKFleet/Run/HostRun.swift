// One host's whole run, start to finish, on its own thread: connect, check the host key,
// probe, plan, push, rebuild, hand secrets over to new agent users, verify. Straight-line
// code over blocking SSH calls; each step either moves on or ends the host with a
// message naming the step. The push, rebuild and verify steps live in their own folders
// as extensions of this type. It decides nothing about other hosts.
import Foundation

final class HostRun {
    let host: Host
    let context: RunContext
    var inventory: Inventory { context.inventory }
    var log: HostLog
    private let started = Date()
    /// The command holding the host lock on the current session (apply only).
    var hostLock: SSHHeldCommand?
    /// The run record's lines, written by the host lock as it is let go (HostRecord.swift).
    var runRecord: [String]?
    /// The host verified: its backups go as the host lock is let go.
    var dropBackups = false
    /// The switch went through: once the host verified, its pending-switch mark goes as
    /// the host lock is let go.
    var clearSwitchMark = false
    /// The system profile's generation after this run's switch, once known.
    var generationAfterRebuild: String?
    /// The lock round trip found backups left by a run that died before verifying.
    var staleBackups = false

    init(host: Host, context: RunContext) {
        self.host = host
        self.context = context
        self.log = HostLog(directory: context.runDirectory, host: host.name,
                           scrub: { [context] in context.scrub($0) })
    }

    func run() -> HostReport {
        var report = HostReport(host: host.name, outcome: .unchanged)
        do {
            try converge(&report)
        } catch let failure as HostFailure {
            let message = context.scrub(failure.message)
            report.outcome = .failed(step: failure.step, message: message)
            log.write("FAILED at \(failure.step.rawValue): \(message)")
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
        var session = try connect()
        defer {
            releaseLock()
            session.close()
        }

        var state = context.options.dryRun ? try probe(session) : try lockedProbe(session)
        // A host being retired gets an empty index whether or not NixOS imports it.
        if !context.options.retire { try checkImport(state) }
        let desired = try step(.plan) {
            try DesiredState(host: host, inventory: inventory, renderer: context.renderer,
                             secrets: context.secrets)
        }
        let foreign = Planner.foreignFolders(state, moduleDir: inventory.defaults.moduleDir,
                                             secretDir: inventory.defaults.secretDir)
        if !foreign.isEmpty {
            throw HostFailure(.plan, "\(foreign.joined(separator: " and ")) already "
                              + "hold\(foreign.count == 1 ? "s" : "") files bkfleet did not "
                              + "put there; bkfleet manages only a folder of its own (new, "
                              + "empty, or made by bkfleet). Set module_dir / secret_dir to "
                              + "such a folder, e.g. /etc/nixos/bkfleet and "
                              + "/var/lib/bkfleet/secrets. Nothing was changed.")
        }
        report.hostname = state.hostname
        var plan = Planner.plan(desired: desired, state: state,
                                secretDir: inventory.defaults.secretDir,
                                moduleDir: inventory.defaults.moduleDir,
                                restartStale: context.options.restartStale)
        if let only = context.options.onlyAgents { plan = plan.limited(to: only) }
        report.plan = plan
        report.snapshot = HostSnapshot(state)
        do {
            try checkApproved(report)
        } catch {
            // A refused host shows the refusal, not the plan it will not get.
            report.plan = nil
            throw error
        }
        if context.options.dryRun {
            report.outcome = plan.isEmpty ? .unchanged : .changed
            if context.options.deep && plan.needsRebuild {
                report.deepOutput = try deepDryRun(session, plan: plan)
            }
            return
        }
        if plan.isEmpty {
            report.agents = verifyOnce(desired: desired, state: state)
            if report.agents.contains(where: { !$0.ok }) {
                // Nothing to change, yet an agent is not (yet) as promised: one restarted
                // a moment ago by someone else, say. It gets the wait a changed one gets,
                // and a failure that cannot change (a rejected token) ends it at once.
                report.agents = try verifyAfterChange(session, desired: desired,
                                                      before: state, firstLook: state)
            }
            if let bad = report.agents.first(where: { !$0.ok }) {
                throw HostFailure(.verify, "agent \(bad.agent): \(bad.detail)")
            }
            if staleBackups { dropBackup() }
            if context.options.retire { try verifyRetired(session, state: state) }
            recordRun()
            return
        }

        report.outcome = .changed
        // A rollback checks that each agent registers again as it did before; with the
        // API the probe read no log lines of running agents, so read them now.
        if logMode != "all" { try readRegistrationLines(session, into: &state) }
        // From the first write on, a failure rolls the host back to what the probe saw
        // (see HostRollback.swift) unless --no-rollback.
        do {
            try push(session, plan: plan, desired: desired, state: state, backup: backupDir)
            if plan.needsRebuild {
                session = try rebuild(session, handover: plan.handover)
                report.rebuilt = true
            }
            let look = try finish(session, plan: plan, desired: desired)
            report.agents = try verifyAfterChange(session, desired: desired, before: state,
                                                  firstLook: look)
            if let bad = report.agents.first(where: { !$0.ok }) {
                throw HostFailure(.verify, "agent \(bad.agent): \(bad.detail)")
            }
        } catch let failure as HostFailure {
            throw rollBack(&session, after: failure, before: state)
        }
        dropBackup()
        if context.options.retire { try verifyRetired(session, state: state) }
        recordRun()
    }

    /// Adds the registration log lines of the running agents to `state`.
    private func readRegistrationLines(_ session: SSHSession, into state: inout HostState)
        throws {
        let running = state.agents.filter { $0.value.unit.isRunning }.map(\.key).sorted()
        guard !running.isEmpty else { return }
        let now = try unitStates(session, agents: running, allLogLines: true)
        for name in running {
            state.agents[name]?.logLines = now.agents[name]?.logLines ?? []
        }
    }

    /// Connects, checks the host key before anything else is sent, and logs in.
    func connect() throws -> SSHSession {
        let endpoint = SSHEndpoint(name: host.name, address: host.address, port: host.port)
        let defaults = inventory.defaults
        // The jump host (if any) is connected, checked and logged in to first, or shared
        // with hosts already behind it (JumpPool, HostJump.swift).
        var jump = try connectJump()
        context.events.event(host: host.name, step: .connect,
                             message: "connecting to \(endpoint.addressAndPort)"
                                + (host.jump.map { " through \($0.name)" } ?? ""))
        func open() throws -> SSHSession {
            try SSHSession.connect(to: endpoint, timeout: defaults.connectTimeout,
                                   keepaliveSeconds: 15, via: jump?.session)
        }
        /// Stops sharing this host's jump session and lets go of it.
        func dropJump() {
            if let (old, _) = jump, let key = jumpKey {
                context.jumps.retire(key, old)
                context.jumps.release(key, old)
            }
            jump = nil
        }
        let session: SSHSession
        do {
            do {
                session = try open()
            } catch let failure where jump?.fresh == false {
                // A shared jump may have died since it was shared: once more on a new one.
                log.write("through the shared jump session: \(failure); connecting a new one")
                dropJump()
                jump = try connectJump()
                session = try open()
            }
        } catch {
            dropJump()
            // A new jump that failed already says so.
            if let failure = error as? HostFailure { throw failure }
            throw HostFailure(.connect, "\(error); check the host's address and port in "
                              + "the inventory and that sshd runs there"
                              + (host.jump.map { " and is reachable from \($0.name)" } ?? "")
                              + " (connect_timeout \(Int(defaults.connectTimeout)) s)")
        }
        if let (shared, _) = jump, let key = jumpKey {
            let pool = context.jumps
            session.onClose { pool.release(key, shared) }
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

    func checkHostKey(_ session: SSHSession) throws {
        let file = inventory.defaults.knownHosts
        // A known_hosts that exists but is no readable file would otherwise look like a
        // changed key; say what is really wrong.
        var info = stat()
        if stat(file, &info) == 0 && ((info.st_mode & S_IFMT) != S_IFREG
                                       || access(file, R_OK) != 0) {
            throw HostFailure(.hostKey, "cannot read known_hosts \(file): it is not a "
                              + "readable file; fix known_hosts in [defaults]. Nothing was sent.")
        }
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

    func probe(_ session: SSHSession) throws -> HostState {
        context.events.event(host: host.name, step: .probe, message: "reading state")
        let output = try remote(session, .probe, script: RemoteScripts.probe,
                                name: "bkfleet-probe",
                                arguments: [inventory.defaults.moduleDir,
                                            inventory.defaults.secretDir, logMode]
                                    + host.agents)
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
            throw HostFailure(.plan, "refused: what would be applied differs from the saved "
                              + "plan (" + differences.joined(separator: "; ")
                              + "); nothing was changed. Make a new plan and review it.")
        }
    }

    // MARK: - Plumbing

    /// Which agent log lines the scripts read: every agent's when registrations are
    /// confirmed from the log; with the Buildkite API, only a unit's that is not running
    /// (why it stopped: a rejected token, say). Each read starts programs on the host.
    var logMode: String {
        if case .api = context.registrations { return "trouble" }
        return "all"
    }

    /// The agents' units now (and their log lines, as `logMode` says, or all).
    func unitStates(_ session: SSHSession, agents: [String],
                    allLogLines: Bool = false) throws -> HostState {
        let output = try remote(session, .verify, script: RemoteScripts.unitState,
                                name: "bkfleet-units",
                                arguments: [allLogLines ? "all" : logMode] + agents)
        return try step(.verify) { try HostState.parse(output) }
    }

    /// Runs one of bkfleet's scripts; a non-zero exit ends the host with its stderr.
    func remote(_ session: SSHSession, _ step: Step, script: String, name: String,
                arguments: [String], stdin: [UInt8] = []) throws -> String {
        let command = shellCommand(script, name, arguments)
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

    /// The command line running one of bkfleet's scripts, through sudo unless root.
    func shellCommand(_ script: String, _ name: String, _ arguments: [String]) -> String {
        Shell.command(script: script, name: name, arguments: arguments,
                      sudo: host.user != "root")
    }

    /// Runs `body`, turning any error into a failure of `step`.
    func step<T>(_ step: Step, _ body: () throws -> T) throws -> T {
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
