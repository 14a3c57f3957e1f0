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
    /// Leave a host whose verification failed after a switch as it is, for inspection,
    /// instead of rolling it back (`--no-rollback`).
    public var noRollback = false
    /// `retire`: the hosts are given with no agents; their import check is skipped and
    /// the run ends by proving no agent of theirs still runs.
    public var retire = false
    /// Restart agents whose unit started before a secret file last changed (a rotation
    /// killed between its push and its restart left them on the old value).
    public var restartStale = false
    /// What the host's run record calls this run; nil says `apply` (or `retire`).
    public var recordAction: String?
    /// Rotate: only these agents' secrets, ownership and bkfleet restarts are planned;
    /// every other agent on the host is left exactly as the probe found it. nil: all.
    public var onlyAgents: Set<String>?

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
    /// Names this run on the hosts: in the host lock's holder text, the rebuild's
    /// systemd unit and the backup folder. UTC time plus random hex, safe in unit names.
    public let runID: String = {
        UTCStamp.compact() + "-"
            + String(UInt32.random(in: 0...UInt32.max), radix: 16)
    }()
    /// When the run began: converged hosts share the first agent listing fetched after it.
    public let started = Date()
    /// `retire`: the agents the inventory gave each retired host, checked stopped too.
    public var retiredAgents: [String: [String]] = [:]
    /// Jump sessions shared by the hosts behind each bastion (Run/HostJump.swift).
    public let jumps = JumpPool()

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
        self.scrubbing = RunContext.replacements(for: secrets)
    }

    /// What `scrub` replaces, in order: worked out once, as every log line is scrubbed.
    private let scrubbing: [(text: String, with: String)]

    private static func replacements(for secrets: SecretValues)
        -> [(text: String, with: String)] {
        // Longest first, so a secret that contains another is replaced whole.
        let values = secrets.all.filter { !$0.isEmpty }.sorted { $0.count > $1.count }
        var pairs = values.map { value in
            (String(decoding: value, as: UTF8.self), "[secret \(Digest.fingerprint(value))]")
        }
        // A command may print one line of a key (a failing parser quoting its input):
        // long lines of multi-line secrets go too, PEM armour lines excepted.
        for value in values {
            let lines = String(decoding: value, as: UTF8.self)
                .split(whereSeparator: { $0 == "\n" || $0 == "\r\n" })
            guard lines.count > 1 else { continue }
            for line in lines where line.utf8.count >= BoundSecretCheck.minimumLineLength
                && !line.hasPrefix("-----") {
                pairs.append((String(line), "[part of secret \(Digest.fingerprint(value))]"))
            }
        }
        return pairs
    }

    /// Removes every secret value from `text` before it is stored or shown.
    public func scrub(_ text: String) -> String {
        scrubbing.reduce(text) { $0.replacingOccurrences(of: $1.text, with: $1.with) }
    }
}

/// How registrations are confirmed: through the Buildkite API when the inventory gives
/// access, otherwise from the agent's own log on the host.
public enum RegistrationSource: @unchecked Sendable {
    case agentLog
    case api(RegistrationBoard)
}
