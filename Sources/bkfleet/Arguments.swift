// The command line, parsed by hand in this one file (no argument-parsing package can be
// fetched for this build). Each command declares its flags and options; anything else is
// a usage error that names the word and the command's help.

struct UsageError: Error, CustomStringConvertible {
    var description: String
}

/// A command's flags (`--dry-run`), options with a value (`--parallel 10` or
/// `--parallel=10`) and positional words.
struct Arguments {
    var flags: Set<String> = []
    var options: [String: String] = [:]
    var positional: [String] = []

    /// Parses `words` for a command that knows `flags` and `options` (names without
    /// dashes). `-h` is `--help`; `-v` is `--verbose` where the command has it.
    static func parse(_ words: [String], command: String, flags: Set<String>,
                      options: Set<String>) throws -> Arguments {
        var parsed = Arguments()
        var rest = words[...]
        while let word = rest.popFirst() {
            if word == "--" {
                parsed.positional += rest
                break
            }
            if word == "-h" || word == "--help" {
                parsed.flags.insert("help")
                continue
            }
            if word == "-v" && flags.contains("verbose") {
                parsed.flags.insert("verbose")
                continue
            }
            guard word.hasPrefix("--") else {
                if word.hasPrefix("-") && word.count > 1 {
                    throw UsageError(description: "unknown option '\(word)' for '\(command)'; "
                                     + "see 'bkfleet \(command) --help'")
                }
                parsed.positional.append(word)
                continue
            }
            var name = String(word.dropFirst(2))
            var value: String?
            if let equals = name.firstIndex(of: "=") {
                value = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            }
            if flags.contains(name) {
                guard value == nil else {
                    throw UsageError(description: "--\(name) takes no value")
                }
                parsed.flags.insert(name)
            } else if options.contains(name) {
                guard let given = value ?? rest.popFirst() else {
                    throw UsageError(description: "--\(name) needs a value")
                }
                parsed.options[name] = given
            } else {
                let known = (flags.union(options)).sorted()
                let hint = known.min { editDistance($0, name) < editDistance($1, name) }
                    .flatMap { editDistance($0, name) <= 3 ? " (did you mean '--\($0)'?)" : nil }
                throw UsageError(description: "unknown option '--\(name)' for '\(command)'"
                                 + (hint ?? "") + "; see 'bkfleet \(command) --help'")
            }
        }
        return parsed
    }

    func int(_ name: String, atLeast minimum: Int) throws -> Int? {
        guard let text = options[name] else { return nil }
        guard let value = Int(text), value >= minimum else {
            throw UsageError(description: "--\(name) wants a whole number ≥ \(minimum), "
                             + "not '\(text)'")
        }
        return value
    }
}

func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var row = Array(0...b.count)
    for i in 1...max(a.count, 1) where !a.isEmpty {
        var previous = row[0]
        row[0] = i
        for j in stride(from: 1, through: b.count, by: 1) {
            let old = row[j]
            row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
            previous = old
        }
    }
    return row[b.count]
}
