// A host's log file for one run, under the run's folder. Every line passes through the
// run's scrubber (secret values become their fingerprints) before it is written, so a
// caller that forgets to scrub cannot leak; this file only appends lines with a stamp.
import Foundation

struct HostLog {
    private(set) var path: String?
    private let directory: String
    private let host: String
    private let scrub: (String) -> String

    init(directory: String, host: String, scrub: @escaping (String) -> String = { $0 }) {
        self.directory = directory
        self.host = host
        self.scrub = scrub
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
        handle.write(Data("[\(stamp)] \(scrub(text))\n".utf8))
        handle.closeFile()
    }
}
