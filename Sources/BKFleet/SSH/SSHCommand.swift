// Running one remote command on an open session: stdin sent then closed, stdout and
// stderr read as they come, exit status and signal collected, all bounded by one deadline.
// No pseudo-terminal, no environment passing and no streaming to the caller: the result
// arrives whole when the command ends.
import CLibSSH2
import Foundation

extension SSHSession {
    /// Runs `command` through the remote user's shell and waits for it to end.
    ///
    /// - `stdin` is written to the command and then closed (EOF), while stdout and stderr
    ///   are read at the same time, so large outputs and inputs cannot deadlock.
    /// - Secrets must travel in `stdin` only: the command text is visible to every user on
    ///   the host (`/proc/*/cmdline`, `ps`) and may appear in error messages.
    /// - `timeout` bounds the whole command, from opening the channel to the exit status;
    ///   past it the channel is closed and `SSHError.commandTimedOut` names `label` (or the
    ///   start of the command). The remote process may keep running after that.
    /// - A command that dies of a signal gives `exitStatus` -1 and `exitSignal` its name.
    ///
    /// LIMITATION: output is kept in memory whole; a command printing gigabytes exhausts it.
    /// LIMITATION: a timeout hit while libssh2 holds a half-sent packet leaves the session
    /// unable to send; later commands on it then time out too (reconnect).
    public func run(_ command: String, stdin: [UInt8] = [], timeout: Double,
                    label: String? = nil) throws -> RemoteResult {
        let deadline = Deadline(seconds: timeout)
        let name = label ?? Self.shortName(of: command)
        let timedOut = SSHError.commandTimedOut(host: endpoint.label, command: name,
                                                seconds: timeout)

        let channel = try openChannel(for: name, deadline: deadline, timedOut: timedOut)
        defer { free(channel) }
        try startExec(command, on: channel, name: name, deadline: deadline, timedOut: timedOut)

        let output = try exchange(channel, stdin: stdin, deadline: deadline, timedOut: timedOut,
                                  name: name)
        return try closed(channel, output: output, deadline: deadline, timedOut: timedOut,
                          name: name)
    }

    /// Closes `channel` after its output was read, and adds the command's exit status
    /// (-1 for a signal, named in `exitSignal`) to `output`.
    func closed(_ channel: OpaquePointer, output: RemoteResult, deadline: Deadline,
                timedOut: SSHError, name: String) throws -> RemoteResult {
        var output = output
        // The exit status may arrive after EOF, so wait for the channel to close first.
        if try attempt(deadline, timeout: timedOut, { _ in libssh2_channel_close(channel) }) != 0
            || (try attempt(deadline, timeout: timedOut) { _ in
                libssh2_channel_wait_closed(channel) }) != 0 {
            throw failure(step: "closing the channel of '\(name)'")
        }
        output.exitStatus = locked { _ in libssh2_channel_get_exit_status(channel) } ?? -1
        output.exitSignal = locked { raw -> String? in
            var signal: UnsafeMutablePointer<CChar>?
            var length = 0
            _ = libssh2_channel_get_exit_signal(channel, &signal, &length, nil, nil, nil, nil)
            guard let signal else { return nil }
            defer { libssh2_free(raw, signal) }
            return length > 0 ? String(cString: signal) : nil
        } ?? nil
        if output.exitSignal != nil { output.exitStatus = -1 }
        return output
    }

    /// The first line of a command, shortened, for messages.
    static func shortName(of command: String) -> String {
        let line = command.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        return trimmed.count > 60 ? String(trimmed.prefix(57)) + "..." : trimmed
    }

    /// Feeds stdin and drains stdout and stderr until the remote side sends EOF.
    func exchange(_ channel: OpaquePointer, stdin: [UInt8], deadline: Deadline,
                          timedOut: SSHError, name: String) throws -> RemoteResult {
        var result = RemoteResult(exitStatus: -1, exitSignal: nil, stdout: [], stderr: [])
        // Small on purpose: every host in flight holds one, zeroed (so resident), while its
        // command runs; at 200 hosts 32 KiB each would be over 6 MiB. Outputs are small,
        // and a bigger chunk only saves memory copies that cost nothing next to the network.
        var chunk = [UInt8](repeating: 0, count: SSHSession.readChunkSize)
        var written = 0
        var stdinClosed = false
        // libssh2 insists that a write which answered EAGAIN is repeated with the same
        // arguments until it completes; until then no other packet leaves the session.
        var writeInFlight = false
        var remoteEOF = false

        while true {
            // One round under the lock: write what the window allows, send EOF once all of
            // stdin is out, then read both streams until each would block.
            guard let (progressed, eof, error) = locked({ _ -> (Bool, Bool, Int) in
                var progressed = false
                if !stdinClosed && written < stdin.count && (!remoteEOF || writeInFlight) {
                    let n = stdin.withUnsafeBytes { buf in
                        libssh2_channel_write_ex(
                            channel, 0,
                            buf.baseAddress!.advanced(by: written)
                                .assumingMemoryBound(to: CChar.self),
                            min(32 * 1024, stdin.count - written))
                    }
                    writeInFlight = n == Int(LIBSSH2_ERROR_EAGAIN)
                    if n > 0 {
                        written += n
                        progressed = true
                    } else if !writeInFlight {
                        // The command stopped reading (closed its end or exited): not an
                        // error of ours; its exit status tells the story.
                        if Self.isTransportLoss(Int32(n)) { return (false, false, n) }
                        stdinClosed = true
                    }
                }
                if !stdinClosed && written >= stdin.count && (!remoteEOF || writeInFlight) {
                    let rc = libssh2_channel_send_eof(channel)
                    writeInFlight = rc == LIBSSH2_ERROR_EAGAIN
                    if !writeInFlight { stdinClosed = true }
                    if Self.isTransportLoss(rc) { return (false, false, Int(rc)) }
                }
                let drained = Self.drainReady(channel, chunk: &chunk,
                                              stdout: &result.stdout, stderr: &result.stderr)
                progressed = progressed || drained.progressed
                if drained.error != 0 { return (progressed, false, drained.error) }
                return (progressed, libssh2_channel_eof(channel) == 1, 0)
            }) else { throw SSHError.notConnected(host: endpoint.label) }

            if error != 0 { throw failure(step: "running '\(name)'") }
            remoteEOF = remoteEOF || eof
            if remoteEOF && !writeInFlight { return result }
            if progressed { continue }
            if deadline.passed { throw timedOut }
            keepaliveIfDue()
            waitForSocket(deadline)
        }
    }

    /// Opens a session channel for the command called `name` (shared with `startHeld`).
    func openChannel(for name: String, deadline: Deadline,
                     timedOut: SSHError) throws -> OpaquePointer {
        let opened = try channelOpenLock.withLock {
            try attemptPointer(deadline, timeout: timedOut) { raw in
                libssh2_channel_open_ex(raw, "session", 7, CLIBSSH2_CHANNEL_WINDOW_DEFAULT,
                                        CLIBSSH2_CHANNEL_PACKET_DEFAULT, nil, 0)
            }
        }
        guard let channel = opened else {
            throw failure(step: "opening a channel for '\(name)'")
        }
        return channel
    }

    /// Starts `command` on `channel` (shared with `startHeld`).
    func startExec(_ command: String, on channel: OpaquePointer, name: String,
                   deadline: Deadline, timedOut: SSHError) throws {
        let started = try attempt(deadline, timeout: timedOut) { _ in
            libssh2_channel_process_startup(channel, "exec", 4, command,
                                            UInt32(command.utf8.count))
        }
        if started != 0 { throw failure(step: "starting '\(name)'") }
    }

    /// The error for a failed channel step: a lost connection or a channel failure.
    func failure(step: String) -> SSHError {
        let (code, message) = lastError()
        if Self.isTransportLoss(code) {
            return .connectionLost(host: endpoint.label, step: step, message: message)
        }
        return .channelFailed(host: endpoint.label, step: step, code: code, message: message)
    }

    /// Frees the channel, giving libssh2 up to a second to finish closing it.
    func free(_ channel: OpaquePointer) {
        let deadline = Deadline(seconds: 1)
        while true {
            guard let rc = locked({ _ in libssh2_channel_free(channel) }) else { return }
            if rc != LIBSSH2_ERROR_EAGAIN || deadline.passed { return }
            waitForSocket(deadline)
        }
    }
}
