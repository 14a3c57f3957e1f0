// The rules for names and short values in an inventory: agent, host, tag, user, group
// and Nix attribute names, directories on the host. Each check returns why a value is
// refused, or nil; the loader adds the location and what to write instead.

enum Names {
    /// Hooks the Buildkite agent itself runs; anything else would be silently ignored.
    static let agentHooks = [
        "environment", "pre-checkout", "checkout", "post-checkout", "pre-command",
        "command", "post-command", "pre-artifact", "post-artifact", "pre-exit",
        "pre-bootstrap", "agent-startup", "agent-shutdown",
    ]

    /// `buildkite-agent-` is 16 characters and Unix user names stop at 32.
    static let maximumAgentName = 16

    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.generalCategory == .control
    }

    private static func isLowerOrDigit(_ s: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(s) || ("0"..."9").contains(s)
    }

    private static func isAlnum(_ s: Unicode.Scalar) -> Bool {
        isLowerOrDigit(s) || ("A"..."Z").contains(s)
    }

    /// Letters, digits, '-', '.' and '_': host names, labels and tag keys.
    private static func isLabelCharacter(_ s: Unicode.Scalar) -> Bool {
        isAlnum(s) || s == "-" || s == "." || s == "_"
    }

    /// Describes the first control character, e.g. `a control character (U+000A)`.
    static func controlCharacter(in text: String) -> String? {
        guard let bad = text.unicodeScalars.first(where: isControl) else { return nil }
        let hex = String(bad.value, radix: 16, uppercase: true)
        return "a control character (U+" + String(repeating: "0", count: max(0, 4 - hex.count))
            + hex + ")"
    }

    /// Agent names become the unit `buildkite-agent-<name>`, its user and group, and
    /// directory names on the host.
    static func agentNameProblem(_ name: String) -> String? {
        if let bad = controlCharacter(in: name) { return "it contains \(bad)" }
        if name.isEmpty { return "it is empty" }
        if name.count > maximumAgentName {
            return "it has \(name.count) characters; at most \(maximumAgentName) fit, because "
                + "the Unix user 'buildkite-agent-<name>' must stay within 32"
        }
        let scalars = Array(name.unicodeScalars)
        guard ("a"..."z").contains(scalars[0]) else {
            return "it must start with a lowercase letter"
        }
        if !scalars.allSatisfy({ isLowerOrDigit($0) || $0 == "-" }) {
            return "only lowercase letters, digits and '-' are allowed"
        }
        if name.hasSuffix("-") { return "it must not end with '-'" }
        // Each agent's module is `<name>.nix` beside the index `default.nix`; no other file
        // in the module folder has a name an agent name (lowercase first) can produce.
        if name == "default" {
            return "it is reserved: the agent's module default.nix would collide with the "
                + "index file that imports every agent's module"
        }
        return nil
    }

    /// Host names appear in log file names and messages.
    static func hostNameProblem(_ name: String) -> String? {
        if let bad = controlCharacter(in: name) { return "it contains \(bad)" }
        if name.isEmpty { return "it is empty" }
        if name.count > 63 { return "it has \(name.count) characters; at most 63 are allowed" }
        if name.contains("/") { return "it contains '/'" }
        if name.contains("..") { return "it contains '..'" }
        let scalars = Array(name.unicodeScalars)
        if !scalars.allSatisfy(isLabelCharacter) {
            return "only letters, digits, '-', '.' and '_' are allowed"
        }
        if !isAlnum(scalars[0]) { return "it must start with a letter or digit" }
        return nil
    }

    /// Names of `[tokens.*]`, `[ssh_keys.*]` and host groups.
    static func labelProblem(_ name: String) -> String? {
        if let bad = controlCharacter(in: name) { return "it contains \(bad)" }
        if name.isEmpty { return "it is empty" }
        if name.count > 64 { return "it has \(name.count) characters; at most 64 are allowed" }
        let scalars = Array(name.unicodeScalars)
        if !scalars.allSatisfy(isLabelCharacter) {
            return "only letters, digits, '-', '.' and '_' are allowed"
        }
        if !isAlnum(scalars[0]) { return "it must start with a letter or digit" }
        return nil
    }

    /// Buildkite tags are `key=value` on one line.
    static func tagKeyProblem(_ key: String) -> String? {
        if let bad = controlCharacter(in: key) { return "it contains \(bad)" }
        if key.isEmpty { return "it is empty" }
        let scalars = Array(key.unicodeScalars)
        if !scalars.allSatisfy(isLabelCharacter) {
            return "only letters, digits, '-', '.' and '_' are allowed"
        }
        return nil
    }

    static func tagValueProblem(_ value: String) -> String? {
        if let bad = controlCharacter(in: value) {
            return "it contains \(bad); Buildkite tags are single-line text"
        }
        if value.contains(",") {
            // The agent's config holds all tags as one `k=v,k=v` list.
            return "it contains a comma, which the agent reads as the start of the next tag"
        }
        return nil
    }

    /// Portable Unix user names, as `useradd` accepts them by default.
    static func userNameProblem(_ name: String) -> String? {
        if let bad = controlCharacter(in: name) { return "it contains \(bad)" }
        if name.isEmpty { return "it is empty" }
        if name.count > 32 { return "it has \(name.count) characters; at most 32 are allowed" }
        let scalars = Array(name.unicodeScalars)
        guard ("a"..."z").contains(scalars[0]) || scalars[0] == "_" else {
            return "it must start with a lowercase letter or '_'"
        }
        if !scalars.allSatisfy({ isLowerOrDigit($0) || $0 == "-" || $0 == "_" }) {
            return "only lowercase letters, digits, '-' and '_' are allowed"
        }
        return nil
    }

    /// An attribute path under `pkgs`, e.g. `git` or `python3Packages.pytest`.
    static func nixAttributeProblem(_ path: String) -> String? {
        if let bad = controlCharacter(in: path) { return "it contains \(bad)" }
        if path.isEmpty { return "it is empty" }
        for part in path.split(separator: ".", omittingEmptySubsequences: false) {
            let scalars = Array(part.unicodeScalars)
            guard let first = scalars.first, isAlnum(first) && !("0"..."9").contains(first)
                    || first == "_" else {
                return "each dot-separated part must start with a letter or '_'"
            }
            if !scalars.allSatisfy({ isAlnum($0) || "_-'".unicodeScalars.contains($0) }) {
                return "only letters, digits, '_', '-', ''' and '.' are allowed"
            }
        }
        return nil
    }

    /// An address to connect to: a DNS name, IPv4 or IPv6 address (no brackets).
    static func addressProblem(_ address: String) -> String? {
        if let bad = controlCharacter(in: address) { return "it contains \(bad)" }
        if address.isEmpty { return "it is empty" }
        if address.hasPrefix("-") { return "it must not start with '-'" }
        let scalars = Array(address.unicodeScalars)
        if !scalars.allSatisfy({ isAlnum($0) || ".-_:%".unicodeScalars.contains($0) }) {
            return "only letters, digits, '.', '-', '_', ':' and '%' are allowed "
                + "(write IPv6 addresses without brackets)"
        }
        return nil
    }

    /// Directories on the host (module_dir, secret_dir) reach shell scripts and Nix
    /// paths, so only plain absolute paths are accepted.
    static func hostDirectoryProblem(_ path: String) -> String? {
        if let bad = controlCharacter(in: path) { return "it contains \(bad)" }
        guard path.hasPrefix("/") else { return "it must be an absolute path" }
        if path == "/" { return "it must not be '/'" }
        if path.hasSuffix("/") { return "it must not end with '/'" }
        let parts = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        if parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) {
            return "it must be clean: no '//', '.' or '..' parts"
        }
        let scalars = Array(path.unicodeScalars)
        if !scalars.allSatisfy({ isAlnum($0) || "/._-+".unicodeScalars.contains($0) }) {
            return "only letters, digits and '/', '.', '_', '-', '+' are allowed "
                + "(no spaces or quotes)"
        }
        return nil
    }
}
