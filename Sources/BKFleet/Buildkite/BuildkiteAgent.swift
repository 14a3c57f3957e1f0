// What bkfleet reads from Buildkite's REST answers: an agent entry and a cluster agent
// token, decoded from JSON. Only the fields bkfleet uses are kept; unknown fields are
// ignored, so newer API versions keep working. A token's value is never part of these.
import Foundation

/// One entry of `GET /v2/organizations/{org}/agents`. An agent that re-registers gets a new
/// entry with a new `id`; old entries linger as `disconnected` or `lost`.
public struct BuildkiteAgent: Hashable, Sendable {
    public var id: String
    public var name: String
    public var hostname: String
    /// `never_connected`, `connected`, `disconnected`, `stopping`, `stopped` or `lost`.
    public var connectionState: String
    /// When the agent registered.
    public var createdAt: Date
    /// The agent's tags as `key=value` strings.
    public var metaData: [String]

    public init(id: String, name: String, hostname: String, connectionState: String,
                createdAt: Date, metaData: [String]) {
        self.id = id
        self.name = name
        self.hostname = hostname
        self.connectionState = connectionState
        self.createdAt = createdAt
        self.metaData = metaData
    }

    public var isConnected: Bool { connectionState == "connected" }
}

extension BuildkiteAgent: Decodable {
    private enum Keys: String, CodingKey {
        case id, name, hostname
        case connectionState = "connection_state"
        case createdAt = "created_at"
        case metaData = "meta_data"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        id = try c.decode(String.self, forKey: .id)
        name = try c.decode(String.self, forKey: .name)
        hostname = try c.decodeIfPresent(String.self, forKey: .hostname) ?? ""
        connectionState = try c.decode(String.self, forKey: .connectionState)
        let created = try c.decode(String.self, forKey: .createdAt)
        guard let date = BuildkiteTime.parse(created) else {
            throw DecodingError.dataCorruptedError(
                forKey: .createdAt, in: c,
                debugDescription: "created_at '\(created)' is not an ISO 8601 time")
        }
        createdAt = date
        metaData = try c.decodeIfPresent([String].self, forKey: .metaData) ?? []
    }
}

/// A cluster agent token as listed by `GET …/clusters/{cluster}/tokens`. The value is not
/// here: Buildkite shows it only in the answer to the create call.
public struct ClusterToken: Hashable, Sendable, Decodable {
    public var id: String
    public var description: String
    public var createdAt: Date?
    public var expiresAt: Date?

    public init(id: String, description: String, createdAt: Date? = nil,
                expiresAt: Date? = nil) {
        self.id = id
        self.description = description
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }

    private enum Keys: String, CodingKey {
        case id, description
        case createdAt = "created_at"
        case expiresAt = "expires_at"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        id = try c.decode(String.self, forKey: .id)
        description = try c.decodeIfPresent(String.self, forKey: .description) ?? ""
        createdAt = try c.decodeIfPresent(String.self, forKey: .createdAt)
            .flatMap(BuildkiteTime.parse)
        expiresAt = try c.decodeIfPresent(String.self, forKey: .expiresAt)
            .flatMap(BuildkiteTime.parse)
    }
}

/// Buildkite prints times as ISO 8601, usually with milliseconds (`…T10:00:00.123Z`),
/// sometimes without (`…T10:00:00Z`); both are accepted, with `Z` or a numeric offset.
public enum BuildkiteTime {
    private static let withFraction = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
    private static let withoutFraction = Date.ISO8601FormatStyle()

    public static func parse(_ text: String) -> Date? {
        if let date = try? withFraction.parse(text) { return date }
        return try? withoutFraction.parse(text)
    }
}
