// Reads the HTTP `Link` header (RFC 8288) Buildkite uses for paging, e.g.
//   <https://api.buildkite.com/v2/organizations/o/agents?page=2&per_page=100>; rel="next"
// Only what paging needs: URL and rel of each link. Other parameters are ignored, and a
// malformed entry is skipped rather than failing the whole listing.

public enum LinkHeader {
    /// Each link's URL under every rel it names (`rel="next last"` names two).
    public static func parse(_ value: String) -> [String: String] {
        var links: [String: String] = [:]
        var rest = Substring(value)

        // Entries are separated by commas, but a URL may hold commas, so walk <…> first.
        while let open = rest.firstIndex(of: "<") {
            guard let close = rest[open...].firstIndex(of: ">") else { break }
            let url = String(rest[rest.index(after: open)..<close])
            rest = rest[rest.index(after: close)...]
            let paramsEnd = rest.firstIndex(of: "<") ?? rest.endIndex
            let params = rest[..<paramsEnd]
            rest = rest[paramsEnd...]

            for param in params.split(separator: ";") {
                let pair = param.split(separator: "=", maxSplits: 1)
                guard pair.count == 2,
                      pair[0].trimmingWhitespace().lowercased() == "rel" else { continue }
                var rels = pair[1].trimmingWhitespace()
                if rels.hasPrefix("\"") && rels.hasSuffix("\"") && rels.count >= 2 {
                    rels = String(rels.dropFirst().dropLast())
                }
                for rel in rels.split(separator: " ") where links[rel.lowercased()] == nil {
                    links[rel.lowercased()] = url
                }
            }
        }
        return links
    }

    /// The URL of the next page, if there is one.
    public static func next(_ value: String?) -> String? {
        value.flatMap { parse($0)["next"] }
    }
}

private extension StringProtocol {
    /// Blanks on both ends, and the comma that closes an entry.
    func trimmingWhitespace() -> String {
        var text = Substring(self)
        while let first = text.first, first == " " || first == "\t" { text.removeFirst() }
        while let last = text.last, last == " " || last == "\t" || last == "," {
            text.removeLast()
        }
        return String(text)
    }
}
