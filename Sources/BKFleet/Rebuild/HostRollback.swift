// Rolling a host back when a change failed after its first write: put back the module
// files and secrets the push replaced (kept in a root-only backup folder on the host until
// the host verifies), switch back to the previous generation (or, on a fresh host, rebuild
// without bkfleet's modules), restart the agents that ran before and check them again.
// It does not re-check registrations of the old configuration (see LIMITATION below).
import Foundation

extension HostRun {
    /// This run's backup folder on the host (root 0700, removed once the host verified).
    var backupDir: String { "/var/lib/bkfleet/backup/\(context.runID)" }

    /// Removes the backup after success; best effort (a leftover is removed by the next
    /// run's push).
    func dropBackup(_ session: SSHSession) {
        _ = try? remote(session, .done, script: RemoteScripts.dropBackup,
                        name: "bkfleet-drop-backup", arguments: [backupDir])
    }

    /// Rolls back after `failure` (unless --no-rollback) and returns the failure to report:
    /// the original one, followed by what the rollback did or why it failed.
    func rollBack(_ session: inout SSHSession, after failure: HostFailure,
                  before state: HostState) -> HostFailure {
        if context.options.noRollback {
            let note = "left as it is for inspection (--no-rollback); the files this run "
                + "replaced are in \(backupDir) on the host (root only)"
            log.write(note)
            return HostFailure(failure.step, failure.message + "\n" + note)
        }
        context.events.event(host: host.name, step: failure.step,
                             message: "failed; rolling back to the previous configuration")
        log.write("rolling back after: \(context.scrub(failure.message))")
        do {
            if session.isClosed || hostLock == nil {
                session = try reconnect(session, step: failure.step, attempts: 3)
            }
            let restored = try remote(session, failure.step, script: RemoteScripts.restore,
                                      name: "bkfleet-restore", arguments: [backupDir])
            var done = [restored.trimmingCharacters(in: .whitespacesAndNewlines)
                + " file(s) (modules and secrets as they were)"]
            let before = state.generation.isEmpty ? "-" : state.generation
            if let after = generationAfterRebuild, after != before {
                if before == "-" {
                    // No earlier generation: the configuration imports the module folder,
                    // so leave an index importing nothing and rebuild without the agents.
                    var ops = PushBatch()
                    ops.write("\(inventory.defaults.moduleDir)/default.nix",
                              FileOwnership(owner: "root", group: "root", mode: "644"),
                              Array(Self.emptyIndex.utf8))
                    _ = try remote(session, failure.step, script: RemoteScripts.push,
                                   name: "bkfleet-push",
                                   arguments: [inventory.defaults.moduleDir,
                                               inventory.defaults.secretDir],
                                   stdin: ops.payload())
                    session = try rebuild(session, kind: "rollback")
                    done.append("no earlier generation: rebuilt without bkfleet's agents")
                } else {
                    session = try rebuild(session, kind: "rollback",
                                          command: host.rebuildCommand + " --rollback")
                    done.append("switched back to \(before.split(separator: "/").last ?? "")")
                }
            }
            let ran = state.agents.filter { $0.value.unit.isRunning }.keys.sorted()
            if !ran.isEmpty {
                _ = try remote(session, failure.step, script: RemoteScripts.restart,
                               name: "bkfleet-restart", arguments: ran)
            }
            done.append(try checkRestored(session, agents: ran))
            dropBackup(session)
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

    /// What a fresh host's module index becomes when it is rolled back.
    static let emptyIndex = """
        # Managed by bkfleet: no agents (a failed first apply was rolled back).
        {
          imports = [ ];
        }

        """

    /// The agents that ran before are running again with a steady restart count.
    /// LIMITATION: registration is not checked again: the previous configuration's
    /// expected names and tags are not known to this run.
    private func checkRestored(_ session: SSHSession, agents: [String]) throws -> String {
        guard !agents.isEmpty else { return "no agent ran before: none runs now" }
        let deadline = Date().addingTimeInterval(inventory.defaults.verifyTimeout)
        var previous: HostState?
        while true {
            let now = try unitStates(session, agents: agents)
            let steady = agents.filter { name in
                guard let unit = now.agents[name]?.unit, unit.isRunning,
                      let last = previous?.agents[name]?.unit, last.isRunning else {
                    return false
                }
                return last.restarts == unit.restarts && last.startedAt == unit.startedAt
            }
            if steady.count == agents.count {
                return "verified: \(agents.joined(separator: ", ")) running again"
            }
            if Date() >= deadline {
                let bad = agents.filter { !steady.contains($0) }
                throw HostFailure(.verify, "after the rollback \(bad.joined(separator: ", ")) "
                                  + "did not come back to a steady running state")
            }
            previous = now
            Thread.sleep(forTimeInterval: 2)
        }
    }
}
