// The host lock and reconnecting: apply takes an flock on the host in the same round trip
// as its probe and holds it through a command that lives as long as the SSH session, so
// two runs never interleave on one host and a killed run's lock dies with its connection.
// After a dropped connection the run reconnects and takes its own lock back. Plans take
// no lock: they write nothing, not even a lock file.
import Foundation

extension HostRun {
    /// Who holds the lock, as other runs will see it: operator machine, pid, start time.
    var lockHolderText: String {
        let machine = ProcessInfo.processInfo.hostName
            .replacingOccurrences(of: " ", with: "_")
        let started = UTCStamp.iso8601()
        return "host=\(machine) pid=\(getpid()) started=\(started)"
    }

    /// Takes the host lock and reads the host's state in one round trip (apply only).
    func lockedProbe(_ session: SSHSession) throws -> HostState {
        context.events.event(host: host.name, step: .probe,
                             message: "taking the host lock, reading state")
        let output = try takeLock(session, script: RemoteScripts.lockedProbe,
                                  arguments: [inventory.defaults.moduleDir,
                                              inventory.defaults.secretDir, logMode]
                                      + host.agents)
        return try step(.probe) { try HostState.parse(output) }
    }

    /// Takes the lock again on a new session of the same run (after a reconnect).
    func relock(_ session: SSHSession) throws {
        _ = try takeLock(session, script: RemoteScripts.lockOnly, arguments: [])
    }

    /// Lets go of the host lock. A host that verified first has the lock's command clear
    /// the pending-switch mark, drop the backups and write the run record (best effort:
    /// a failure is logged, and a mark left makes the next run rebuild once more).
    func releaseLock() {
        guard let held = hostLock else { return }
        hostLock = nil
        guard runRecord != nil || dropBackups || clearSwitchMark else { return held.release() }
        let input = (clearSwitchMark ? "unmark \(switchMark)\n" : "")
            + (dropBackups ? "dropbackups\n" : "")
            + (runRecord ?? []).map { "record \($0)\n" }.joined() + "commit\n"
        runRecord = nil
        dropBackups = false
        clearSwitchMark = false
        do {
            let result = try held.finish(sending: Array(input.utf8),
                                         timeout: min(inventory.defaults.commandTimeout, 30),
                                         label: "bkfleet-lock")
            if result.exitStatus != 0 {
                let err = result.stderrText.trimmingCharacters(in: .whitespacesAndNewlines)
                log.write("could not clear \(switchMark), drop the backups in "
                          + "\(RemoteScripts.backupRoot) or write the run record "
                          + "\(RemoteScripts.runRecord) (status "
                          + "\(result.exitStatus))" + (err.isEmpty ? "" : ": \(err)"))
            }
        } catch {
            log.write("could not clear the switch mark, drop the backups or write the run "
                      + "record: \(error)")
        }
    }

    private func takeLock(_ session: SSHSession, script: String, arguments: [String]) throws
        -> String {
        let wait = inventory.defaults.lockTimeout
        let command = shellCommand(
            script, "bkfleet-lock",
            [String(Int(wait.rounded(.up))), context.runID, lockHolderText] + arguments)
        let (held, result) = try step(.probe) {
            try session.startHeld(
                command, marker: "end", timeout: wait + inventory.defaults.commandTimeout,
                label: "bkfleet-lock") { line in
                    guard line.hasPrefix("lockwait\t") else { return }
                    let holder = Self.describeHolder(String(line.dropFirst(9)))
                    context.events.event(host: host.name, step: .probe,
                                         message: "waiting up to \(Int(wait)) s for the host "
                                         + "lock, held by \(holder)")
                }
        }
        if let held {
            hostLock = held
            staleBackups = result.stdoutText.contains("\nstalebackup\t")
            return result.stdoutText
        }
        let lines = result.stdoutText.split(separator: "\n").map(String.init)
        if result.exitStatus == 75,
           let busy = lines.first(where: { $0.hasPrefix("lockbusy\t") }) {
            let holder = String(busy.dropFirst(9))
            throw HostFailure(.probe, """
                host lock /run/bkfleet.lock is held by \
                \(Self.describeHolder(holder)); waited \(Int(wait)) s \
                (lock_timeout) and changed nothing. Let that run finish and rerun; a run \
                that died releases the lock when its SSH session ends.\(Self.deadHint(holder))
                """)
        }
        let err = context.scrub(result.stderrText.trimmingCharacters(in: .whitespacesAndNewlines))
        if err.contains("a password is required") || err.contains("a terminal is required") {
            throw HostFailure(.probe, "sudo on the host wants a password for \(host.user); "
                              + "give it NOPASSWD for bkfleet's commands, or log in as root")
        }
        throw HostFailure(.probe, "bkfleet-lock exited with status \(result.exitStatus) "
                          + "before taking the host lock: \(err)")
    }

    /// `run=R host=H pid=P started=T holder-pid=Q` as a phrase for messages.
    static func describeHolder(_ text: String) -> String {
        var fields: [String: String] = [:]
        for word in text.split(separator: " ") {
            let parts = word.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { fields[parts[0]] = parts[1] }
        }
        guard let run = fields["run"] else {
            return "another process (holder unknown: \(text.isEmpty ? "no holder text" : text))"
        }
        return "bkfleet run \(run) from \(fields["host"] ?? "?") (pid \(fields["pid"] ?? "?"))"
            + ", started \(fields["started"] ?? "?")"
    }

    /// What to do when the holder's machine is gone without closing its connection: the
    /// host's sshd keeps that session (and the lock) until its keepalives give up.
    static func deadHint(_ text: String) -> String {
        guard let word = text.split(separator: " ").first(where: { $0.hasPrefix("holder-pid=") })
        else { return "" }
        return " If that run's machine lost its network without closing the connection, "
            + "the host keeps the lock until sshd drops the session (about 2 h 11 min with "
            + "sshd's defaults; see docs/security.md); once sure the run is gone, end the "
            + "lock's process on the host: kill \(word.dropFirst(11))"
    }

    /// Drops the session (and the lock it carried) and connects again, taking the lock
    /// back under the same run id: bounded attempts with growing pauses.
    func reconnect(_ old: SSHSession, step: Step, attempts: Int = 5) throws -> SSHSession {
        releaseLock()
        old.close()
        var last: Error?
        for attempt in 1...attempts {
            Thread.sleep(forTimeInterval: Double(min(2 * attempt, 10)))
            context.events.event(host: host.name, step: step,
                                 message: "reconnecting (attempt \(attempt) of \(attempts))")
            do {
                let session = try connect()
                do {
                    try relock(session)
                } catch {
                    session.close()
                    throw error
                }
                log.write("reconnected (attempt \(attempt)) and took the host lock back")
                return session
            } catch {
                last = error
                log.write("reconnect attempt \(attempt) failed: \(error)")
            }
        }
        let reason = (last as? HostFailure)?.message ?? last.map { "\($0)" } ?? "?"
        throw HostFailure(step, "lost the connection and could not reconnect in \(attempts) "
                          + "attempts; last error: \(reason)")
    }
}
