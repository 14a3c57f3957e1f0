// A line-based unified diff of two texts, for showing module changes in a plan. Module
// files are small (tens of lines), so a plain longest-common-subsequence table is fast
// enough and easy to trust; this is not meant for large files.

public enum UnifiedDiff {
    public enum Line: Equatable {
        case same(String), removed(String), added(String)
    }

    /// The edit script turning `old` into `new`, line by line.
    public static func lines(old: String, new: String) -> [Line] {
        let a = split(old)
        let b = split(new)
        var table = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1),
                            count: a.count + 1)
        for i in stride(from: a.count - 1, through: 0, by: -1) {
            for j in stride(from: b.count - 1, through: 0, by: -1) {
                table[i][j] = a[i] == b[j] ? table[i + 1][j + 1] + 1
                    : max(table[i + 1][j], table[i][j + 1])
            }
        }
        var out: [Line] = []
        var i = 0
        var j = 0
        while i < a.count || j < b.count {
            if i < a.count, j < b.count, a[i] == b[j] {
                out.append(.same(a[i])); i += 1; j += 1
            } else if i < a.count, j == b.count || table[i + 1][j] >= table[i][j + 1] {
                // Removals first, as diff(1) prints them.
                out.append(.removed(a[i])); i += 1
            } else {
                out.append(.added(b[j])); j += 1
            }
        }
        return out
    }

    /// Hunks in unified format with `context` lines around each change, without the
    /// `---`/`+++` file header (the caller names the file).
    public static func hunks(old: String, new: String, context: Int = 3) -> [String] {
        let script = lines(old: old, new: new)
        let changed = script.indices.filter {
            if case .same = script[$0] { return false }
            return true
        }
        guard !changed.isEmpty else { return [] }
        var groups: [ClosedRange<Int>] = []
        for index in changed {
            let range = max(0, index - context)...min(script.count - 1, index + context)
            if let last = groups.last, range.lowerBound <= last.upperBound + 1 {
                groups[groups.count - 1] = last.lowerBound...max(last.upperBound,
                                                                  range.upperBound)
            } else {
                groups.append(range)
            }
        }
        var out: [String] = []
        for group in groups {
            var oldStart = 1, newStart = 1
            for line in script[..<group.lowerBound] {
                switch line {
                case .same: oldStart += 1; newStart += 1
                case .removed: oldStart += 1
                case .added: newStart += 1
                }
            }
            var oldCount = 0, newCount = 0
            var body: [String] = []
            for line in script[group] {
                switch line {
                case .same(let text): body.append(" " + text); oldCount += 1; newCount += 1
                case .removed(let text): body.append("-" + text); oldCount += 1
                case .added(let text): body.append("+" + text); newCount += 1
                }
            }
            out.append("@@ -\(oldCount == 0 ? oldStart - 1 : oldStart),\(oldCount) "
                       + "+\(newCount == 0 ? newStart - 1 : newStart),\(newCount) @@")
            out += body
        }
        return out
    }

    static func split(_ text: String) -> [String] {
        var parts = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if parts.last == "" { parts.removeLast() }
        return parts
    }
}
