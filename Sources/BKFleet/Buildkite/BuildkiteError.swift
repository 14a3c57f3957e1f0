// Everything that can go wrong talking to the Buildkite REST API, one case per kind of
// fault, each naming the URL (never with credentials) and what to do next. No case holds
// the API token or a created agent token's value, so a description is always safe to print.
import Foundation

public enum BuildkiteError: Error, Equatable, CustomStringConvertible {
    /// No HTTP response: DNS, connect, TLS or timeout. `curlCode` is libcurl's error number.
    case unreachable(method: String, url: String, curlCode: Int, message: String)
    /// Buildkite answered with a status outside 2xx; `message` is its JSON `message`, or
    /// the start of the body when there is none.
    case http(method: String, url: String, status: Int, message: String)
    /// A 2xx answer that is not the JSON bkfleet expects.
    case badResponse(method: String, url: String, reason: String)
    /// The API token is empty or holds a control character, so it cannot go in a header;
    /// nothing was sent.
    case tokenUnusable(method: String, url: String)

    public var description: String {
        switch self {
        case .unreachable(let method, let url, let code, let message):
            return "\(method) \(url): no response: \(message)" + Self.transportHint(code)
        case .http(let method, let url, let status, let message):
            let said = message.isEmpty ? "" : ": Buildkite says \"\(message)\""
            return "\(method) \(url): HTTP \(status)\(said)" + Self.statusHint(status)
        case .badResponse(let method, let url, let reason):
            return "\(method) \(url): unexpected answer (\(reason)); is the [buildkite] url "
                + "the REST API's base (e.g. https://api.buildkite.com)?"
        case .tokenUnusable(let method, let url):
            return "\(method) \(url): not sent: the API token is empty or holds a line break "
                + "or control character; check the [buildkite] token source"
        }
    }

    /// The HTTP status, when Buildkite answered at all.
    public var status: Int? {
        if case .http(_, _, let status, _) = self { return status }
        return nil
    }

    private static func transportHint(_ code: Int) -> String {
        switch code {
        case 6:
            return "; check the host name in the [buildkite] url"
        case 7, 28:
            return "; check that the [buildkite] url is right and the API is reachable"
        case 60:
            return "; the server's certificate is not trusted: set [buildkite] ca_file to the "
                + "PEM of the CA that signed it"
        case 77:
            return "; the [buildkite] ca_file cannot be read or is not a PEM bundle"
        default:
            return ""
        }
    }

    private static func statusHint(_ status: Int) -> String {
        switch status {
        case 401:
            return "; the API token was refused: check the [buildkite] token source and that "
                + "the token is not expired or revoked"
        case 403:
            return "; the API token lacks a scope: it needs read_agents, and read_clusters "
                + "plus write_clusters to manage agent tokens"
        case 404:
            return "; check the [buildkite] org slug and, for tokens, the cluster id"
        case 429:
            return "; rate limited: wait a minute and rerun"
        default:
            return ""
        }
    }
}
