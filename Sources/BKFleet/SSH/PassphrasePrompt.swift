// Asking for an identity file's passphrase on the operator's terminal, with echo off,
// when the inventory names no `identity_passphrase` source. It never asks when standard
// input is not a terminal (CI, pipes): there the caller reports a clear error instead.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum PassphrasePrompt {
    /// The passphrase typed on /dev/tty (without its newline), or nil when bkfleet is not
    /// running interactively. The bytes are only handed on to libssh2.
    static func ask(for path: String) -> [UInt8]? {
        guard isatty(STDIN_FILENO) == 1 else { return nil }
        let fd = open("/dev/tty", O_RDWR | O_NOCTTY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var saved = termios()
        guard tcgetattr(fd, &saved) == 0 else { return nil }
        var quiet = saved
        quiet.c_lflag &= ~tcflag_t(ECHO)
        guard tcsetattr(fd, TCSAFLUSH, &quiet) == 0 else { return nil }
        // Echo comes back whatever happens below.
        defer { _ = tcsetattr(fd, TCSAFLUSH, &saved) }
        let prompt = Array("Passphrase for \(path): ".utf8)
        _ = prompt.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        var typed: [UInt8] = []
        var byte: UInt8 = 0
        while read(fd, &byte, 1) == 1, byte != UInt8(ascii: "\n") {
            typed.append(byte)
        }
        _ = write(fd, "\n", 1)
        return typed
    }
}
