// Replaces a local file that may hold a secret so that a crash leaves the old bytes or the
// new ones, never a mix: a temporary file beside it, set to the wanted mode before any byte
// is written, fsynced, renamed over the file, then the folder fsynced. It creates no
// folders, words no errors (the caller knows what the file is) and does not remove the
// temporaries a killed process left: the caller knows their tag and whether they matter.
import Foundation

enum AtomicFile {
    /// Writes `bytes` to `path` with `mode`. The temporary is `.<name><tag>XXXXXX` in the
    /// same folder (a rename across folders would not be atomic). `failure(what)` builds
    /// the error while `errno` still says why, e.g. `failure("write")`.
    static func write(_ path: String, _ bytes: [UInt8], mode: mode_t, temporaryTag: String,
                      failure: (String) -> Error) throws {
        let folder = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        var template = Array((folder + "/.\(name)\(temporaryTag)XXXXXX").utf8CString)
        // mkstemp creates the file 0600, so the bytes are never readable by others.
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw failure("create a temporary file beside") }
        let temporary = String(cString: template)
        var ok = fchmod(fd, mode) == 0
        var offset = 0
        while ok && offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes {
                Foundation.write(fd, $0.baseAddress, $0.count)
            }
            if written < 0 && errno == EINTR { continue }
            ok = written > 0
            offset += max(0, written)
        }
        ok = ok && fsync(fd) == 0
        close(fd)
        guard ok, rename(temporary, path) == 0 else {
            // Built before unlink, which may change errno.
            let error = failure("write")
            unlink(temporary)
            throw error
        }
        syncFolder(of: path)
    }

    /// Fsyncs the folder holding `path`, so a rename or unlink in it survives a crash.
    /// Best effort: a folder that cannot be opened is left as it is.
    static func syncFolder(of path: String) {
        let dir = open((path as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY)
        if dir >= 0 { fsync(dir); close(dir) }
    }
}
