// Builds the standard input of the push script (RemoteScripts.push): one header line
// per operation, and for writes the file's bytes right after it. The bytes of a secret
// exist only here and on the wire; the header carries path, owner, mode and length.

struct PushBatch {
    private var bytes: [UInt8] = []
    private(set) var isEmpty = true

    mutating func dir(_ path: String, _ ownership: FileOwnership) {
        header("dir \(path) \(ownership.owner) \(ownership.group) \(ownership.mode) 0")
    }

    mutating func write(_ path: String, _ ownership: FileOwnership, _ content: [UInt8]) {
        header("write \(path) \(ownership.owner) \(ownership.group) \(ownership.mode) "
               + "\(content.count)")
        bytes += content
    }

    mutating func own(_ path: String, _ ownership: FileOwnership) {
        header("own \(path) \(ownership.owner) \(ownership.group) \(ownership.mode) 0")
    }

    /// An empty marker file in the module folder; only its being there matters.
    mutating func mark(_ path: String) {
        header("mark \(path) - - - 0")
    }

    mutating func remove(_ path: String) {
        header("rm \(path) - - - 0")
    }

    /// A removed agent's data folder (it holds NixOS's copy of the agent's token).
    mutating func removeAgentData(_ agent: String) {
        header("rmdata \(agent) - - - 0")
    }

    mutating func removeDirectory(_ path: String) {
        header("rmdir \(path) - - - 0")
    }

    /// The whole input, closed by `end` so the script can tell a cut-off stream.
    func payload() -> [UInt8] {
        bytes + Array("end\n".utf8)
    }

    private mutating func header(_ line: String) {
        // Paths come from validated names and absolute, space-free folders (checked when
        // the inventory loads), so a space can safely separate the fields.
        bytes += Array((line + "\n").utf8)
        isEmpty = false
    }
}
