// Rolling a host back when a change failed after its first write: put back the module
// files and secrets the push replaced (kept in a root-only backup folder on the host until
// the host verifies), switch back to the previous generation (or, on a fresh host, rebuild
// without bkfleet's modules), restart only the agents this run changed, and verify the
// agents that ran before again: running, confined and registered as they were. It never
// restarts an agent that still runs the process the probe found.
import Foundation

extension HostRun {
    /// This run's backup folder on the host (root 0700, removed once the host verified).
    var backupDir: String { "\(RemoteScripts.backupRoot)/\(context.runID)" }

    /// This run's backups (and any a dead run left) go once the host verified: the host
    /// lock removes them as it is let go (RemoteScripts.lockHold), no command of its own.
    func dropBackup() {
        dropBackups = true
    }

    /// Rolls back after `failure` (unless --no-rollback) and returns the failure to report:
    /// the original one, followed by what the rollback did or why it failed.
    func rollBack(_ session: inout SSHSession, after failure: HostFailure,
                  before state: HostState) -> HostFailure {
        // The restore puts back the mark as it was before the run (a switch still pending
        // from an earlier run stays pending).
        clearSwitchMark = false
        if context.options.noRollback {
            let note = "left as it is for inspection (--no-rollback); the files this run "
                + "replaced are in \(backupDir) on the host (root only)"
            log.write(note)
            return HostFailure(failure.step, failure.message + "\n" + note)
        }
        context.events.event(host: host.name, step: failure.step,
                             message: "failed; rolling back to the previous configuration")
        // The log scrubs every line it writes.
        log.write("rolling back after: \(failure.message)")
        do {
            if session.isClosed || hostLock == nil {
                session = try reconnect(session, step: failure.step, attempts: 3)
            }
            let restored = try remote(session, failure.step, script: RemoteScripts.restore,
                                      name: "bkfleet-restore", arguments: [backupDir])
            let lines = restored.split(separator: "\n").map(String.init)
            let count = lines.first ?? "restored 0"
            // Backups of earlier runs that never verified (killed mid-run): the files are
            // now as the last verified run left them, which the generation the probe saw
            // may not match, so rebuild from them rather than step back one generation.
            let earlier = lines.first { $0.hasPrefix("earlier ") }
                .flatMap { Int($0.dropFirst(8)) } ?? 0
            var done = [count + " file(s) (modules and secrets as they were"
                + (earlier > 0 ? " before \(earlier) earlier unfinished run(s))" : ")")]
            let before = state.generation.isEmpty ? "-" : state.generation
            if earlier > 0 {
                if lines.contains("noindex") {
                    try writeEmptyIndex(session, failure.step)
                }
                session = try rebuild(session, kind: "rollback")
                done.append("rebuilt from the last verified modules")
            } else if let after = generationAfterRebuild, after != before {
                if before == "-" {
                    // No earlier generation to switch back to: rebuild without the agents.
                    try writeEmptyIndex(session, failure.step)
                    session = try rebuild(session, kind: "rollback")
                    done.append("no earlier generation: rebuilt without bkfleet's agents")
                } else {
                    session = try rebuild(session, kind: "rollback",
                                          command: host.rebuildCommand + " --rollback")
                    done.append("switched back to \(before.split(separator: "/").last ?? "")")
                }
            }
            // An agent still running the process the probe found runs the token and
            // configuration it had before this run, which the restore put back: restarting
            // it would only cut its jobs short. Restart the others that ran before.
            // After an earlier run's restore, the agents the unfinished run left (running
            // or failing on its files) start again on the restored ones.
            // LIMITATION: an agent the unfinished run removed is not brought back here.
            let seen = state.agents.filter {
                $0.value.unit.isRunning || (earlier > 0 && $0.value.unit.loaded)
            }.keys.sorted()
            let now = seen.isEmpty ? HostState() : try unitStates(session, agents: seen)
            // An agent only the unfinished run had added is gone with its files: nothing
            // to restart or check.
            let ran = seen.filter { name in
                earlier == 0 || now.agents[name]?.unit.loaded == true
            }
            // After an earlier run's restore, no running process has the restored files.
            let restart = ran.filter { name in
                earlier > 0
                    || !Self.sameProcess(state.agents[name]?.unit, now.agents[name]?.unit)
            }
            if !restart.isEmpty {
                _ = try remote(session, failure.step, script: RemoteScripts.restart,
                               name: "bkfleet-restart", arguments: restart)
                done.append("restarted \(restart.joined(separator: ", "))")
            }
            let untouched = ran.filter { !restart.contains($0) }
            if !untouched.isEmpty {
                done.append("left \(untouched.joined(separator: ", ")) running untouched "
                            + "(same process as before the run)")
            }
            done.append(try checkRestored(session, agents: ran, before: state))
            dropBackup()
            let text = "rolled back: " + done.joined(separator: "; ")
            log.write(text)
            return HostFailure(failure.step, failure.message + "\n" + text)
        } catch {
            let reason = (error as? HostFailure)?.message ?? "\(error)"
            let text = "ROLLBACK FAILED: \(context.scrub(reason)); the host may be between "
                + "configurations; the files this run replaced are in \(backupDir) on the "
                + "host (root only)"
            log.write(text)
            return HostFailure(failure.step, failure.message + "\n" + text)
        }
    }

    /// Writes the empty index over the module folder's `default.nix`: the configuration
    /// imports that folder, so a rebuild then runs without bkfleet's agents.
    private func writeEmptyIndex(_ session: SSHSession, _ step: Step) throws {
        var ops = PushBatch()
        ops.write("\(inventory.defaults.moduleDir)/default.nix",
                  FileOwnership(owner: "root", group: "root", mode: "644"),
                  Array(Self.emptyIndex.utf8))
        _ = try remote(session, step, script: RemoteScripts.push, name: "bkfleet-push",
                       arguments: [inventory.defaults.moduleDir, inventory.defaults.secretDir],
                       stdin: ops.payload())
    }

    /// What a fresh host's module index becomes when it is rolled back.
    static let emptyIndex = """
        # Managed by bkfleet: no agents (a failed first apply was rolled back).
        {
          imports = [ ];
        }

        """

    /// Whether `now` is the very process `before` was: running, same main PID, same start.
    static func sameProcess(_ before: UnitState?, _ now: UnitState?) -> Bool {
        guard let before, let now, before.isRunning, now.isRunning,
              let pid = before.properties["MainPID"], pid != "0", pid != "",
              now.properties["MainPID"] == pid, let started = before.startedAt else {
            return false
        }
        return now.startedAt == started
    }

    /// The agents that ran before are verified again as fully as after a change: running
    /// with a steady restart count, confined if they were, and registered under the name
    /// and tags their log showed before the run (or, with no such line, the inventory's
    /// name for them).
    private func checkRestored(_ session: SSHSession, agents: [String],
                               before: HostState) throws -> String {
        guard !agents.isEmpty else { return "no agent ran before: none runs now" }
        let deadline = Date().addingTimeInterval(inventory.defaults.verifyTimeout)
        var previous: HostState?
        while true {
            let now = try unitStates(session, agents: agents)
            var good: [String] = []
            var bad: [String] = []
            for name in agents {
                let found = now.agents[name] ?? AgentOnHost()
                let earlier = before.agents[name] ?? AgentOnHost()
                switch restoredVerdict(name, found: found, last: previous?.agents[name]?.unit,
                                       before: earlier, hostname: before.hostname) {
                case .success(let text): good.append(text)
                case .failure(let problem): bad.append(problem.message)
                }
            }
            if bad.isEmpty {
                return "verified after the rollback: " + good.joined(separator: "; ")
            }
            if Date() >= deadline {
                throw HostFailure(.verify, "after the rollback "
                                  + bad.joined(separator: "; "))
            }
            previous = now
            Thread.sleep(forTimeInterval: 2)
        }
    }

    /// One agent after a rollback, against what the probe saw before the run.
    private func restoredVerdict(_ name: String, found: AgentOnHost, last: UnitState?,
                                 before: AgentOnHost, hostname: String)
        -> Result<String, HostFailure> {
        let unit = found.unit
        guard Self.steady(unit, since: last) else {
            return .failure(HostFailure(.verify, "\(name) did not come back to a steady "
                                        + "running state (unit is \(unit.summary))"))
        }
        var confined = ""
        if !before.unit.rootDirectory.isEmpty {
            guard unit.rootDirectory == before.unit.rootDirectory else {
                return .failure(HostFailure(.verify, "\(name) runs without the confinement "
                                            + "it had before (RootDirectory "
                                            + "\(before.unit.rootDirectory))"))
            }
            let token = ModuleRenderer.secretPath(inventory, agent: name, kind: .token)
            if before.unit.readOnlyBinds.contains(token)
                && !unit.readOnlyBinds.contains(token) {
                return .failure(HostFailure(.verify, "\(name): token \(token) is no longer "
                                            + "bound into the confinement"))
            }
            confined = ", confined"
        }
        let earlier = Self.loggedRegistration(before.logLines)
        let expected = earlier?.name
            ?? inventory.agents[name].map { expectedName($0, hostname: hostname) }
            ?? "\(hostname)-\(name)-1"
        switch registration(as: expected, hostname: hostname, found: found) {
        case .missing(let detail):
            return .failure(HostFailure(.verify, "\(name): \(detail)"))
        case .registered(let tags, let text):
            let lost = (earlier?.tags ?? []).filter { !tags.contains($0) }
            if !lost.isEmpty {
                return .failure(HostFailure(.verify, "\(name) registered as \"\(expected)\""
                                            + "\(text), without \(lost.joined(separator: ", "))"
                                            + " it had before the run"))
            }
            return .success("\(name) running again\(confined), registered as "
                            + "\"\(expected)\"\(text)")
        }
    }

    /// The name and tags of the last `Successfully registered agent "NAME" with tags
    /// [...]` line, if any.
    static func loggedRegistration(_ lines: [String]) -> (name: String, tags: [String])? {
        let marker = "Successfully registered agent \""
        guard let line = lines.last(where: { $0.contains(marker) }),
              let start = line.range(of: marker) else { return nil }
        let rest = line[start.upperBound...]
        guard let close = rest.firstIndex(of: "\"") else { return nil }
        let name = String(rest[..<close])
        var tags: [String] = []
        if let open = rest.range(of: " with tags [") {
            tags = tagList(rest[open.upperBound...])
        }
        return (name, tags)
    }
}
