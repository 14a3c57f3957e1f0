// `--on SELECTION`: which inventory hosts a command touches. Terms are host names, globs
// (fnmatch) and `@key=value` matched against host tags, host groups and the tags of the
// agents a host runs. It only filters the inventory; it never reorders or contacts hosts.
import Foundation

/// Why a selection was refused; each message names the term and what to do instead.
public struct SelectionError: Error, CustomStringConvertible, Equatable {
    public var description: String
}

/// A parsed `--on` value: comma-separated terms, any of which may select a host.
public struct HostSelection: Sendable, Equatable {
    public enum Term: Sendable, Equatable {
        /// A host name, or a glob over host names (`builder-*`).
        case name(String)
        /// `@key=value`; the value may be a glob. `group` also matches host groups and
        /// `agent` the agent profiles a host runs.
        case attribute(key: String, value: String)
    }

    public var terms: [Term]
    /// The text as given, for messages.
    public var text: String

    public init(parsing text: String) throws {
        self.text = text
        var terms: [Term] = []
        for raw in text.split(separator: ",", omittingEmptySubsequences: false) {
            let word = raw.trimmingCharacters(in: .whitespaces)
            if word.isEmpty {
                throw SelectionError(description: "--on '\(text)' has an empty term; "
                                     + "separate names, globs and @key=value with single commas")
            }
            guard word.hasPrefix("@") else {
                terms.append(.name(word))
                continue
            }
            let body = word.dropFirst()
            guard let equals = body.firstIndex(of: "="), equals != body.startIndex,
                  body.index(after: equals) != body.endIndex else {
                throw SelectionError(description: "--on term '\(word)' wants @key=value, "
                                     + "e.g. @queue=nix or @group=eu")
            }
            terms.append(.attribute(key: String(body[..<equals]),
                                    value: String(body[body.index(after: equals)...])))
        }
        self.terms = terms
    }

    /// The hosts any term matches, in inventory order. A term that matches no host is
    /// an error: a typo must not quietly shrink the run.
    public func select(from inventory: Inventory) throws -> [Host] {
        var chosen = Set<String>()
        for term in terms {
            let matched = inventory.hosts.filter { Self.matches(term, $0, inventory) }
            if matched.isEmpty {
                throw SelectionError(description: Self.noMatch(term, inventory))
            }
            chosen.formUnion(matched.map(\.name))
        }
        return inventory.hosts.filter { chosen.contains($0.name) }
    }

    static func matches(_ term: Term, _ host: Host, _ inventory: Inventory) -> Bool {
        switch term {
        case .name(let pattern):
            return glob(pattern, host.name)
        case .attribute(let key, let value):
            return values(of: key, host, inventory).contains { glob(value, $0) }
        }
    }

    /// What `@key=...` is matched against on `host`: its tag `key`, its groups for
    /// `group`, its agent profiles for `agent`, and its agents' tag `key`.
    static func values(of key: String, _ host: Host, _ inventory: Inventory) -> [String] {
        var values = host.tags[key].map { [$0] } ?? []
        if key == "group" { values += host.groups }
        if key == "agent" { values += host.agents }
        values += host.agents.compactMap { inventory.agents[$0]?.tags[key] }
        return values
    }

    static func glob(_ pattern: String, _ text: String) -> Bool {
        fnmatch(pattern, text, 0) == 0
    }

    static func noMatch(_ term: Term, _ inventory: Inventory) -> String {
        switch term {
        case .name(let pattern):
            let hint = DidYouMean.hint(for: pattern, among: inventory.hosts.map(\.name))
            let some = inventory.hosts.prefix(5).map(\.name).joined(separator: ", ")
                + (inventory.hosts.count > 5 ? ", ..." : "")
            return "--on '\(pattern)' matches no host in \(inventory.path)\(hint); "
                + "its hosts: \(inventory.hosts.isEmpty ? "none" : some)"
        case .attribute(let key, let value):
            var seen = Set<String>()
            for host in inventory.hosts { seen.formUnion(values(of: key, host, inventory)) }
            let known = seen.isEmpty
                ? "no host tag, group or agent tag '\(key)' exists"
                : "values of '\(key)' in use: "
                    + seen.sorted().prefix(10).joined(separator: ", ")
                    + (seen.count > 10 ? ", ... (\(seen.count) in all)" : "")
            return "--on '@\(key)=\(value)' matches no host in \(inventory.path); \(known)"
        }
    }
}
