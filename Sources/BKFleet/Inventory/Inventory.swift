// The inventory as bkfleet understands it after loading: fleet defaults, where secrets
// come from, agent profiles and hosts. Value types only; loading and validation live in
// InventoryLoader.swift, and nothing here touches the network or a host.

/// Where in the inventory file something was written, for error messages.
public struct SourceLocation: Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }
}

/// Where a secret's value comes from. Never the value itself: an inventory can be
/// committed, so it only says how to fetch the secret at run time.
public enum SecretSource: Hashable, Sendable {
    /// A local file (absolute, or resolved against the inventory's folder).
    case file(path: String)
    /// An environment variable of the bkfleet process.
    case environment(name: String)
    /// A command run through `/bin/sh -c`; its standard output is the secret.
    case command(String)
}

/// A named token or SSH-key source, e.g. `[tokens.default]`.
public struct NamedSecret: Hashable, Sendable {
    public var name: String
    public var source: SecretSource
    public var location: SourceLocation
}

/// Settings that apply to every host unless the host overrides them.
public struct FleetDefaults: Hashable, Sendable {
    public var user: String = "root"
    public var port: Int = 22
    /// Absolute path of an identity file; nil means "use ssh-agent".
    public var identityFile: String?
    public var identityPassphrase: SecretSource?
    public var useAgent: Bool = false
    /// Absolute path of an OpenSSH known_hosts file.
    public var knownHosts: String
    public var moduleDir: String = "/etc/nixos/bkfleet"
    public var secretDir: String = "/var/lib/bkfleet/secrets"
    public var parallel: Int = 50
    public var rebuildCommand: String = "nixos-rebuild switch"
    /// Seconds allowed for connecting (TCP + SSH handshake + authentication).
    public var connectTimeout: Double = 10
    /// Seconds allowed for one remote command other than the rebuild.
    public var commandTimeout: Double = 60
    /// Seconds allowed for the rebuild.
    public var rebuildTimeout: Double = 1800
    /// Seconds an agent gets to register after its unit (re)started.
    public var verifyTimeout: Double = 60

    public init(knownHosts: String) {
        self.knownHosts = knownHosts
    }
}

/// Access to the Buildkite REST API, used to confirm registrations.
public struct BuildkiteAPI: Hashable, Sendable {
    public var org: String
    /// Base URL without the `/v2` suffix; default `https://api.buildkite.com`.
    public var url: String = "https://api.buildkite.com"
    public var token: SecretSource
    /// A PEM bundle to trust instead of the system's, for private endpoints.
    public var caFile: String?
    public var location: SourceLocation
}

/// An agent profile: what runs on every host that lists it.
public struct AgentProfile: Hashable, Sendable {
    public var name: String
    /// Name of a `[tokens.*]` entry.
    public var token: String
    /// Name of an `[ssh_keys.*]` entry, if the agent gets an SSH key.
    public var sshKey: String?
    /// Agent tags; rendered as `services.buildkite-agents.<name>.tags`.
    public var tags: [String: String] = [:]
    /// Attribute names under `pkgs`, e.g. `gnutar`.
    public var runtimePackages: [String] = ["bash", "gnutar", "gzip", "git", "nix"]
    public var extraConfig: String = ""
    /// Hook name (e.g. `environment`) to script body.
    public var hooks: [String: String] = [:]
    /// Attribute under `pkgs` that provides the agent, e.g. `buildkite-agent`.
    public var package: String = "buildkite-agent"
    /// The agent name shown in Buildkite; nil keeps NixOS's `%hostname-<name>-%n`.
    public var displayName: String?
    public var confinement: Bool = true
    public var location: SourceLocation

    /// The systemd unit, Unix user and group of this agent on every host.
    public var unitName: String { "buildkite-agent-\(name)" }
    public var userName: String { "buildkite-agent-\(name)" }
    public var dataDir: String { "/var/lib/buildkite-agent-\(name)" }
}

/// One builder.
public struct Host: Hashable, Sendable {
    public var name: String
    public var address: String
    public var port: Int
    public var user: String
    public var agents: [String]
    public var tags: [String: String] = [:]
    public var groups: [String] = []
    public var rebuildCommand: String
    public var location: SourceLocation
}

/// A whole inventory, after every reference has been checked.
public struct Inventory: Sendable {
    /// Absolute path of the inventory file.
    public var path: String
    public var defaults: FleetDefaults
    public var buildkite: BuildkiteAPI?
    public var tokens: [String: NamedSecret]
    public var sshKeys: [String: NamedSecret]
    public var agents: [String: AgentProfile]
    public var hosts: [Host]
    /// SHA-256 (hex) of the inventory file's bytes, recorded in saved plans.
    public var contentHash: String
}
