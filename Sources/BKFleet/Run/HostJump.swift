// The jump-host leg of a host's connection: connect to the bastion named by the host's
// `jump`, check its own host key in the same known_hosts file and log in with the same
// identity. The inner session then rides a direct-tcpip channel of this one (SSHJump.swift).
// It does not follow chains of jump hosts: the inventory refuses them.
import Foundation

extension HostRun {
    /// The logged-in jump session, or nil when the host is reached directly. Each host
    /// opens its own, so one host's failure never takes another's tunnel down.
    // LIMITATION: hosts behind the same bastion do not share one SSH connection to it.
    func connectJump() throws -> SSHSession? {
        guard let jump = host.jump else { return nil }
        let endpoint = SSHEndpoint(name: jump.name, address: jump.address, port: jump.port)
        let timeout = inventory.defaults.connectTimeout
        context.events.event(host: host.name, step: .connect,
                             message: "connecting to jump host \(endpoint.label)")
        let session: SSHSession
        do {
            session = try SSHSession.connect(to: endpoint, timeout: timeout,
                                             keepaliveSeconds: 15)
        } catch {
            throw HostFailure(.connect, "jump host \(jump.name): \(error); check its address "
                              + "and port ('jump' of \(host.name) in the inventory) and that "
                              + "sshd runs there (waited up to \(Int(timeout)) s, "
                              + "connect_timeout)")
        }
        do {
            try checkHostKey(session)
            try step(.authenticate) {
                do {
                    try session.authenticate(user: jump.user, identity: context.identity)
                } catch {
                    throw HostFailure(.authenticate, "jump host \(jump.name): \(error)")
                }
            }
        } catch {
            session.close()
            throw error
        }
        return session
    }
}
