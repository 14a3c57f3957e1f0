// The push step of a host's run: secrets and modules in one round trip, and after the
// switch the hand-over of secrets to agent users that did not exist before it. Secret
// bytes leave this file only inside the push script's standard input.
import Foundation

extension HostRun {
    /// The empty file that says a switch is pending: made before the modules are written,
    /// removed once the host verified (HostLock.swift); the probe reports it.
    var switchMark: String { "\(inventory.defaults.moduleDir)/.bkfleet-switch-pending" }

    /// Writes secrets and modules in one round trip, secret bytes on standard input.
    func push(_ session: SSHSession, plan: HostPlan, desired: DesiredState,
                      state: HostState, backup: String? = nil) throws {
        var ops = PushBatch()
        let dirs = inventory.defaults
        let rootOnly = FileOwnership(owner: "root", group: "root", mode: "644")
        let marker = Array("Managed by bkfleet: files here are created and removed by it.\n"
                           .utf8)
        ops.dir(dirs.secretDir, Planner.secretRootOwnership)
        if plan.foldersToMark.contains(dirs.secretDir) {
            ops.write("\(dirs.secretDir)/.bkfleet", rootOnly, marker)
        }
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
        if !plan.modules.isEmpty || plan.foldersToMark.contains(dirs.moduleDir) {
            ops.dir(dirs.moduleDir, FileOwnership(owner: "root", group: "root", mode: "755"))
        }
        if plan.foldersToMark.contains(dirs.moduleDir) {
            ops.write("\(dirs.moduleDir)/.bkfleet", rootOnly, marker)
        }
        if plan.needsRebuild {
            // Cleared once the switch succeeded; while it stands, every run rebuilds, so
            // a failed, killed or timed-out switch is never mistaken for convergence.
            ops.mark(switchMark)
        }
        for change in plan.modules {
            let path = "\(dirs.moduleDir)/\(change.file)"
            if let text = change.new {
                ops.write(path, rootOnly, Array(text.utf8))
            } else {
                ops.remove(path)
            }
        }
        context.events.event(host: host.name, step: .push,
                             message: "\(written) secret(s), \(plan.modules.count) module file(s)")
        _ = try remote(session, .push, script: RemoteScripts.push, name: "bkfleet-push",
                       arguments: [dirs.moduleDir, dirs.secretDir] + (backup.map { [$0] } ?? []),
                       stdin: ops.payload())
    }

    /// After the switch: secrets of agents whose user did not exist yet go to that user,
    /// removed agents lose their secret folders, and units whose secret changed under an
    /// unchanged module (or which were found stopped) are restarted. Returns its look at
    /// the units when it restarted none (verify's first look), else nil.
    func finish(_ session: SSHSession, plan: HostPlan, desired: DesiredState) throws
        -> HostState? {
        var ops = PushBatch()
        let secretDir = inventory.defaults.secretDir
        var restart = Set(plan.units.filter { $0.actor == .bkfleet }.map(\.agent))
        let wanted = desired.agents.keys.sorted()
        let fresh = wanted.isEmpty ? HostState() : try unitStates(session, agents: wanted)
        if plan.needsRebuild {
            // The switch went through: the mark that forces the next run to rebuild goes
            // once the host verified (with the host lock, HostLock.swift). Start any agent
            // the switch should have started but did not (a unit whose definition was
            // already live after an interrupted switch).
            clearSwitchMark = true
            for name in wanted {
                let unit = fresh.agents[name]?.unit ?? UnitState()
                if !unit.loaded || ["inactive", "failed"].contains(unit.activeState) {
                    restart.insert(name)
                }
            }
        }
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
        for name in plan.removedAgents {
            ops.removeDirectory("\(secretDir)/\(name)")
            ops.removeAgentData(name)
        }
        if !ops.isEmpty {
            context.events.event(host: host.name, step: .handover, message:
                "secrets to agent users: \(plan.handover.joined(separator: ", "))")
            _ = try remote(session, .handover, script: RemoteScripts.push, name: "bkfleet-push",
                           arguments: [inventory.defaults.moduleDir, secretDir, backupDir],
                           stdin: ops.payload())
        }
        if !restart.isEmpty {
            context.events.event(host: host.name, step: .handover,
                                 message: "restarting \(restart.sorted().joined(separator: ", "))")
            _ = try remote(session, .handover, script: RemoteScripts.restart,
                           name: "bkfleet-restart", arguments: restart.sorted())
            return nil
        }
        return wanted.isEmpty ? nil : fresh
    }
}
