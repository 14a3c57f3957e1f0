// Refuses a run whose module-bound inventory values (tags, extra config, hooks, display
// name, packages, allowed URIs) or host-bound values that reach a remote command line
// (rebuild_command, user, module_dir, secret_dir: visible in the host's process list)
// hold the value of a secret the run read: whatever reaches
// a module is copied into the world-readable Nix store on the host. It runs after the
// secrets are read and before any connection; it never prints a value, only its name
// and fingerprint. It does not look for encoded or split copies of a secret.

/// A secret value the run holds, with the name messages use for it.
public struct KnownSecret: Sendable {
    public var role: SecretRole
    public var bytes: [UInt8]

    public init(role: SecretRole, bytes: [UInt8]) {
        self.role = role
        self.bytes = bytes
    }
}

public enum BoundSecretCheck {
    /// Below this length a secret is only matched as a whole value: a short secret such
    /// as `abc` would otherwise match ordinary words in hooks and tags.
    // LIMITATION: a short secret embedded in a longer value is not found; real agent
    // tokens and keys are far longer.
    public static let minimumSubstringLength = 8
    /// Lines of a multi-line secret (a PEM key's base64 body) at least this long are
    /// looked for on their own, so pasting part of a key is caught too.
    public static let minimumLineLength = 20

    /// Every secret value the run read: agent tokens and SSH keys, the Buildkite API
    /// token and the identity passphrase when given.
    public static func known(_ secrets: SecretValues, apiToken: [UInt8]? = nil,
                             identity: SSHIdentity? = nil) -> [KnownSecret] {
        var known: [KnownSecret] = []
        for name in secrets.tokens.keys.sorted() {
            known.append(KnownSecret(role: .token(name), bytes: secrets.tokens[name]!.bytes))
        }
        for name in secrets.sshKeys.keys.sorted() {
            known.append(KnownSecret(role: .sshKey(name), bytes: secrets.sshKeys[name]!.bytes))
        }
        if let apiToken { known.append(KnownSecret(role: .apiToken, bytes: apiToken)) }
        if case .file(_, let passphrase?)? = identity {
            known.append(KnownSecret(role: .identityPassphrase, bytes: passphrase))
        }
        return known.filter { !$0.bytes.isEmpty }
    }

    /// The values of one agent profile that are written into its module, each with the
    /// inventory key it came from.
    public static func boundValues(of agent: AgentProfile) -> [(key: String, value: String)] {
        var values: [(key: String, value: String)] = []
        for key in agent.tags.keys.sorted() {
            values.append(("tags.\(key)", key))
            values.append(("tags.\(key)", agent.tags[key]!))
        }
        values.append(("extra_config", agent.extraConfig))
        for name in agent.hooks.keys.sorted() {
            values.append(("hooks.\(name)", agent.hooks[name]!))
        }
        if let name = agent.displayName { values.append(("name", name)) }
        for package in agent.runtimePackages { values.append(("runtime_packages", package)) }
        values.append(("package", agent.package))
        for uri in agent.allowedURIs { values.append(("allowed_uris", uri)) }
        return values
    }

    /// The values of a host entry (and the folders every host uses) that bkfleet puts on a
    /// remote command line, each with the inventory key it came from.
    public static func commandLineValues(of host: Host, inventory: Inventory)
        -> [(key: String, value: String)] {
        [("rebuild_command", host.rebuildCommand), ("user", host.user),
         ("module_dir", inventory.defaults.moduleDir),
         ("secret_dir", inventory.defaults.secretDir)]
    }

    /// One message per (agent, key, secret) found, naming the inventory position, the
    /// agent, the key and the secret with its fingerprint. Empty when the run may go on.
    public static func problems(hosts: [Host], inventory: Inventory,
                                known: [KnownSecret]) -> [String] {
        let names = Set(hosts.flatMap(\.agents)).sorted()
        var problems: [String] = []
        for name in names {
            guard let agent = inventory.agents[name] else { continue }
            problems += found(in: boundValues(of: agent), known: known,
                              place: "\(agent.location): agent '\(agent.name)'",
                              why: "module values are copied to the world-readable Nix store",
                              advice: "; the agent gets its token and key as files")
        }
        for host in hosts {
            problems += found(in: commandLineValues(of: host, inventory: inventory),
                              known: known, place: "\(host.location): host '\(host.name)'",
                              why: "it would be on a command line any user of the host can read")
        }
        // A key given several times (allowed_uris, runtime_packages) can repeat a line.
        var reported = Set<String>()
        return problems.filter { reported.insert($0).inserted }
    }

    /// One message per (key, secret) where a value holds a known secret: `place` names the
    /// entry, `why` says who could read the value, `advice` follows the fix.
    private static func found(in values: [(key: String, value: String)], known: [KnownSecret],
                              place: String, why: String, advice: String = "") -> [String] {
        values.flatMap { key, value in
            known.filter { holds(value, $0.bytes) }.map { secret in
                "\(place): \(key) holds the value of \(secret.role) "
                    + "(\(Digest.fingerprint(secret.bytes))); \(why), so bkfleet refuses to "
                    + "send it. Remove the secret from \(key)\(advice). Nothing was changed."
            }
        }
    }

    /// Throws `SetupError.boundSecret` when any selected agent's module would carry a
    /// secret.
    public static func refuse(hosts: [Host], inventory: Inventory,
                              known: [KnownSecret]) throws {
        let found = problems(hosts: hosts, inventory: inventory, known: known)
        if !found.isEmpty { throw SetupError.boundSecret(found) }
    }

    /// The same refusal for retire and rotate, which read their secrets their own way:
    /// the values in `secrets` and `extra`, plus the Buildkite API token and the identity's
    /// passphrase. The API token is read here when the inventory names one; a source that
    /// cannot be read is left out (the run never holds that value).
    public static func refuse(hosts: [Host], inventory: Inventory, secrets: SecretValues,
                              extra: [KnownSecret] = [], identity: SSHIdentity?) throws {
        let apiToken = (try? RunSetup.apiToken(for: inventory)) ?? nil
        try refuse(hosts: hosts, inventory: inventory,
                   known: known(secrets, apiToken: apiToken, identity: identity) + extra)
    }

    /// The secrets of `hosts`' agents that can be read, each agent on its own: a retire
    /// must not be stopped by a token source that is already gone.
    public static func readable(for hosts: [Host], inventory: Inventory) -> SecretValues {
        var values = SecretValues()
        for host in hosts {
            for agent in host.agents {
                var one = host
                one.agents = [agent]
                guard let read = try? RunSetup.readSecrets(for: [one], inventory: inventory)
                else { continue }
                values.tokens.merge(read.tokens) { first, _ in first }
                values.sshKeys.merge(read.sshKeys) { first, _ in first }
            }
        }
        return values
    }

    /// Whether `value` contains `secret` (whole value for short secrets), or one long
    /// line of a multi-line secret.
    static func holds(_ value: String, _ secret: [UInt8]) -> Bool {
        let text = Array(value.utf8)
        if text == secret { return true }
        if secret.count >= minimumSubstringLength && contains(text, secret) { return true }
        let lines = secret.split(separator: 0x0A).map { line -> ArraySlice<UInt8> in
            line.last == 0x0D ? line.dropLast() : line
        }
        guard lines.count > 1 else { return false }
        // PEM armour lines (`-----BEGIN ...`) are the same in every key: not secret.
        return lines.contains { line in
            line.count >= minimumLineLength && line.first != 0x2D
                && contains(text, Array(line))
        }
    }

    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= haystack.count else { return false }
        let first = needle[0]
        var index = 0
        let last = haystack.count - needle.count
        while index <= last {
            if haystack[index] == first,
               haystack[index..<(index + needle.count)].elementsEqual(needle) { return true }
            index += 1
        }
        return false
    }
}
