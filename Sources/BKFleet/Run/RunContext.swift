// Everything a host's run shares with the others: the inventory, the secret values, the
// renderer, the options, where logs go and where events are reported. Built once on the
// main thread before any host starts; read-only afterwards except for the thread-safe
// sinks it holds.
import Foundation

public struct RunOptions: Sendable {
    /// Read and plan, change nothing on any host.
    public var dryRun = false
    /// Record unknown host keys into the known_hosts file (trust on first use).
    public var acceptNewHostKeys = false
    /// Hosts in flight at once; nil takes the inventory's `parallel`.
    public var parallel: Int?
    /// With `dryRun`: also ask NixOS what it would do with the planned modules, staged in
    /// a temporary copy of /etc/nixos (`plan --deep`).
    public var deep = false
    /// Applying a saved plan: each host must still plan exactly as approved, or it is
    /// refused with what drifted.
    public var approved: [String: SavedHostPlan]?

    public init() {}
}

public final class RunContext: @unchecked Sendable {
    public let inventory: Inventory
    public let renderer: ModuleRenderer
    public let secrets: SecretValues
    public let identity: SSHIdentity
    public let options: RunOptions
    public let registrations: RegistrationSource
    public let events: EventSink
    /// Folder for this run's per-host logs.
    public let runDirectory: String

    public init(inventory: Inventory, renderer: ModuleRenderer, secrets: SecretValues,
                identity: SSHIdentity, options: RunOptions,
                registrations: RegistrationSource, events: EventSink,
                runDirectory: String) {
        self.inventory = inventory
        self.renderer = renderer
        self.secrets = secrets
        self.identity = identity
        self.options = options
        self.registrations = registrations
        self.events = events
        self.runDirectory = runDirectory
    }

    /// Removes every secret value from `text` before it is stored or shown.
    public func scrub(_ text: String) -> String {
        var out = text
        for value in secrets.all {
            let secret = String(decoding: value, as: UTF8.self)
            guard !secret.isEmpty else { continue }
            out = out.replacingOccurrences(of: secret, with: "[secret \(Digest.fingerprint(value))]")
        }
        return out
    }
}

/// How registrations are confirmed: through the Buildkite API when the inventory gives
/// access, otherwise from the agent's own log on the host.
public enum RegistrationSource: @unchecked Sendable {
    case agentLog
    case api(RegistrationBoard)
}
