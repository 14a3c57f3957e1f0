// Finds and fills the module templates in the project's `templates/` folder. Filling is
// placeholder substitution of values that NixLiteral already rendered; this file never
// quotes anything itself.
import Foundation

public struct Templates: Sendable {
    public var agent: String
    public var index: String

    /// Where the templates live, in order: `$BKFLEET_TEMPLATES`; `share/bkfleet/templates`
    /// beside an installed binary's `bin/`; a `templates/` folder above the executable
    /// (a build inside the source tree); the source tree this file was compiled from.
    public static func locate(environment: [String: String]) throws -> Templates {
        var candidates: [String] = []
        if let dir = environment["BKFLEET_TEMPLATES"], !dir.isEmpty { candidates.append(dir) }
        let exe = URL(fileURLWithPath: CommandLine.arguments.first ?? ".")
            .resolvingSymlinksInPath().deletingLastPathComponent()
        candidates.append(exe.deletingLastPathComponent()
            .appendingPathComponent("share/bkfleet/templates").path)
        var dir = exe
        for _ in 0..<8 {
            candidates.append(dir.appendingPathComponent("templates").path)
            dir = dir.deletingLastPathComponent()
        }
        candidates.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("templates").path)
        var seen = Set<String>()
        candidates = candidates.filter { seen.insert($0).inserted }
        for candidate in candidates {
            if let templates = try? load(directory: candidate) { return templates }
        }
        throw RenderError.templatesNotFound(searched: candidates)
    }

    public static func load(directory: String) throws -> Templates {
        func read(_ name: String) throws -> String {
            let path = (directory as NSString).appendingPathComponent(name)
            guard let text = FileManager.default.contents(atPath: path)
                .flatMap({ String(data: $0, encoding: .utf8) })
            else { throw RenderError.templateUnreadable(path: path) }
            return text
        }
        return Templates(agent: try read("agent.nix"), index: try read("index.nix"))
    }

    /// Replaces each `@key@` with its value. Every placeholder in the template must be
    /// given and every value used, so a template and the renderer cannot drift apart.
    static func fill(_ template: String, name: String, _ values: [String: String]) throws
        -> String {
        var out = ""
        var used = Set<String>()
        var rest = Substring(template)
        while let open = rest.firstIndex(of: "@") {
            out += rest[..<open]
            let afterOpen = rest.index(after: open)
            guard let close = rest[afterOpen...].firstIndex(of: "@") else {
                throw RenderError.badTemplate(name: name, detail: "unclosed '@' placeholder")
            }
            let key = String(rest[afterOpen..<close])
            guard let value = values[key] else {
                throw RenderError.badTemplate(name: name, detail: "unknown placeholder @\(key)@")
            }
            out += value
            used.insert(key)
            rest = rest[rest.index(after: close)...]
        }
        out += rest
        if let unused = Set(values.keys).subtracting(used).sorted().first {
            throw RenderError.badTemplate(name: name, detail: "placeholder @\(unused)@ missing")
        }
        return out
    }
}

public enum RenderError: Error, CustomStringConvertible {
    case templatesNotFound(searched: [String])
    case templateUnreadable(path: String)
    case badTemplate(name: String, detail: String)

    public var description: String {
        switch self {
        case .templatesNotFound(let searched):
            return "module templates not found (looked in \(searched.joined(separator: ", ")));"
                + " set BKFLEET_TEMPLATES to the folder holding agent.nix and index.nix"
        case .templateUnreadable(let path):
            return "cannot read template \(path)"
        case .badTemplate(let name, let detail):
            return "template \(name): \(detail)"
        }
    }
}
