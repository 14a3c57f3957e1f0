// A remote command that stays running after it has answered: started, read until it
// prints a marker line, then left open until `release` (or the session's end) closes its
// standard input. This is how bkfleet holds the host lock for a whole run. It does not
// stream output after the marker: the command is expected to say nothing more.
import CLibSSH2
import Foundation

/// A command still running on the host, holding whatever it holds until released.
public final class SSHHeldCommand {
    let session: SSHSession
    private var channel: OpaquePointer?

    init(session: SSHSession, channel: OpaquePointer) {
        self.session = session
        self.channel = channel
    }

    /// Sends `input` to the command, closes its standard input and waits up to `timeout`
    /// seconds for it to end; returns its output after the marker and its exit status.
    /// The channel is freed whatever happens; afterwards `release` does nothing.
    public func finish(sending input: [UInt8], timeout: Double, label: String) throws
        -> RemoteResult {
        guard let channel else { throw SSHError.notConnected(host: session.endpoint.label) }
        self.channel = nil
        defer { session.free(channel) }
        let deadline = Deadline(seconds: timeout)
        let timedOut = SSHError.commandTimedOut(host: session.endpoint.label, command: label,
                                                seconds: timeout)
        let output = try session.exchange(channel, stdin: input, deadline: deadline,
                                          timedOut: timedOut, name: label)
        return try session.closed(channel, output: output, deadline: deadline,
                                  timedOut: timedOut, name: label)
    }

    /// Closes the command's standard input (it then ends) and frees the channel, waiting
    /// at most about a second. Safe to call twice, and after the session closed.
    public func release() {
        guard let channel else { return }
        self.channel = nil
        guard !session.isClosed else { return }
        let deadline = Deadline(seconds: 1)
        for step in [{ libssh2_channel_send_eof(channel) },
                     { libssh2_channel_close(channel) },
                     { libssh2_channel_free(channel) }] {
            while true {
                guard let rc = session.locked({ _ in step() }) else { return }
                if rc != LIBSSH2_ERROR_EAGAIN || deadline.passed { break }
                session.waitForSocket(deadline)
            }
        }
    }
}

extension SSHSession {
    /// Runs `command` and reads its standard output line by line (each line handed to
    /// `onLine`) until a line equal to `marker`. Returns the output up to the marker and
    /// the still-running command; if the command ends first, returns its output with
    /// its exit status and no held command. `timeout` bounds the wait for the marker.
    public func startHeld(_ command: String, marker: String, timeout: Double, label: String,
                          onLine: (String) -> Void = { _ in })
        throws -> (held: SSHHeldCommand?, result: RemoteResult) {
        let deadline = Deadline(seconds: timeout)
        let timedOut = SSHError.commandTimedOut(host: endpoint.label, command: label,
                                                seconds: timeout)
        let channel = try openChannel(for: label, deadline: deadline, timedOut: timedOut)
        let held = SSHHeldCommand(session: self, channel: channel)
        var keep = false
        defer { if !keep { held.release() } }
        try startExec(command, on: channel, name: label, deadline: deadline, timedOut: timedOut)

        var result = RemoteResult(exitStatus: -1, exitSignal: nil, stdout: [], stderr: [])
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: SSHSession.readChunkSize)
        while true {
            guard let (progressed, eof, error) = locked({ _ -> (Bool, Bool, Int) in
                let drained = Self.drainReady(channel, chunk: &chunk,
                                              stdout: &pending, stderr: &result.stderr)
                if drained.error != 0 { return (drained.progressed, false, drained.error) }
                return (drained.progressed, libssh2_channel_eof(channel) == 1, 0)
            }) else { throw SSHError.notConnected(host: endpoint.label) }
            if error != 0 { throw failure(step: "running '\(label)'") }

            // Hand over complete lines; stop at the marker.
            while let newline = pending.firstIndex(of: 10) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                result.stdout.append(contentsOf: pending[...newline])
                pending.removeSubrange(...newline)
                onLine(line)
                if line == marker {
                    keep = true
                    return (held, result)
                }
            }
            if eof {
                result.stdout.append(contentsOf: pending)
                _ = try? attempt(deadline, timeout: timedOut) { _ in
                    libssh2_channel_wait_closed(channel)
                }
                result.exitStatus = locked { _ in libssh2_channel_get_exit_status(channel) }
                    ?? -1
                return (nil, result)
            }
            if progressed { continue }
            if deadline.passed { throw timedOut }
            keepaliveIfDue()
            waitForSocket(deadline)
        }
    }
}
