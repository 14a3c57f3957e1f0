// Loads an inventory file (schema version 1) into an `Inventory`: checks every key,
// type, name and reference, resolves relative paths, and collects all problems with
// their line and column. It does not read secrets (SecretReader does, at apply time)
// and never contacts a host.
import Foundation

public enum InventoryLoader {
    /// The only schema version this bkfleet reads.
    public static let schemaVersion = 1

    /// Reads and checks the inventory at `path`; `environment` supplies `HOME` for `~/`.
    /// Throws `InventoryError` listing every problem found.
    public static func load(path: String, environment: [String: String]) throws -> Inventory {
        let absolute = absolutePath(path)
        var info = stat()
        if stat(absolute, &info) == 0 && (info.st_mode & S_IFMT) != S_IFREG {
            throw InventoryError(diagnostics: [InventoryDiagnostic(
                location: SourceLocation(file: path, line: 0, column: 0),
                message: "the inventory is not a regular file"
                    + ((info.st_mode & S_IFMT) == S_IFDIR ? " (it is a directory)" : "")
                    + "; give the path of a TOML file")])
        }
        let bytes: [UInt8]
        do {
            bytes = Array(try Data(contentsOf: URL(fileURLWithPath: absolute)))
        } catch {
            let reason = (error as NSError).localizedFailureReason
                ?? (error as NSError).localizedDescription
            throw InventoryError(diagnostics: [InventoryDiagnostic(
                location: SourceLocation(file: path, line: 0, column: 0),
                message: "cannot read the inventory (\(reason)); check the path")])
        }
        return try load(bytes: bytes, path: path, environment: environment)
    }

    /// Checks inventory text as if it were the file at `path` (for tests and tools).
    public static func load(text: String, path: String,
                            environment: [String: String] = [:]) throws -> Inventory {
        try load(bytes: Array(text.utf8), path: path, environment: environment)
    }

    /// `path` is shown in messages as given; relative paths inside the inventory
    /// resolve against its absolute folder.
    public static func load(bytes: [UInt8], path: String,
                            environment: [String: String]) throws -> Inventory {
        let absolute = absolutePath(path)
        let root: TOMLValue
        do {
            root = try TOML.parse(bytes)
        } catch let failure as TOMLSyntaxError {
            throw InventoryError(diagnostics: [InventoryDiagnostic(
                location: SourceLocation(file: path, line: failure.position.line,
                                         column: failure.position.column),
                message: failure.message)])
        }
        var reader = InventoryReader(
            file: path, folder: PathRules.parent(of: absolute), environment: environment)
        let inventory = reader.read(root: root, absolutePath: absolute,
                                    contentHash: Digest.sha256Hex(bytes))
        if !reader.diagnostics.isEmpty {
            throw InventoryError(diagnostics: reader.diagnostics)
        }
        guard let inventory = inventory else {
            // read() returns nil only after recording a diagnostic.
            throw InventoryError(diagnostics: [InventoryDiagnostic(
                location: SourceLocation(file: path, line: 0, column: 0),
                message: "the inventory could not be read")])
        }
        return inventory
    }

    static func absolutePath(_ path: String) -> String {
        if path.hasPrefix("/") { return PathRules.clean(path) }
        return PathRules.clean(FileManager.default.currentDirectoryPath + "/" + path)
    }
}

/// Lexical path handling, without touching the file system (symlinks are kept).
enum PathRules {
    /// Removes `.`, empty parts and `..` (which stops at `/`).
    static func clean(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/") {
            if part == "." { continue }
            if part == ".." {
                _ = parts.popLast()
                continue
            }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
        return String(path[..<slash])
    }
}
