// The plan as a document: what `plan --json` prints and `plan --out FILE` saves, and what
// `apply FILE` checks before it acts. It holds names, paths, hashes, fingerprints and
// states, never a secret value, so it can be reviewed and stored like any artefact.
import Foundation

/// What a host looked like when the plan was made, reduced to what the plan depends on.
/// Two snapshots that differ mean the host drifted.
public struct HostSnapshot: Codable, Equatable, Sendable {
    /// Module file name → SHA-256 of its text.
    public var modules: [String: String]
    /// `agent/kind` → SHA-256, owner, group and mode of the secret file.
    public var secrets: [String: String]
    /// Agent → owner, group and mode of its secret folder.
    public var secretDirs: [String: String]
    /// Agent → unit state (`active/running`, `inactive/dead`, `not loaded`).
    public var units: [String: String]

    // Keys are spelled out: a key strategy would also rewrite the dictionaries' keys.
    enum CodingKeys: String, CodingKey {
        case modules, secrets, secretDirs = "secret_dirs", units
    }

    public init(_ state: HostState) {
        modules = state.modules.mapValues { Digest.sha256Hex($0) }
        var secrets: [String: String] = [:]
        var dirs: [String: String] = [:]
        var units: [String: String] = [:]
        for (agent, found) in state.agents {
            for (kind, secret) in found.secrets {
                secrets["\(agent)/\(kind.fileName)"] = "\(secret.sha256) "
                    + secret.ownership.description
            }
            if let dir = found.secretDir { dirs[agent] = dir.description }
            units[agent] = found.unit.loaded ? found.unit.summary : "not loaded"
        }
        self.secrets = secrets
        self.secretDirs = dirs
        self.units = units
    }

    /// Human-readable differences from `other` (the snapshot saved in a plan).
    public func drift(since other: HostSnapshot) -> [String] {
        func compare(_ what: String, _ now: [String: String], _ then: [String: String])
            -> [String] {
            Set(now.keys).union(then.keys).sorted().compactMap { key in
                switch (then[key], now[key]) {
                case let (a?, b?) where a != b: return "\(what) \(key) changed on the host"
                case (nil, _?): return "\(what) \(key) appeared on the host"
                case (_?, nil): return "\(what) \(key) disappeared from the host"
                default: return nil
                }
            }
        }
        return compare("module", modules, other.modules)
            + compare("secret", secrets, other.secrets)
            + compare("secret folder of", secretDirs, other.secretDirs)
            + Set(units.keys).union(other.units.keys).sorted().compactMap { key in
                let then = other.units[key] ?? "not loaded"
                let now = units[key] ?? "not loaded"
                return then == now ? nil : "unit of \(key) was \(then), is \(now)"
            }
    }
}

/// One host's part of a saved plan.
public struct SavedHostPlan: Codable, Sendable {
    public struct Module: Codable, Sendable {
        public var file: String
        public var action: ChangeAction
        public var oldSHA256: String?
        public var newSHA256: String?

        enum CodingKeys: String, CodingKey {
            case file, action, oldSHA256 = "old_sha256", newSHA256 = "new_sha256"
        }
    }

    public struct Secret: Codable, Sendable {
        public var agent: String
        public var kind: SecretKind
        public var action: ChangeAction
        public var oldFingerprint: String?
        public var newFingerprint: String?
        public var newSHA256: String?

        enum CodingKeys: String, CodingKey {
            case agent, kind, action, oldFingerprint = "old_fingerprint"
            case newFingerprint = "new_fingerprint", newSHA256 = "new_sha256"
        }
    }

    public struct Ownership: Codable, Sendable {
        public var path: String
        public var from: String
        public var to: String
    }

    public struct Unit: Codable, Sendable {
        public var agent: String
        public var action: UnitAction
        public var by: UnitActor
        public var reason: String
    }

    public var name: String
    public var address: String
    /// nil when the host could not be read; `error` then says why.
    public var snapshot: HostSnapshot?
    public var error: String?
    public var modules: [Module] = []
    public var secrets: [Secret] = []
    public var ownership: [Ownership] = []
    public var units: [Unit] = []
    public var removedAgents: [String] = []
    public var rebuild = false
    /// `plan --deep`: what `nixos-rebuild dry-activate` said of the staged modules.
    public var dryActivate: String?

    enum CodingKeys: String, CodingKey {
        case name, address, snapshot, error, modules, secrets, ownership, units
        case removedAgents = "removed_agents", rebuild, dryActivate = "dry_activate"
    }

    public init(report: HostReport, address: String) {
        name = report.host
        self.address = address
        dryActivate = report.deepOutput
        snapshot = report.snapshot
        if case .failed(let step, let message) = report.outcome {
            error = "\(step.rawValue): \(message)"
        }
        guard let plan = report.plan else { return }
        modules = plan.modules.map {
            Module(file: $0.file, action: $0.action,
                   oldSHA256: $0.old.map { Digest.sha256Hex($0) },
                   newSHA256: $0.new.map { Digest.sha256Hex($0) })
        }
        secrets = plan.secrets.map {
            Secret(agent: $0.agent, kind: $0.kind, action: $0.action,
                   oldFingerprint: $0.oldSHA256.map(Digest.fingerprint(hex:)),
                   newFingerprint: $0.newSHA256.map(Digest.fingerprint(hex:)),
                   newSHA256: $0.newSHA256)
        }
        ownership = plan.ownership.map {
            Ownership(path: $0.path, from: $0.from.description, to: $0.to.description)
        }
        units = plan.units.map {
            Unit(agent: $0.agent, action: $0.action, by: $0.actor, reason: $0.reason)
        }
        removedAgents = plan.removedAgents
        rebuild = plan.needsRebuild
    }

    /// What differs between this saved plan and the plan made now from the same host:
    /// empty when applying now does exactly what was approved.
    func differences(from now: SavedHostPlan) -> [String] {
        var out: [String] = []
        if let then = snapshot, let current = now.snapshot {
            out += current.drift(since: then)
        }
        let thenModules = modules.map { "\($0.file) \($0.action) \($0.newSHA256 ?? "-")" }
        let nowModules = now.modules.map { "\($0.file) \($0.action) \($0.newSHA256 ?? "-")" }
        if thenModules != nowModules { out.append("the rendered modules differ") }
        for secret in now.secrets {
            let then = secrets.first { $0.agent == secret.agent && $0.kind == secret.kind }
            guard then?.newSHA256 != secret.newSHA256 else { continue }
            out.append("the \(secret.kind.label) of agent \(secret.agent) would now be "
                       + "\(secret.newFingerprint ?? "removed") instead of the planned "
                       + "\(then?.newFingerprint ?? "no change") (its source on this machine "
                       + "changed since the plan)")
        }
        for secret in secrets where !now.secrets.contains(where: {
            $0.agent == secret.agent && $0.kind == secret.kind }) {
            out.append("the planned \(secret.kind.label) change of agent \(secret.agent) "
                       + "is no longer needed")
        }
        return out
    }
}

/// A whole saved plan.
public struct SavedPlan: Codable, Sendable {
    public static let formatName = "bkfleet-plan"

    public var format = SavedPlan.formatName
    public var version = 1
    public var createdAt: String
    public var inventoryPath: String
    public var inventorySHA256: String
    public var hosts: [SavedHostPlan]
    public var summary: String

    enum CodingKeys: String, CodingKey {
        case format, version, createdAt = "created_at", inventoryPath = "inventory_path"
        case inventorySHA256 = "inventory_sha256", hosts, summary
    }

    public init(inventory: Inventory, reports: [HostReport], addresses: [String: String],
                now: Date = Date()) {
        createdAt = UTCStamp.iso8601(now)
        inventoryPath = inventory.path
        inventorySHA256 = inventory.contentHash
        hosts = reports.map { SavedHostPlan(report: $0, address: addresses[$0.host] ?? "") }
        summary = PlanPrinter.summary(reports)
    }

    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self)
    }

    /// A saved plan, if `data` is one (recognised by its content, not its name).
    public static func decode(_ data: Data) -> SavedPlan? {
        guard data.first(where: { !$0.isWhitespace }) == UInt8(ascii: "{") else { return nil }
        let decoder = JSONDecoder()
        guard let plan = try? decoder.decode(SavedPlan.self, from: data),
              plan.format == formatName else { return nil }
        return plan
    }
}

extension UInt8 {
    fileprivate var isWhitespace: Bool {
        self == 0x20 || self == 0x0A || self == 0x0D || self == 0x09
    }
}
