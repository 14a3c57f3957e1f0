// What one host should look like according to the inventory: module files, and each
// agent's secrets with the owner and mode they must end with. Secret bytes are kept
// here only to be pushed; they are never printed, logged or written to a plan file.

/// A secret ready to push: its bytes and their digest.
public struct SecretValue: Sendable {
    public var bytes: [UInt8]
    public var sha256: String

    public init(bytes: [UInt8]) {
        self.bytes = bytes
        self.sha256 = Digest.sha256Hex(bytes)
    }

    public var fingerprint: String { Digest.fingerprint(hex: sha256) }
}

/// Secret values, resolved once per run from the inventory's sources.
public struct SecretValues: Sendable {
    public var tokens: [String: SecretValue] = [:]
    public var sshKeys: [String: SecretValue] = [:]

    public init() {}

    /// Every distinct secret value, for scrubbing command output.
    public var all: [[UInt8]] { Array(tokens.values.map(\.bytes)) + sshKeys.values.map(\.bytes) }
}

public struct DesiredAgent: Sendable {
    public var profile: AgentProfile
    public var secrets: [SecretKind: SecretValue]
}

public struct DesiredState: Sendable {
    public var modules: RenderedModules
    public var agents: [String: DesiredAgent]

    public init(host: Host, inventory: Inventory, renderer: ModuleRenderer,
                secrets: SecretValues) throws {
        modules = try renderer.render(host: host, inventory: inventory)
        agents = [:]
        for name in host.agents {
            guard let profile = inventory.agents[name] else { continue }
            var values: [SecretKind: SecretValue] = [:]
            values[.token] = secrets.tokens[profile.token]
            if let key = profile.sshKey { values[.sshKey] = secrets.sshKeys[key] }
            agents[name] = DesiredAgent(profile: profile, secrets: values)
        }
    }
}
