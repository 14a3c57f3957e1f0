// Where hosts report progress while they run. Calls come from many host threads at once;
// the sink serialises them. Event text must already be free of secret values.
import Foundation

public protocol EventSink: AnyObject, Sendable {
    /// A host began `step`; `message` says what it is doing.
    func event(host: String, step: Step, message: String)
    /// A host's run ended (converged, unchanged or failed); called once per host, from
    /// the host's thread, with the report the final table will show.
    func finished(_ report: HostReport)
}

extension EventSink {
    public func finished(_ report: HostReport) {}
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
        lock.withLock { write(LineEventSink.format(host: host, step: step, message: message)) }
    }

    /// `builder-01    push     2 secret(s), 1 module file(s)`: the line every plain view
    /// uses for an event.
    public static func format(host: String, step: Step, message: String) -> String {
        host.padding(toLength: max(host.count, 12), withPad: " ", startingAt: 0)
            + "  " + step.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0) + message
    }

    public func finished(_ report: HostReport) {
        guard verbose, case .failed(let step, let message) = report.outcome else { return }
        event(host: report.host, step: step, message: "failed: \(message)")
    }
}
