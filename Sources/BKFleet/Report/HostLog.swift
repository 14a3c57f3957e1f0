// A host's log file for one run, under the run's folder. Callers scrub secret values
// before writing; this file only appends lines with a time stamp.
import Foundation

struct HostLog {
    private(set) var path: String?
    private let directory: String
    private let host: String

    init(directory: String, host: String) {
        self.directory = directory
        self.host = host
    }

    mutating func write(_ text: String) {
        let file = (directory as NSString).appendingPathComponent("\(host).log")
        if path == nil {
            try? FileManager.default.createDirectory(atPath: directory,
                                                     withIntermediateDirectories: true,
                                                     attributes: [.posixPermissions: 0o700])
            _ = FileManager.default.createFile(atPath: file, contents: nil,
                                           attributes: [.posixPermissions: 0o600])
            path = file
        }
        let stamp = UTCStamp.iso8601()
        guard let handle = FileHandle(forWritingAtPath: file) else { return }
        handle.seekToEndOfFile()
        handle.write(Data("[\(stamp)] \(text)\n".utf8))
        handle.closeFile()
    }
}
