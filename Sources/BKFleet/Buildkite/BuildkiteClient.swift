// The Buildkite REST API calls bkfleet makes: list an organization's agents (to confirm
// registrations) and create, list and revoke cluster agent tokens (for rotation). It does
// not retry, cache or pace calls; RegistrationBoard shares one listing among many hosts.
// The API token and created token values never reach a message, log or argv.
import Foundation

public struct BuildkiteClient: Sendable {
    public let api: BuildkiteAPI
    /// The REST base without a trailing slash or `/v2`, e.g. `https://api.buildkite.com`.
    public let baseURL: String
    public var connectTimeout: TimeInterval = 10
    public var requestTimeout: TimeInterval = 30
    /// Entries per page when listing; Buildkite allows at most 100.
    var pageSize = 100
    /// The whole `Authorization` header line, or nil when the token cannot go in a header.
    private let authorization: [UInt8]?

    public init(api: BuildkiteAPI, token: [UInt8]) {
        self.api = api
        self.baseURL = Self.normalizedBase(api.url)

        // A line break inside the token would split the header; trailing ones are dropped.
        var value = token
        while let last = value.last, last == 0x0A || last == 0x0D || last == 0x20 {
            value.removeLast()
        }
        let usable = !value.isEmpty && value.allSatisfy { $0 >= 0x21 && $0 != 0x7F }
        authorization = usable ? Array("Authorization: Bearer ".utf8) + value : nil
    }

    // MARK: Agents

    /// Every agent entry Buildkite lists for the organization, following `Link` pages.
    /// Buildkite leaves disconnected agents out; `lost` and `never_connected` ones may appear.
    public func listAgents() throws -> [BuildkiteAgent] {
        try listAll(path: "agents", as: BuildkiteAgent.self)
    }

    // MARK: Cluster agent tokens
    // `cluster` is the cluster's id (UUID), which Buildkite's REST paths require; the
    // GraphQL mutations (clusterAgentTokenCreate/Revoke) would do the same and are not used.

    /// Creates a cluster agent token. Buildkite shows its value only in this answer, so the
    /// caller must store it before doing anything else.
    public func createClusterToken(cluster: String, description: String)
        throws -> (id: String, value: [UInt8]) {
        let body = try JSONSerialization.data(withJSONObject: ["description": description])
        let url = organizationURL("clusters", cluster, "tokens")
        let response = try send("POST", url, body: Array(body))

        struct Created: Decodable {
            var id: String
            var token: String
        }
        let created = try decode(Created.self, from: response, method: "POST", url: url)
        return (id: created.id, value: Array(created.token.utf8))
    }

    /// The cluster's live agent tokens (revoked ones are gone), without their values.
    public func listClusterTokens(cluster: String) throws -> [ClusterToken] {
        try listAll(path: "clusters/\(Self.segment(cluster))/tokens", as: ClusterToken.self)
    }

    /// Revokes a cluster agent token; agents using it can no longer register.
    public func revokeClusterToken(cluster: String, id: String) throws {
        _ = try send("DELETE", organizationURL("clusters", cluster, "tokens", id))
    }

    // MARK: Plumbing

    private func organizationURL(_ segments: String...) -> String {
        ([baseURL, "v2", "organizations", Self.segment(api.org)]
            + segments.map(Self.segment)).joined(separator: "/")
    }

    /// GETs every page of a listing. `path` is below the organization, already escaped.
    private func listAll<Item: Decodable>(path: String, as: Item.Type) throws -> [Item] {
        var items: [Item] = []
        var next: String? = organizationURL() + "/\(path)?per_page=\(pageSize)"
        var seen: Set<String> = []

        while let url = next {
            // A Link header pointing back to a page already read would loop forever.
            guard seen.insert(url).inserted else {
                throw BuildkiteError.badResponse(method: "GET", url: HTTPClient.redacted(url),
                                                 reason: "paging links loop")
            }
            let response = try send("GET", url)
            items += try decode([Item].self, from: response, method: "GET", url: url)
            next = LinkHeader.next(response.header("Link"))

            // The token follows the link, so it must not lead to another server.
            if let link = next, !Self.sameOrigin(link, baseURL) {
                throw BuildkiteError.badResponse(
                    method: "GET", url: HTTPClient.redacted(url),
                    reason: "next page is on another server (\(HTTPClient.redacted(link)))")
            }
        }
        return items
    }

    private func send(_ method: String, _ url: String, body: [UInt8]? = nil)
        throws -> HTTPResponse {
        let shown = HTTPClient.redacted(url)
        guard let authorization else {
            throw BuildkiteError.tokenUnusable(method: method, url: shown)
        }

        var headers = ["Accept: application/json"]
        if body != nil { headers.append("Content-Type: application/json") }
        let request = HTTPRequest(method: method, url: url, headers: headers,
                                  secretHeader: authorization, body: body,
                                  caFile: api.caFile, connectTimeout: connectTimeout,
                                  totalTimeout: requestTimeout)
        let response: HTTPResponse
        do {
            response = try HTTPClient.send(request)
        } catch let error as HTTPTransportError {
            throw BuildkiteError.unreachable(method: method, url: shown,
                                             curlCode: error.curlCode, message: error.message)
        }

        guard (200..<300).contains(response.status) else {
            throw BuildkiteError.http(method: method, url: shown, status: response.status,
                                      message: Self.errorMessage(response.body))
        }
        return response
    }

    private func decode<T: Decodable>(_ type: T.Type, from response: HTTPResponse,
                                      method: String, url: String) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(response.body))
        } catch {
            throw BuildkiteError.badResponse(method: method, url: HTTPClient.redacted(url),
                                             reason: Self.describe(error))
        }
    }

    /// Buildkite's own words from an error body: `{"message": …}` (REST) or
    /// `{"errors": [{"message": …}]}` (GraphQL); otherwise the body's first line, shortened.
    static func errorMessage(_ body: [UInt8]) -> String {
        if let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] {
            if let message = object["message"] as? String { return message }
            if let errors = object["errors"] as? [[String: Any]] {
                let messages = errors.compactMap { $0["message"] as? String }
                if !messages.isEmpty { return messages.joined(separator: "; ") }
            }
        }
        let text = String(decoding: body.prefix(200), as: UTF8.self)
        let firstLine = text.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
        return firstLine.trimmingCharacters(in: .whitespaces)
    }

    private static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _):
            return "field '\(key.stringValue)' is missing"
        case DecodingError.typeMismatch(_, let context),
             DecodingError.valueNotFound(_, let context),
             DecodingError.dataCorrupted(let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? "not the expected JSON: \(context.debugDescription)"
                : "field '\(path)': \(context.debugDescription)"
        default:
            return "\(error)"
        }
    }

    /// Accepted forms of the inventory's url: `https://h`, `https://h/`, `https://h/v2`.
    static func normalizedBase(_ url: String) -> String {
        var base = url
        while base.hasSuffix("/") { base.removeLast() }
        if base.hasSuffix("/v2") { base.removeLast(3) }
        while base.hasSuffix("/") { base.removeLast() }
        return base
    }

    /// One path segment, percent-encoded so an org or id cannot add path steps.
    static func segment(_ text: String) -> String {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "/;?#%")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }

    /// Scheme, host and port equal (compared case-insensitively).
    static func sameOrigin(_ a: String, _ b: String) -> Bool {
        func origin(_ url: String) -> String {
            guard let schemeEnd = url.range(of: "://") else { return url.lowercased() }
            let rest = url[schemeEnd.upperBound...]
            let end = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
            return String(url[..<end]).lowercased()
        }
        return origin(HTTPClient.redacted(a)) == origin(HTTPClient.redacted(b))
    }
}
