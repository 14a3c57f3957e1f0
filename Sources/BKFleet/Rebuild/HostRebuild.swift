// The rebuild step of a host's run (`nixos-rebuild switch`, or the host's own command),
// and `plan --deep`'s dry activation of staged modules. Output is scrubbed of secret
// values before it is logged or shown.
import Foundation

extension HostRun {
    func rebuild(_ session: SSHSession) throws {
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
}
