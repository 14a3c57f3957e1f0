// A Swift value tree over the CTOML wrapper: parse text into `TOMLValue`s that carry
// the line and column of every key and value, then free the C++ document. It does not
// know the inventory schema; InventoryLoader gives the tree its meaning.
import CTOML

/// A 1-based line and column in the parsed text; 0 where the parser made a table
/// implicitly (e.g. `tokens` in `[tokens.default]`).
public struct TOMLPosition: Hashable, Sendable, Comparable {
    public var line: Int
    public var column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    public static func < (lhs: TOMLPosition, rhs: TOMLPosition) -> Bool {
        (lhs.line, lhs.column) < (rhs.line, rhs.column)
    }
}

/// One key of a table, with where the key itself was written.
public struct TOMLEntry: Hashable, Sendable {
    public var key: String
    public var keyPosition: TOMLPosition
    public var value: TOMLValue
}

/// A TOML value; every case carries the position where the value starts.
public indirect enum TOMLValue: Hashable, Sendable {
    /// Entries in the order they were written (toml++ itself keeps them sorted by key).
    case table([TOMLEntry], TOMLPosition)
    case array([TOMLValue], TOMLPosition)
    case string(String, TOMLPosition)
    case integer(Int64, TOMLPosition)
    case float(Double, TOMLPosition)
    case bool(Bool, TOMLPosition)
    /// A date, time or date-time, as TOML text.
    case dateTime(String, TOMLPosition)

    public var position: TOMLPosition {
        switch self {
        case .table(_, let p), .array(_, let p), .string(_, let p), .integer(_, let p),
             .float(_, let p), .bool(_, let p), .dateTime(_, let p):
            return p
        }
    }

    /// The kind with an article, for messages: "expected a string, found an integer".
    public var kindDescription: String {
        switch self {
        case .table: return "a table"
        case .array: return "an array"
        case .string: return "a string"
        case .integer: return "an integer"
        case .float: return "a float"
        case .bool: return "a boolean"
        case .dateTime: return "a date/time"
        }
    }

    /// The value under `key` if this is a table that has it.
    public subscript(key: String) -> TOMLValue? {
        guard case .table(let entries, _) = self else { return nil }
        return entries.first { $0.key == key }?.value
    }
}

/// A TOML syntax error as toml++ reports it.
public struct TOMLSyntaxError: Error, Hashable, Sendable {
    public var message: String
    public var position: TOMLPosition
}

public enum TOML {
    /// toml++ quotes the offending input in its messages ("saw 't<newline>'"); control
    /// characters there would break the one-line message or drive the terminal, so they
    /// are shown as `\u{..}` escapes.
    static func printable(_ message: String) -> String {
        var out = ""
        for scalar in message.unicodeScalars {
            if Names.isControl(scalar) {
                out += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// Parses `bytes` (UTF-8 TOML) into the root table.
    public static func parse<Bytes: Collection>(_ bytes: Bytes) throws -> TOMLValue
    where Bytes.Element == UInt8 {
        let input = Array(bytes)
        var failure = ctoml_error()
        let parsed: OpaquePointer? = input.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { chars in
                ctoml_parse(chars.baseAddress, chars.count, &failure)
            }
        }
        guard let doc = parsed else {
            var message = "invalid TOML"
            if let text = failure.message {
                message = String(cString: text)
                ctoml_free_string(text)
            }
            throw TOMLSyntaxError(
                message: printable(message),
                position: TOMLPosition(line: failure.line, column: failure.column))
        }
        defer { ctoml_free(doc) }
        return try convert(ctoml_root(doc), depth: 0)
    }

    public static func parse(_ text: String) throws -> TOMLValue {
        try parse(Array(text.utf8))
    }

    /// Deeper documents are refused: toml++ caps inline nesting but not dotted keys
    /// (`a.a.a.…` 20000 deep overflowed the stack here), and no inventory nests past 4.
    public static let maximumDepth = 64

    private static func convert(_ node: OpaquePointer?, depth: Int) throws -> TOMLValue {
        var line = 0
        var column = 0
        ctoml_node_position(node, &line, &column)
        let position = TOMLPosition(line: line, column: column)
        if depth > maximumDepth {
            throw TOMLSyntaxError(
                message: "tables and arrays nest more than \(maximumDepth) levels deep",
                position: position)
        }

        switch ctoml_node_kind(node) {
        case CTOML_TABLE:
            let count = ctoml_table_count(node)
            var raw = [ctoml_entry](repeating: ctoml_entry(), count: count)
            let filled = ctoml_table_entries(node, &raw, count)
            var entries: [TOMLEntry] = []
            entries.reserveCapacity(filled)
            for item in raw.prefix(filled) {
                entries.append(TOMLEntry(
                    key: text(item.key, item.key_length),
                    keyPosition: TOMLPosition(line: item.line, column: item.column),
                    value: try convert(item.value, depth: depth + 1)))
            }
            entries.sort { ($0.keyPosition, $0.key) < ($1.keyPosition, $1.key) }
            return .table(entries, position)
        case CTOML_ARRAY:
            let count = ctoml_array_count(node)
            let items = try (0..<count).map {
                try convert(ctoml_array_at(node, $0), depth: depth + 1)
            }
            return .array(items, position)
        case CTOML_STRING:
            var length = 0
            let bytes = ctoml_string(node, &length)
            return .string(text(bytes, length), position)
        case CTOML_INTEGER:
            var value: Int64 = 0
            _ = ctoml_integer(node, &value)
            return .integer(value, position)
        case CTOML_FLOAT:
            var value = 0.0
            _ = ctoml_float(node, &value)
            return .float(value, position)
        case CTOML_BOOL:
            var value: Int32 = 0
            _ = ctoml_bool(node, &value)
            return .bool(value != 0, position)
        default:
            // Dates and times; CTOML_NONE cannot occur in a parsed document.
            guard let raw = ctoml_date_time_text(node) else {
                return .dateTime("", position)
            }
            defer { ctoml_free_string(raw) }
            return .dateTime(String(cString: raw), position)
        }
    }

    private static func text(_ bytes: UnsafePointer<CChar>?, _ length: Int) -> String {
        guard let bytes = bytes, length > 0 else { return "" }
        let buffer = UnsafeRawBufferPointer(start: bytes, count: length)
        return String(decoding: buffer, as: UTF8.self)
    }
}
