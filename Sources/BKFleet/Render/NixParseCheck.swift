// `check --parse`: hands each distinct rendered module to a local `nix-instantiate --parse`
// and maps its syntax errors back to the host and agent that would get the file. Parsing
// only: nothing is evaluated or built, and modules never hold secret values.
// Files go to a private temporary folder that is removed afterwards.
import Foundation

public struct ParseProblem: Equatable, Sendable {
    /// Every host that would get this module text, sorted.
    public var hosts: [String]
    /// The agent the file is for; nil for the index (`default.nix`).
    public var agent: String?
    /// Where the file would be written, e.g. `/etc/nixos/bkfleet/builder.nix`.
    public var path: String
    public var line: Int?
    public var column: Int?
    public var message: String

    public var description: String {
        let place = path + (line.map { ":\($0)" } ?? "") + (column.map { ":\($0)" } ?? "")
        let whose = (agent.map { "agent \($0)" } ?? "module index") + " on "
            + (hosts.count > 3 ? hosts.prefix(3).joined(separator: ", ")
               + " and \(hosts.count - 3) more" : hosts.joined(separator: ", "))
        return "\(place): \(message) (\(whose); fix the template or the inventory "
            + "value it came from, then run 'bkfleet render --host \(hosts[0])')"
    }
}

public struct ParseCheckResult: Sendable {
    public var distinctModules: Int
    public var problems: [ParseProblem]
}

public enum NixParseCheck {
    public static let toolName = "nix-instantiate"

    /// The first `nix-instantiate` on `PATH`, or nil when Nix is not installed.
    public static func findTool(environment: [String: String]) -> String? {
        let path = environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") where !dir.isEmpty {
            let candidate = "\(dir)/\(toolName)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Parses every distinct module text among `modules` (host name → file name → text).
    public static func check(modules: [String: [String: String]], moduleDir: String,
                             tool: String) throws -> ParseCheckResult {
        // One parse per distinct text: a profile shared by a hundred hosts is parsed once.
        struct Module: Hashable {
            var file: String
            var text: String
        }
        var hostsOf: [Module: [String]] = [:]
        var inOrder: [Module] = []
        for host in modules.keys.sorted() {
            for (file, text) in modules[host]!.sorted(by: { $0.key < $1.key }) {
                let module = Module(file: file, text: text)
                if hostsOf[module] == nil { inOrder.append(module) }
                hostsOf[module, default: []].append(host)
            }
        }
        let folder = try privateFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var problems: [ParseProblem] = []
        for (index, owner) in inOrder.enumerated() {
            // Same file name as on the host so the tool's messages read naturally.
            let dir = "\(folder)/\(index)"
            try FileManager.default.createDirectory(atPath: dir,
                                                    withIntermediateDirectories: false,
                                                    attributes: [.posixPermissions: 0o700])
            let file = "\(dir)/\(owner.file)"
            guard FileManager.default.createFile(atPath: file, contents: Data(owner.text.utf8),
                                                 attributes: [.posixPermissions: 0o600]) else {
                throw ParseCheckError("cannot write \(file)")
            }
            let (status, output) = try runTool(tool, file: file)
            guard status != 0 else { continue }
            let agent = owner.file == ModuleRenderer.indexFile ? nil
                : String(owner.file.dropLast(".nix".count))
            problems += parseErrors(output, tempFile: file,
                                    path: "\(moduleDir)/\(owner.file)").map {
                ParseProblem(hosts: hostsOf[owner]!, agent: agent, path: $0.path,
                             line: $0.line, column: $0.column, message: $0.message)
            }
        }
        return ParseCheckResult(distinctModules: inOrder.count, problems: problems)
    }

    /// Reads `nix-instantiate` error output: Nix 2.4 and later print
    /// `error: MESSAGE` then `at FILE:LINE:COL:` on a later line; Nix 2.3 and earlier
    /// print `error: MESSAGE, at FILE:LINE:COL`. The temporary path becomes `path`.
    static func parseErrors(_ output: String, tempFile: String, path: String)
        -> [(path: String, line: Int?, column: Int?, message: String)] {
        var found: [(path: String, line: Int?, column: Int?, message: String)] = []
        var pending: String?
        func position(_ text: Substring) -> (Int?, Int?)? {
            guard let range = text.range(of: tempFile + ":") else { return nil }
            let numbers = text[range.upperBound...].split(separator: ":", maxSplits: 2)
                .map { Int($0.trimmingCharacters(in: .whitespaces)) }
            return (numbers.first ?? nil, numbers.count > 1 ? numbers[1] : nil)
        }
        for raw in output.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("error: ") {
                if let pending { found.append((path, nil, nil, pending)) }
                var message = String(line.dropFirst("error: ".count))
                if let range = message.range(of: ", at " + tempFile + ":") {
                    let place = position(Substring(message[range.lowerBound...]))
                    message = String(message[..<range.lowerBound])
                    found.append((path, place?.0, place?.1, message))
                    pending = nil
                } else {
                    pending = message
                }
            } else if let message = pending, line.hasPrefix("at "),
                      let place = position(Substring(line)) {
                found.append((path, place.0, place.1, message))
                pending = nil
            }
        }
        if let pending { found.append((path, nil, nil, pending)) }
        if found.isEmpty {
            let text = output.replacingOccurrences(of: tempFile, with: path)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            found.append((path, nil, nil, text.isEmpty ? "\(toolName) failed" : text))
        }
        return found
    }

    private static func privateFolder() throws -> String {
        let base = (NSTemporaryDirectory() as NSString).appendingPathComponent(
            "bkfleet-parse-XXXXXX")
        var template = Array(base.utf8CString)
        guard let made = mkdtemp(&template) else {
            throw ParseCheckError("cannot create a temporary folder under "
                                  + NSTemporaryDirectory() + ": errno \(errno)")
        }
        return String(cString: made)
    }

    private static func runTool(_ tool: String, file: String) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = ["--parse", file]
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw ParseCheckError("cannot run \(tool): \(error)")
        }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

public struct ParseCheckError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
