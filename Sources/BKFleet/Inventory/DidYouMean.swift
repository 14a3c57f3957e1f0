// "Did you mean" suggestions for misspelt keys and names, by edit distance. It only
// ranks candidates the caller already knows; it never guesses beyond them.

enum DidYouMean {
    /// The closest candidate within a distance that still looks like a typo (about a
    /// third of the word, at least 1), or nil.
    static func suggestion(for word: String, among candidates: [String]) -> String? {
        let limit = max(1, word.count / 3)
        var best: (name: String, distance: Int)?
        for candidate in candidates.sorted() {
            let distance = editDistance(word.lowercased(), candidate.lowercased())
            if distance <= limit, distance < (best?.distance ?? Int.max) {
                best = (candidate, distance)
            }
        }
        return best?.name
    }

    /// ` (did you mean 'x'?)` or the empty string, ready to append to a message.
    static func hint(for word: String, among candidates: [String]) -> String {
        guard let name = suggestion(for: word, among: candidates) else { return "" }
        return " (did you mean '\(name)'?)"
    }

    /// Levenshtein distance over characters, with adjacent swaps counted as one edit
    /// (optimal string alignment), since `adress`/`addrses` are the usual typos.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let s = Array(a)
        let t = Array(b)
        if s.isEmpty { return t.count }
        if t.isEmpty { return s.count }
        var before = [Int](repeating: 0, count: t.count + 1)
        var previous = Array(0...t.count)
        var current = [Int](repeating: 0, count: t.count + 1)
        for i in 1...s.count {
            current[0] = i
            for j in 1...t.count {
                let cost = s[i - 1] == t[j - 1] ? 0 : 1
                var value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
                if i > 1, j > 1, s[i - 1] == t[j - 2], s[i - 2] == t[j - 1] {
                    value = min(value, before[j - 2] + 1)
                }
                current[j] = value
            }
            (before, previous, current) = (previous, current, before)
        }
        return previous[t.count]
    }
}
