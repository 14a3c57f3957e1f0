// What the inventory loader reports when a file cannot be used: every problem found,
// each with the file, line and column it concerns. It does not decide exit codes or
// colours; the CLI does.

/// One problem in an inventory file, with where it is and what to do about it.
public struct InventoryDiagnostic: Hashable, Sendable, CustomStringConvertible {
    /// Line and column 0 mean the file as a whole (e.g. it cannot be read).
    public var location: SourceLocation
    /// What is wrong and what to write instead, without the location prefix.
    public var message: String

    public init(location: SourceLocation, message: String) {
        self.location = location
        self.message = message
    }

    /// `FILE:LINE:COL: message`, or `FILE: message` for the file as a whole.
    public var description: String {
        if location.line <= 0 {
            return "\(location.file): \(message)"
        }
        return "\(location): \(message)"
    }
}

/// Every problem found in one inventory file, sorted by position.
public struct InventoryError: Error, Hashable, Sendable, CustomStringConvertible {
    public var diagnostics: [InventoryDiagnostic]

    public init(diagnostics: [InventoryDiagnostic]) {
        // Stable sort: two problems at one position keep the order they were found in.
        self.diagnostics = diagnostics.enumerated().sorted { a, b in
            let left = (a.element.location.line, a.element.location.column, a.offset)
            let right = (b.element.location.line, b.element.location.column, b.offset)
            return left < right
        }.map(\.element)
    }

    /// One diagnostic per line.
    public var description: String {
        diagnostics.map(\.description).joined(separator: "\n")
    }
}
