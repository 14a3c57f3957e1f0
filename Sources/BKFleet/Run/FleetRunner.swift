// Runs one HostRun per host with at most `parallel` hosts in flight, each on its own OS
// thread (libssh2 blocks; Swift's cooperative pool must never be parked on it: see
// docs/architecture.md). A failing host never stops the others.
import Foundation

public enum FleetRunner {
    public static func run(hosts: [Host], context: RunContext) -> [HostReport] {
        let limit = max(1, context.options.parallel ?? context.inventory.defaults.parallel)
        let slots = DispatchSemaphore(value: limit)
        let done = DispatchGroup()
        let reports = ReportBox()

        for host in hosts {
            slots.wait()
            done.enter()
            let thread = Thread {
                let report = HostRun(host: host, context: context).run()
                reports.add(report)
                slots.signal()
                done.leave()
            }
            // The host's work is straight-line code over blocking calls; a small stack
            // keeps hundreds of hosts in flight cheap.
            thread.stackSize = 1 << 20
            thread.name = "bkfleet \(host.name)"
            thread.start()
        }
        done.wait()
        return hosts.compactMap { reports.report(for: $0.name) }
    }
}

/// Reports handed in by host threads, guarded by a lock.
private final class ReportBox: @unchecked Sendable {
    private let lock = NSLock()
    private var reports: [String: HostReport] = [:]

    func add(_ report: HostReport) {
        lock.withLock { reports[report.host] = report }
    }

    func report(for host: String) -> HostReport? {
        lock.withLock { reports[host] }
    }
}
