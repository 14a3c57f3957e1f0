// The rebuild step of a host's run (`nixos-rebuild switch`, or the host's own command),
// run detached as a transient systemd unit and followed across dropped connections, and
// `plan --deep`'s dry activation of staged modules. Output is scrubbed of secret values
// before it is logged or shown. It never decides to roll back (HostRollback.swift does).
import Foundation

extension HostRun {
    /// Where the detached rebuilds keep their output and exit status on the host.
    static let runsDir = "/var/lib/bkfleet/runs"

    /// Runs the rebuild detached, as the transient unit `bkfleet-KIND-RUN`, and follows
    /// it in short waits. A dropped connection does not stop the switch: bkfleet
    /// reconnects (bounded attempts), takes its lock back and picks up the result.
    /// Returns the session in use at the end, which may be a new one.
    /// `handover` names agents whose user this switch creates: their units cannot read
    /// their token until bkfleet hands it over after the switch, so a switch that reports
    /// only those units as failed has done its work.
    func rebuild(_ session: SSHSession, kind: String = "rebuild", command: String? = nil,
                 handover: [String] = []) throws -> SSHSession {
        let command = command ?? host.rebuildCommand
        context.events.event(host: host.name, step: .rebuild, message: command)
        let unit = "bkfleet-\(kind)-\(context.runID)"
        let where_ = "\(Self.runsDir)/\(context.runID)/\(kind).log"
        let deadline = Date().addingTimeInterval(inventory.defaults.rebuildTimeout)
        let slice = max(1, min(20, Int(inventory.defaults.commandTimeout / 2)))
        var session = session
        var started = false
        var drops = 0
        while true {
            let output: String
            do {
                // No slice outlasts rebuild_timeout: the last one is cut to the time left.
                let wait = Self.waitSlice(slice, left: deadline.timeIntervalSinceNow)
                if !started {
                    // Start and first wait in one round trip (starting again is a no-op).
                    let answer = try checked(session.run(
                        shellCommand(RemoteScripts.rebuildStart, "bkfleet-rebuild-start",
                                     [context.runID, Self.runsDir, kind, command,
                                      String(wait)]),
                        timeout: Double(wait) + inventory.defaults.commandTimeout),
                        "bkfleet-rebuild-start")
                    if answer.hasPrefix("busy ") {
                        guard Date() < deadline else {
                            let other = answer.dropFirst(5)
                                .trimmingCharacters(in: .whitespacesAndNewlines)
                            throw HostFailure(.rebuild, "an earlier run's rebuild (\(other)) "
                                              + "is still active on the host; rerun when it ends")
                        }
                        context.events.event(host: host.name, step: .rebuild,
                                             message: "waiting for an earlier run's rebuild "
                                             + "to end")
                        Thread.sleep(forTimeInterval: 2)
                        continue
                    }
                    guard answer.hasPrefix("started\n") else {
                        throw HostFailure(.rebuild, "bkfleet-rebuild-start answered "
                                          + "unexpectedly: \(context.scrub(answer))")
                    }
                    started = true
                    log.write("$ \(command)  (as systemd unit \(unit), output in \(where_))")
                    output = String(answer.dropFirst("started\n".count))
                } else {
                    output = try checked(session.run(
                        shellCommand(RemoteScripts.rebuildWait, "bkfleet-rebuild-wait",
                                     [context.runID, Self.runsDir, kind, String(wait)]),
                        timeout: Double(wait) + inventory.defaults.commandTimeout),
                        "bkfleet-rebuild-wait")
                }
            } catch let error as SSHError {
                drops += 1
                log.write("connection trouble while `\(command)` runs: \(error)")
                guard drops <= 5, Date() < deadline else {
                    throw HostFailure(.rebuild, "\(error); `\(command)` goes on on the host "
                                      + "as systemd unit \(unit), output in \(where_)")
                }
                context.events.event(host: host.name, step: .rebuild,
                                     message: "connection lost while `\(command)` runs on "
                                     + "the host; reconnecting to follow it")
                session = try reconnect(session, step: .rebuild)
                continue
            }
            let lines = output.split(separator: "\n", omittingEmptySubsequences: false)
            switch lines.first.map(String.init) ?? "" {
            case "running":
                if Date() >= deadline {
                    throw HostFailure(.rebuild, "`\(command)` still runs after "
                                      + "\(Int(inventory.defaults.rebuildTimeout)) s "
                                      + "(rebuild_timeout); it goes on on the host as systemd "
                                      + "unit \(unit), output in \(where_)")
                }
                continue
            case "lost":
                throw HostFailure(.rebuild, "`\(command)` (systemd unit \(unit)) ended "
                                  + "without an exit status: killed or the host restarted; "
                                  + "see \(where_) and `journalctl -u \(unit)` on the host")
            default:
                break
            }
            var status: Int32 = -1
            var text = ""
            for (index, line) in lines.enumerated() {
                if line.hasPrefix("status\t") { status = Int32(line.dropFirst(7)) ?? -1 }
                if line.hasPrefix("generation\t") {
                    generationAfterRebuild = String(line.dropFirst(11))
                }
                if line == "output" {
                    text = lines[(index + 1)...].joined(separator: "\n")
                    break
                }
            }
            let scrubbed = context.scrub(text)
            log.write("$ \(command)\n\(scrubbed)")
            if status != 0 && Self.onlyUnitsFailed(scrubbed, within: handover) {
                log.write("the switch reported only agents awaiting their secrets as failed "
                          + "(\(handover.joined(separator: ", "))); bkfleet hands them over next")
            } else if status != 0 {
                let tail = scrubbed.split(separator: "\n").suffix(15).joined(separator: "\n    ")
                throw HostFailure(.rebuild, """
                    `\(command)` exited with status \(status); last lines:
                        \(tail)
                    full output: \(log.path ?? "(no log)")
                    """)
            }
            return session
        }
    }

    /// Seconds the next wait on the host may take: a slice, or less when less of
    /// rebuild_timeout is left (at least one second, the wait script's unit).
    static func waitSlice(_ slice: Int, left: TimeInterval) -> Int {
        max(1, min(slice, Int(left.rounded(.up))))
    }

    /// A finished helper command's stdout, or a failure of the rebuild step.
    private func checked(_ result: RemoteResult, _ name: String) throws -> String {
        if result.exitStatus != 0 {
            let err = context.scrub(result.stderrText
                .trimmingCharacters(in: .whitespacesAndNewlines))
            throw HostFailure(.rebuild, "\(name) exited with status \(result.exitStatus): "
                              + err)
        }
        return result.stdoutText
    }

    /// Stages the planned modules in a temporary copy of /etc/nixos and asks NixOS what
    /// it would start, stop and restart. Module text only: no secret is sent.
    func deepDryRun(_ session: SSHSession, plan: HostPlan) throws -> String {
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
        let command = shellCommand(RemoteScripts.deepDryRun, "bkfleet-deep",
                                   [String(moduleDir.dropFirst("/etc/nixos/".count))])
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

    /// True when the rebuild's output names failed units (NixOS prints
    /// `warning: the following units failed: a.service, b.service`) and every one of them
    /// is the unit of an agent in `agents`.
    static func onlyUnitsFailed(_ output: String, within agents: [String]) -> Bool {
        guard !agents.isEmpty,
              let line = output.split(separator: "\n").last(where: {
                  $0.contains("the following units failed:") })
        else { return false }
        // After "failed:" (the line starts with "warning:", so not the first colon).
        guard let marker = line.range(of: "units failed:") else { return false }
        let listed = line[marker.upperBound...]
        let units = listed.split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        let allowed = Set(agents.map { "buildkite-agent-\($0).service" })
        return !units.isEmpty && units.allSatisfy { allowed.contains($0) }
    }
}
