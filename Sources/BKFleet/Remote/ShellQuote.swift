// The one function that turns a value into a word for the remote POSIX shell, and the
// helper that wraps a script into a command line. Secrets never pass through here:
// they travel on a channel's standard input.

public enum Shell {
    /// `value` as a single-quoted POSIX shell word: `it's` becomes `'it'\''s'`.
    public static func quote(_ value: String) -> String {
        "'" + value.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// A command line that runs `script` with `/bin/sh` and positional arguments, under
    /// `sudo -n` when the SSH user is not root (so a sudo that wants a password fails at
    /// once instead of waiting for one).
    public static func command(script: String, name: String, arguments: [String],
                               sudo: Bool) -> String {
        let words = ["/bin/sh", "-c", quote(script), quote(name)] + arguments.map(quote)
        return (sudo ? "sudo -n " : "") + words.joined(separator: " ")
    }
}
