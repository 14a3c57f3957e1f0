// What a builder looks like right now, parsed from the probe script's output
// (RemoteScripts.probe). Only facts the host reported: no judgement of what should
// change, which is HostPlan's job. Secrets appear as SHA-256 digests, never values.
import Foundation

/// Owner, group and mode of a file or folder, as `stat` printed them.
public struct FileOwnership: Equatable, Sendable, Codable {
    public var owner: String
    public var group: String
    /// Octal digits, e.g. "400".
    public var mode: String

    public init(owner: String, group: String, mode: String) {
        self.owner = owner
        self.group = group
        self.mode = mode
    }

    public var description: String { "\(owner):\(group) \(mode.count == 3 ? "0" + mode : mode)" }
}

/// A secret file as found on the host.
public struct SecretOnHost: Equatable, Sendable {
    public var sha256: String
    public var ownership: FileOwnership
}

/// A systemd unit as `systemctl show` reported it.
public struct UnitState: Equatable, Sendable {
    public var properties: [String: String] = [:]

    public var loaded: Bool { properties["LoadState"] == "loaded" }
    public var activeState: String { properties["ActiveState"] ?? "unknown" }
    public var subState: String { properties["SubState"] ?? "unknown" }
    public var restarts: Int { Int(properties["NRestarts"] ?? "") ?? 0 }
    public var rootDirectory: String { properties["RootDirectory"] ?? "" }
    public var readOnlyBinds: String { properties["BindReadOnlyPaths"] ?? "" }
    /// Seconds since the epoch at which the main process last started, if running.
    public var startedAt: Int? {
        guard let value = properties["ExecMainStartTimestamp"], value.hasPrefix("@") else {
            return nil
        }
        return Int(value.dropFirst())
    }
    public var isRunning: Bool { activeState == "active" && subState == "running" }
    public var summary: String { "\(activeState)/\(subState)" }
}

/// What the probe learnt about one agent name (wanted by the inventory, or found on the
/// host as a module or a secret folder).
public struct AgentOnHost: Equatable, Sendable {
    public var secretDir: FileOwnership?
    public var secrets: [SecretKind: SecretOnHost] = [:]
    public var tempFiles: [String] = []
    public var uid: Int?
    public var unit = UnitState()
    /// Registration lines the agent logged since its unit last started.
    public var logLines: [String] = []
    /// When each secret file last changed (seconds since the epoch, host clock).
    public var secretModified: [SecretKind: Int] = [:]
}

public struct HostState: Equatable, Sendable {
    public var hostname = ""
    /// The host's clock, seconds since the epoch.
    public var now = 0
    /// What /nix/var/nix/profiles/system points at; changes with each switch.
    public var generation = ""
    public var configurationNix: String?
    public var modules: [String: String] = [:]
    public var secretRoot: FileOwnership?
    public var hasKeysGroup = false
    /// Folder path → `absent`, `empty`, `marked` (made by bkfleet) or `foreign`.
    public var folders: [String: String] = [:]
    /// An earlier run wrote modules but its switch did not finish.
    public var switchPending = false
    /// Temporary files a killed push left in the module folder.
    public var moduleTempFiles: [String] = []
    public var agents: [String: AgentOnHost] = [:]
    /// The run record of the last successful apply or retire (`time`, `run`,
    /// `operator`, `action`, `version`); empty when bkfleet never finished one here.
    public var lastApply: [String: String] = [:]

    public init() {}

    /// Parses the probe's records. Unknown records are skipped, so a newer probe can add
    /// some; a missing `end` means the output was cut short.
    public static func parse(_ output: String) throws -> HostState {
        var state = HostState()
        var sawEnd = false
        for line in output.split(separator: "\n", omittingEmptySubsequences: true) {
            let fields = line.split(separator: "\t", maxSplits: 2,
                                    omittingEmptySubsequences: false).map(String.init)
            state.apply(record: fields, line: String(line))
            if fields.first == "end" { sawEnd = true }
        }
        guard sawEnd else { throw ProbeError.truncated }
        return state
    }

    mutating func apply(record fields: [String], line: String) {
        func agent(_ name: String, _ change: (inout AgentOnHost) -> Void) {
            var entry = agents[name] ?? AgentOnHost()
            change(&entry)
            agents[name] = entry
        }
        guard let kind = fields.first, fields.count >= 2 else { return }
        switch kind {
        case "hostname": hostname = fields[1]
        case "now": now = Int(fields[1]) ?? 0
        case "generation": generation = fields[1]
        case "config": configurationNix = Self.decodeBase64(fields[1])
        case "module" where fields.count == 3:
            modules[fields[1]] = Self.decodeBase64(fields[2]) ?? ""
        case "keysgroup": hasKeysGroup = fields[1] == "yes"
        case "folder" where fields.count == 3: folders[fields[1]] = fields[2]
        case "pending": switchPending = fields[1] == "yes"
        case "secretroot":
            secretRoot = Self.ownership(fields.dropFirst().joined(separator: "\t"))
        case "secretdir" where fields.count == 3:
            agent(fields[1]) { $0.secretDir = Self.ownership(fields[2]) }
        case "secret" where fields.count == 3:
            let rest = fields[2].split(separator: "\t").map(String.init)
            guard rest.count == 5, let secretKind = SecretKind(rawValue: rest[0]) else { return }
            let found = SecretOnHost(
                sha256: rest[1],
                ownership: FileOwnership(owner: rest[2], group: rest[3], mode: rest[4]))
            agent(fields[1]) { $0.secrets[secretKind] = found }
        case "moduletemp":
            moduleTempFiles.append(fields.dropFirst().joined(separator: "\t"))
        case "tempfile":
            let path = fields.dropFirst().joined(separator: "\t")
            let name = ((path as NSString).deletingLastPathComponent as NSString)
                .lastPathComponent
            agent(name) { $0.tempFiles.append(path) }
        case "user" where fields.count == 3:
            agent(fields[1]) { $0.uid = Int(fields[2]) }
        case "unit" where fields.count == 3:
            let pair = fields[2].split(separator: "=", maxSplits: 1,
                                       omittingEmptySubsequences: false)
            guard pair.count == 2 else { return }
            agent(fields[1]) { $0.unit.properties[String(pair[0])] = String(pair[1]) }
        case "secretmtime" where fields.count == 3:
            let rest = fields[2].split(separator: "\t").map(String.init)
            guard rest.count == 2, let secretKind = SecretKind(rawValue: rest[0]),
                  let seconds = Int(rest[1]) else { return }
            agent(fields[1]) { $0.secretModified[secretKind] = seconds }
        case "lastapply":
            let parts = fields.dropFirst().joined(separator: "\t")
                .split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { lastApply[parts[0]] = parts[1] }
        case "log" where fields.count == 3:
            agent(fields[1]) { $0.logLines.append(fields[2]) }
        default:
            break
        }
    }

    static func ownership(_ text: String) -> FileOwnership? {
        let parts = text.split(separator: "\t").map(String.init)
        guard parts.count == 3 else { return nil }
        return FileOwnership(owner: parts[0], group: parts[1], mode: parts[2])
    }

    static func decodeBase64(_ text: String) -> String? {
        Data(base64Encoded: text).flatMap { String(data: $0, encoding: .utf8) }
    }
}

public enum ProbeError: Error, CustomStringConvertible {
    case truncated

    public var description: String {
        "the host's state report ended early (connection lost, or /bin/sh failed)"
    }
}
