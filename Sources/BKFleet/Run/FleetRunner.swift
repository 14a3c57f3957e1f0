// Runs one HostRun per host with at most `parallel` hosts in flight, each on its own OS
// thread (libssh2 blocks; Swift's cooperative pool must never be parked on it: see
// docs/architecture.md), batch after batch with a failure budget (Batches.swift). A
// failing host never stops the others in flight; it only stops new hosts from starting.
import Foundation

/// What a rolling run did: a report for every host (in the given order) and its batches.
public struct FleetRun: Sendable {
    public var reports: [HostReport]
    /// Host names per planned batch, in order.
    public var batches: [[String]]
    /// Batches in which at least one host started.
    public var batchesRun: Int
    /// Hosts in a batch that started but were never started themselves are
    /// `.notAttempted`, as are all hosts of later batches.
    public var notAttempted: Int {
        reports.filter { !$0.outcome.wasAttempted }.count
    }
}

public enum FleetRunner {
    /// Every host at once (bounded by --parallel), as before batches existed.
    public static func run(hosts: [Host], context: RunContext) -> [HostReport] {
        run(hosts: hosts, context: context, rollout: Rollout()).reports
    }

    public static func run(hosts: [Host], context: RunContext, rollout: Rollout) -> FleetRun {
        let limit = context.options.parallel ?? context.inventory.defaults.parallel
        return run(hosts: hosts, parallel: limit, rollout: rollout) { host in
            HostRun(host: host, context: context).run()
        }
    }

    /// The scheduler, with the per-host work injected so it can be tested without hosts.
    /// A batch starts when every host of the previous one has finished; before each host
    /// starts, failures so far are compared with the budget, and once they exceed it no
    /// further host starts. `runHost` is called on a dedicated thread.
    public static func run(hosts: [Host], parallel: Int, rollout: Rollout,
                           runHost: @escaping @Sendable (Host) -> HostReport) -> FleetRun {
        let slots = DispatchSemaphore(value: max(1, parallel))
        let reports = ReportBox()
        let batches = rollout.batches(hosts)
        let budget = rollout.failureBudget(of: hosts.count)
        var batchesRun = 0
        var stopped = false

        for batch in batches where !stopped {
            let done = DispatchGroup()
            var startedAny = false
            for host in batch {
                slots.wait()
                // Waiting for a slot is also waiting for failures to come in, so the
                // budget is checked after it: a host never starts past a spent budget.
                if let budget, reports.failures > budget {
                    slots.signal()
                    stopped = true
                    break
                }
                startedAny = true
                done.enter()
                let thread = Thread {
                    reports.add(runHost(host))
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
            if startedAny { batchesRun += 1 }
            if let budget, reports.failures > budget { stopped = true }
        }

        let failures = reports.failures
        let reason = "failure budget spent (\(failures) failed, "
            + "\(rollout.budgetText(of: hosts.count)))"
        return FleetRun(
            reports: hosts.map {
                reports.report(for: $0.name)
                    ?? HostReport(host: $0.name, outcome: .notAttempted(reason: reason))
            },
            batches: batches.map { $0.map(\.name) },
            batchesRun: batchesRun)
    }
}

/// Reports handed in by host threads, guarded by a lock.
private final class ReportBox: @unchecked Sendable {
    private let lock = NSLock()
    private var reports: [String: HostReport] = [:]
    private var failed = 0

    func add(_ report: HostReport) {
        lock.withLock {
            reports[report.host] = report
            if report.outcome.isFailure { failed += 1 }
        }
    }

    func report(for host: String) -> HostReport? {
        lock.withLock { reports[host] }
    }

    var failures: Int {
        lock.withLock { failed }
    }
}
