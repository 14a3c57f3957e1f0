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
    /// Only the API-managed token's store holds the value (`[tokens.NAME]` with `api`
    /// and no file, env or command); see TokenStore.swift.
    case apiStore
}

/// Where an API-managed token's current (and, during a rotation, previous) value and id
/// are kept: a local file bkfleet creates 0600, or a pair of commands.
public enum TokenStoreLocation: Hashable, Sendable {
    case file(path: String)
    /// `read` prints the stored document; `write` gets it on standard input.
    case commands(read: String, write: String)
}

/// `api = { cluster = "...", store = "..." }` in a `[tokens.NAME]` section.
public struct TokenAPI: Hashable, Sendable {
    /// The cluster's id (UUID) as the REST paths want it.
    public var cluster: String
    public var store: TokenStoreLocation
}

/// A named token or SSH-key source, e.g. `[tokens.default]`.
public struct NamedSecret: Hashable, Sendable {
    public var name: String
    public var source: SecretSource
    public var location: SourceLocation
    /// Tokens only: created and revoked through the Buildkite API by `rotate`.
    public var api: TokenAPI? = nil
    /// Tokens only: the API id of the token the source gives, so that `rotate` may
    /// revoke a token bkfleet did not create.
    public var apiID: String? = nil
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
    /// Seconds an apply waits for another run's host lock before giving up.
    public var lockTimeout: Double = 60

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
    /// `public = true`: the agent builds untrusted code (public pull requests), so its
    /// own Nix commands run with `restrict-eval` and it refuses repository hooks,
    /// plugins and ad-hoc commands (docs/security.md).
    public var publicBuilds: Bool = false
    /// With `publicBuilds`: URI prefixes restricted evaluation may still fetch.
    public var allowedURIs: [String] = []
    public var location: SourceLocation

    /// The systemd unit, Unix user and group of this agent on every host.
    public var unitName: String { "buildkite-agent-\(name)" }
    public var userName: String { "buildkite-agent-\(name)" }
    public var dataDir: String { "/var/lib/buildkite-agent-\(name)" }
}

/// A jump host (bastion) through which a host is reached. Its host key is checked in the
/// same known_hosts file, under `name`.
public struct JumpHost: Hashable, Sendable {
    /// The `[[hosts]]` name it refers to, or its address when written inline.
    public var name: String
    public var address: String
    public var port: Int
    public var user: String

    public init(name: String, address: String, port: Int, user: String) {
        self.name = name
        self.address = address
        self.port = port
        self.user = user
    }
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
    /// Reached through this jump host; nil connects directly.
    public var jump: JumpHost? = nil

    /// A host made outside an inventory file (e.g. `retire --address`).
    public init(name: String, address: String, port: Int, user: String, agents: [String],
                tags: [String: String] = [:], groups: [String] = [],
                rebuildCommand: String, location: SourceLocation, jump: JumpHost? = nil) {
        self.name = name
        self.address = address
        self.port = port
        self.user = user
        self.agents = agents
        self.tags = tags
        self.groups = groups
        self.rebuildCommand = rebuildCommand
        self.location = location
        self.jump = jump
    }
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
