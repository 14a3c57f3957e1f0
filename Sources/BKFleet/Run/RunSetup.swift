// Everything that happens on the operator's machine before the first connection: read
// each secret the selected hosts need, choose the SSH identity, set up registration
// checks and the run's log folder. A mistake here stops the run before any host is
// touched.
import Foundation

public enum SetupError: Error, CustomStringConvertible {
    /// A secret source could not be read; the message names the secret and its source.
    case secret(message: String, usedBy: String?)
    case runDirectory(path: String, underlying: String)
    /// Module-bound inventory values hold a secret's value (BoundSecretCheck.swift);
    /// one located message per finding, none showing the value.
    case boundSecret([String])

    public var description: String {
        switch self {
        case .secret(let message, let usedBy):
            return message + (usedBy.map { " (needed by \($0); nothing was changed)" }
                              ?? " (nothing was changed)")
        case .runDirectory(let path, let underlying):
            return "cannot create the run's log folder \(path): \(underlying)"
        case .boundSecret(let problems):
            return problems.joined(separator: "\n")
        }
    }
}

public enum RunSetup {
    /// Reads the token and SSH-key values of the agents on `hosts`, each source once.
    public static func readSecrets(for hosts: [Host], inventory: Inventory) throws
        -> SecretValues {
        var values = SecretValues()
        let agents = Set(hosts.flatMap(\.agents)).sorted().compactMap { inventory.agents[$0] }
        for agent in agents {
            if values.tokens[agent.token] == nil, let source = inventory.tokens[agent.token] {
                // An API-managed token's store wins over its source once it holds a value,
                // so an apply after a rotation never puts back the revoked token.
                if let api = source.api, let stored = try storedToken(api, source.name,
                                                                      agent: agent) {
                    values.tokens[agent.token] = SecretValue(bytes: stored)
                } else {
                    values.tokens[agent.token] = try read(source.source, .token(agent.token),
                                                          agent: agent)
                }
            }
            if let key = agent.sshKey, values.sshKeys[key] == nil,
               let source = inventory.sshKeys[key] {
                values.sshKeys[key] = try read(source.source, .sshKey(key), agent: agent)
            }
        }
        return values
    }

    private static func storedToken(_ api: TokenAPI, _ name: String,
                                    agent: AgentProfile) throws -> [UInt8]? {
        do {
            return try TokenStore(location: api.store, token: name).read().current?.bytes
        } catch let error as SecretError {
            throw SetupError.secret(message: error.message, usedBy: "agent \(agent.name)")
        }
    }

    private static func read(_ source: SecretSource, _ role: SecretRole,
                             agent: AgentProfile?) throws -> SecretValue {
        SecretValue(bytes: try read(source, role, usedBy: agent.map { "agent \($0.name)" }))
    }

    private static func read(_ source: SecretSource, _ role: SecretRole, usedBy: String?)
        throws -> [UInt8] {
        do {
            return try SecretReader().resolve(source, role: role)
        } catch let error as SecretError {
            throw SetupError.secret(message: error.message, usedBy: usedBy)
        }
    }

    /// What `check` can say about the secret sources the hosts need without reading a
    /// value: a file that is missing or unreadable, an environment variable that is not
    /// set. Commands are not run (they may prompt or cost money); each problem names the
    /// source's section and what to do.
    public static func sourceProblems(for hosts: [Host], inventory: Inventory,
                                      environment: [String: String]) -> [String] {
        var problems: [String] = []
        var seen = Set<String>()
        func check(_ secret: NamedSecret, _ section: String) {
            guard seen.insert(section).inserted else { return }
            let place = "\(secret.location): [\(section)]"
            switch secret.source {
            case .file(let path):
                if !FileManager.default.isReadableFile(atPath: path) {
                    problems.append("\(place): file \(path) is missing or unreadable; "
                                    + "create it (mode 0600) or fix the path")
                }
            case .environment(let name):
                if environment[name] == nil {
                    problems.append("\(place): environment variable \(name) is not set; "
                                    + "export it before apply")
                }
            case .command, .apiStore:
                break
            }
        }
        for agent in Set(hosts.flatMap(\.agents)).sorted().compactMap({ inventory.agents[$0] }) {
            if let token = inventory.tokens[agent.token] { check(token, "tokens.\(agent.token)") }
            if let key = agent.sshKey, let source = inventory.sshKeys[key] {
                check(source, "ssh_keys.\(key)")
            }
        }
        return problems
    }

    /// The identity the inventory names: ssh-agent, or a key file (with its passphrase
    /// read from its source, if one is given).
    public static func identity(for inventory: Inventory) throws -> SSHIdentity {
        let defaults = inventory.defaults
        if defaults.useAgent { return .agent }
        let path = defaults.identityFile ?? NSString(string: "~/.ssh/id_ed25519")
            .expandingTildeInPath
        var passphrase: [UInt8]?
        if let source = defaults.identityPassphrase {
            passphrase = try read(source, .identityPassphrase, usedBy: nil)
        } else if (try? IdentityFileInfo.inspect(path: path))?.encrypted == true {
            // Asked once here, before any host starts, rather than per host.
            guard let typed = PassphrasePrompt.ask(for: path) else {
                throw SetupError.secret(
                    message: "identity file \(path) is passphrase-protected and no passphrase "
                        + "was given: set identity_passphrase = { env = \"NAME\" } (or file or "
                        + "command) in [defaults], run bkfleet on a terminal to be asked, or "
                        + "load the key into ssh-agent and set ssh_agent = true",
                    usedBy: nil)
            }
            passphrase = typed
        }
        return .file(path: path, passphrase: passphrase)
    }

    /// Registration checks through the API when the inventory gives access to it.
    public static func registrations(for inventory: Inventory) throws -> RegistrationSource {
        try registrations(for: inventory, apiToken: apiToken(for: inventory))
    }

    /// The Buildkite API token's value, read once, when the inventory has `[buildkite]`.
    public static func apiToken(for inventory: Inventory) throws -> [UInt8]? {
        guard let api = inventory.buildkite else { return nil }
        return try read(api.token, .apiToken, usedBy: "registration checks")
    }

    /// Registration checks with an API token already read by `apiToken(for:)`.
    public static func registrations(for inventory: Inventory, apiToken: [UInt8]?)
        -> RegistrationSource {
        guard let api = inventory.buildkite, let token = apiToken else { return .agentLog }
        return .api(RegistrationBoard(client: BuildkiteClient(api: api, token: token)))
    }

    /// `.bkfleet/runs/<UTC time>/` beside the inventory, private to the operator.
    public static func runDirectory(for inventory: Inventory, now: Date = Date()) throws
        -> String {
        let stamp = UTCStamp.compact(now) + "Z"
        let base = ((inventory.path as NSString).deletingLastPathComponent as NSString)
            .appendingPathComponent(".bkfleet/runs")
        var path = (base as NSString).appendingPathComponent(stamp)
        var suffix = 1
        while FileManager.default.fileExists(atPath: path) {
            suffix += 1
            path = (base as NSString).appendingPathComponent(
                stamp + "-\(suffix)")
        }
        do {
            try FileManager.default.createDirectory(atPath: path,
                                                    withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw SetupError.runDirectory(path: path, underlying: "\(error)")
        }
        return path
    }
}
