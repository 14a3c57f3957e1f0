// Where hosts report progress while they run. Calls come from many host threads at once;
// the sink serialises them. Event text must already be free of secret values.
import Foundation

public protocol EventSink: AnyObject, Sendable {
    func event(host: String, step: Step, message: String)
}

/// Plain lines, one per event, fit for a CI log: `builder-01  push  wrote 2 secrets`.
public final class LineEventSink: EventSink, @unchecked Sendable {
    private let lock = NSLock()
    private let write: (String) -> Void
    public var verbose: Bool

    public init(verbose: Bool, write: @escaping (String) -> Void) {
        self.verbose = verbose
        self.write = write
    }

    public func event(host: String, step: Step, message: String) {
        guard verbose else { return }
        lock.withLock {
            write("\(host.padding(toLength: max(host.count, 12), withPad: " ", startingAt: 0))"
                  + "  \(step.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0))"
                  + "\(message)")
        }
    }
}
