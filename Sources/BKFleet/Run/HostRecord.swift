// The end of a successful apply or retire on one host: the run record bkfleet keeps on
// the host (RemoteScripts.runRecord) for `status` to show, and, for retire, the proof
// that none of the host's agents still runs. The record holds no secret; writing it is
// best effort and never fails a host that converged.
import Foundation

extension HostRun {
    /// Leaves `time`, `run`, `operator`, `action` and `version` for the host's run
    /// record, which the held host lock writes as it is let go (RemoteScripts.lockHold):
    /// no second command for it.
    func recordRun() {
        let environment = ProcessInfo.processInfo.environment
        // Without USER (cron, CI, `sudo -i`), the account the process runs as.
        let account = getpwuid(getuid()).flatMap { String(validatingCString: $0.pointee.pw_name) }
        let user = environment["USER"] ?? environment["LOGNAME"] ?? account ?? "unknown"
        let action = context.options.recordAction
            ?? (context.options.retire ? "retire" : "apply")
        let lines = [
            "time=\(Int(Date().timeIntervalSince1970))",
            "run=\((context.runDirectory as NSString).lastPathComponent)",
            "operator=\(user)@\(ProcessInfo.processInfo.hostName)",
            "action=\(action)",
            "version=\(BKFleetVersion.string)",
        ]
        guard hostLock != nil else {
            log.write("no host lock held: the run record \(RemoteScripts.runRecord) was "
                      + "not written")
            return
        }
        // One record line each: a control character (a newline in USER, say) would make
        // a line of its own.
        runRecord = lines.map { line in
            String(line.unicodeScalars.map { scalar -> Character in
                scalar.value < 0x20 || scalar.value == 0x7f ? "?" : Character(scalar)
            })
        }
    }

    /// After a retire's rebuild: every agent the host had (found by the probe) or the
    /// inventory gave it must be stopped and unloaded.
    func verifyRetired(_ session: SSHSession, state: HostState) throws {
        let names = Set(state.agents.keys).union(context.retiredAgents[host.name] ?? [])
            .sorted()
        guard !names.isEmpty else { return }
        context.events.event(host: host.name, step: .verify,
                             message: "checking that \(names.joined(separator: ", ")) stopped")
        let now = try unitStates(session, agents: names)
        let alive = names.filter { name in
            let unit = now.agents[name]?.unit ?? UnitState()
            return unit.loaded && unit.activeState != "inactive"
                && unit.activeState != "failed"
        }
        if !alive.isEmpty {
            throw HostFailure(.verify, "still running after the rebuild: "
                              + alive.map { "buildkite-agent-\($0).service" }
                                .joined(separator: ", ")
                              + "; check the host's configuration.nix for agents bkfleet "
                              + "does not manage, then rerun retire")
        }
    }
}
