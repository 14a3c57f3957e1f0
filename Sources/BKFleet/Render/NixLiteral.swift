// The one way an inventory value becomes Nix source text. Every string, list and
// attribute set that reaches a module goes through `NixLiteral.render`, so a tag holding
// `"`, `\`, `${` or a newline stays a plain string. It renders values; it never evaluates.

/// A Nix value built from inventory data.
public indirect enum NixValue: Equatable, Sendable {
    case string(String)
    case bool(Bool)
    case int(Int)
    case null
    case list([NixValue])
    /// Attribute sets render with their keys sorted, so output is stable.
    case attrs([String: NixValue])
    /// `pkgs.<path>`: a package attribute path such as `gnutar` or
    /// `python3Packages.pytest`; each dotted segment is one attribute.
    case package(String)
}

public enum NixLiteral {
    /// Nix source for `value`. Lists and sets render on one line; callers that want
    /// a multi-line layout use `renderAttrsBlock`.
    public static func render(_ value: NixValue) -> String {
        switch value {
        case .string(let text):
            return string(text)
        case .bool(let flag):
            return flag ? "true" : "false"
        case .int(let number):
            return String(number)
        case .null:
            return "null"
        case .list(let items):
            if items.isEmpty { return "[ ]" }
            return "[ " + items.map(render).joined(separator: " ") + " ]"
        case .attrs(let set):
            if set.isEmpty { return "{ }" }
            let body = set.keys.sorted().map { key in
                "\(attributeName(key)) = \(render(set[key]!));"
            }
            return "{ " + body.joined(separator: " ") + " }"
        case .package(let path):
            return (["pkgs"] + path.split(separator: ".", omittingEmptySubsequences: false)
                .map { attributeName(String($0)) }).joined(separator: ".")
        }
    }

    /// A double-quoted Nix string. `"`, `\\` and every `$` are escaped with a backslash
    /// (in Nix, a backslash before any other character yields that character), so `${`
    /// can never start an interpolation; newline, return and tab use Nix's escapes.
    public static func string(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "$": out += "\\$"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// An attribute name: bare when Nix's identifier rules allow it, quoted otherwise.
    public static func attributeName(_ name: String) -> String {
        isIdentifier(name) && !keywords.contains(name) ? name : string(name)
    }

    static let keywords: Set<String> = [
        "if", "then", "else", "assert", "with", "let", "in", "rec", "inherit", "or",
    ]

    static func isIdentifier(_ name: String) -> Bool {
        func isLetter(_ c: Unicode.Scalar) -> Bool {
            ("a"..."z").contains(c) || ("A"..."Z").contains(c) || c == "_"
        }
        guard let first = name.unicodeScalars.first, isLetter(first) else { return false }
        return name.unicodeScalars.allSatisfy { c in
            isLetter(c) || ("0"..."9").contains(c) || c == "-" || c == "'"
        }
    }
}
