// `--batch`, `--max-fail` and `--parallel` through FleetRunner with a fake per-host run:
// which hosts ran, in which groups, and what the report says of those never attempted.
import Foundation
import XCTest
@testable import BKFleet

/// Records what the scheduler did. Hosts are released in groups of `peers` by start order
/// (the first `peers` wait until all of them started, and so on), which shows hosts that
/// should run together doing so, and exposes batches that overlap or a leaking bound.
final class FakeFleet: @unchecked Sendable {
    private let condition = NSCondition()
    private(set) var log: [String] = []
    private var inFlight = 0
    private(set) var peakInFlight = 0
    private var startedCount = 0
    let failing: Set<String>
    let peers: Int
    let total: Int

    init(failing: Set<String> = [], peers: Int = 1, total: Int = 10) {
        self.failing = failing
        self.peers = peers
        self.total = total
    }

    func run(_ host: BKFleet.Host) -> HostReport {
        condition.lock()
        log.append("start \(host.name)")
        inFlight += 1
        peakInFlight = max(peakInFlight, inFlight)
        let release = min(total, (startedCount / peers + 1) * peers)
        startedCount += 1
        condition.broadcast()
        // Bounded so a scheduler bug shows as a failed assertion rather than a hang.
        let deadline = Date().addingTimeInterval(10)
        while startedCount < release, condition.wait(until: deadline) {}
        inFlight -= 1
        log.append("end \(host.name)")
        condition.unlock()
        return HostReport(host: host.name, outcome: failing.contains(host.name)
                          ? .failed(step: .rebuild, message: "exit status 1") : .unchanged)
    }

    /// Host names in the order they started.
    var started: [String] {
        condition.lock()
        defer { condition.unlock() }
        return log.filter { $0.hasPrefix("start ") }.map { String($0.dropFirst(6)) }
    }

    var events: [String] {
        condition.lock()
        defer { condition.unlock() }
        return log
    }
}

final class BatchTests: XCTestCase {
    let hosts = (1...10).map { ScaleFixtures.host(String(format: "b%02d", $0)) }

    func run(_ rollout: Rollout, parallel: Int = 50, fake: FakeFleet) -> FleetRun {
        FleetRunner.run(hosts: hosts, parallel: parallel, rollout: rollout,
                        runHost: { fake.run($0) })
    }

    func count(_ text: String, option: String = "batch", minimum: Int = 1) -> String {
        do {
            return "\(try HostCount(parsing: text, option: option, minimum: minimum))"
        } catch {
            return "\(error)"
        }
    }

    func testCountsParse() {
        XCTAssertEqual(count("3"), "3")
        XCTAssertEqual(count("25%"), "25%")
        XCTAssertEqual(count("0", option: "max-fail", minimum: 0), "0")
        XCTAssertEqual(count("0"), "--batch wants a whole number ≥ 1 or a percentage like "
                       + "20%, not '0'")
        XCTAssertTrue(count("0%").contains("P a whole number 1...100"))
        XCTAssertTrue(count("101%", option: "max-fail", minimum: 0)
            .contains("--max-fail wants N or P% with P a whole number 0...100"))
        XCTAssertTrue(count("two").contains("not 'two'"))
    }

    func testBatchPlanning() {
        let names = hosts.map(\.name)
        XCTAssertEqual(Rollout().batches(names), [names])
        XCTAssertEqual(Rollout(batch: .hosts(3)).batches(names).map(\.count), [3, 3, 3, 1])
        XCTAssertEqual(Rollout(batch: .percent(25)).batches(names).map(\.count),
                       [2, 2, 2, 2, 2])
        // Rounds down but never to zero hosts.
        XCTAssertEqual(Rollout(batch: .percent(5)).batches(names).count, 10)
        XCTAssertEqual(Rollout(batch: .percent(100)).batches(names), [names])
        XCTAssertEqual(Rollout(batch: .hosts(3)).batches([String]()), [])
    }

    func testFailureBudget() {
        XCTAssertNil(Rollout().failureBudget(of: 20))
        XCTAssertEqual(Rollout(maxFail: .hosts(2)).failureBudget(of: 20), 2)
        XCTAssertEqual(Rollout(maxFail: .percent(10)).failureBudget(of: 20), 2)
        XCTAssertEqual(Rollout(maxFail: .percent(10)).failureBudget(of: 5), 0)
    }

    func testWithoutBatchOrBudgetEveryHostRunsAndFailuresDoNotStopOthers() {
        let fake = FakeFleet(failing: ["b01", "b02", "b03"])
        let run = run(Rollout(), fake: fake)
        XCTAssertEqual(Set(fake.started), Set(hosts.map(\.name)))
        XCTAssertEqual(run.reports.map(\.host), hosts.map(\.name))
        XCTAssertEqual(run.reports.filter { $0.outcome.isFailure }.count, 3)
        XCTAssertEqual(run.notAttempted, 0)
        XCTAssertEqual(run.batchesRun, 1)
    }

    func testParallelBoundsHostsInFlight() {
        let fake = FakeFleet(peers: 3)
        _ = run(Rollout(), parallel: 3, fake: fake)
        XCTAssertEqual(fake.peakInFlight, 3)
        XCTAssertEqual(fake.started.count, 10)
    }

    func testBatchesRunOneAfterAnother() {
        // Hosts wait for their whole batch to be in flight: a batch that started before
        // the previous one finished would show a start among the previous batch's ends.
        let fake = FakeFleet(peers: 4)
        let run = run(Rollout(batch: .hosts(4)), fake: fake)
        XCTAssertEqual(run.batches, [["b01", "b02", "b03", "b04"], ["b05", "b06", "b07", "b08"],
                                     ["b09", "b10"]])
        XCTAssertEqual(run.batchesRun, 3)
        var groups: [Set<String>] = []
        var phase = "end"
        for event in fake.events {
            let parts = event.split(separator: " ").map(String.init)
            if parts[0] == "start" && phase == "end" { groups.append([]) }
            if parts[0] == "start" { groups[groups.count - 1].insert(parts[1]) }
            phase = parts[0]
        }
        XCTAssertEqual(groups, run.batches.map(Set.init))
    }

    func testParallelBoundsHostsWithinABatch() {
        let fake = FakeFleet(peers: 2)
        let run = run(Rollout(batch: .hosts(4)), parallel: 2, fake: fake)
        XCTAssertEqual(fake.peakInFlight, 2)
        XCTAssertEqual(run.batchesRun, 3)
        XCTAssertEqual(fake.started.count, 10)
    }

    func testSpentBudgetStopsLaterBatches() {
        // Batch 1: one failure, within --max-fail 1. Batch 2: two more; batches 3-5 never
        // start.
        let fake = FakeFleet(failing: ["b01", "b03", "b04"])
        let run = run(Rollout(batch: .hosts(2), maxFail: .hosts(1)), fake: fake)
        XCTAssertEqual(Set(fake.started), ["b01", "b02", "b03", "b04"])
        XCTAssertEqual(run.batchesRun, 2)
        XCTAssertEqual(run.batches.count, 5)
        XCTAssertEqual(run.notAttempted, 6)
        XCTAssertEqual(run.reports.map(\.host), hosts.map(\.name))
        for report in run.reports.dropFirst(4) {
            guard case .notAttempted(let reason) = report.outcome else {
                return XCTFail("\(report.host) was attempted")
            }
            XCTAssertEqual(reason, "failure budget spent (3 failed, --max-fail 1)")
            XCTAssertFalse(report.outcome.isFailure)
        }
    }

    func testSpentBudgetStopsTheRestOfABatch() {
        // One at a time: after b02 fails with --max-fail 0 nothing else starts.
        let fake = FakeFleet(failing: ["b02"])
        let run = run(Rollout(maxFail: .hosts(0)), parallel: 1, fake: fake)
        XCTAssertEqual(fake.started, ["b01", "b02"])
        XCTAssertEqual(run.batchesRun, 1)
        XCTAssertEqual(run.notAttempted, 8)
        guard case .unchanged = run.reports[0].outcome else { return XCTFail("b01") }
        guard case .notAttempted(let reason) = run.reports[2].outcome else {
            return XCTFail("b03 was attempted")
        }
        XCTAssertEqual(reason, "failure budget spent (1 failed, --max-fail 0)")
    }

    func testPercentBudgetIsOfTheSelectedHosts() {
        // 20% of 10 hosts tolerates 2 failures; the third, in batch 2, stops the run.
        let fake = FakeFleet(failing: ["b01", "b02", "b05"])
        let run = run(Rollout(batch: .percent(30), maxFail: .percent(20)), fake: fake)
        XCTAssertEqual(run.batches.map(\.count), [3, 3, 3, 1])
        // Hosts of a batch run at once: b06 starts only if it began before b05 failed.
        let started = Set(fake.started)
        XCTAssertTrue(started.isSuperset(of: ["b01", "b02", "b03", "b04", "b05"]), "\(started)")
        XCTAssertTrue(started.isSubset(of: ["b01", "b02", "b03", "b04", "b05", "b06"]),
                      "\(started)")
        XCTAssertEqual(run.batchesRun, 2)
        guard case .notAttempted(let reason) = run.reports[9].outcome else {
            return XCTFail("b10 was attempted")
        }
        XCTAssertEqual(reason, "failure budget spent (3 failed, --max-fail 20% = 2 of 10)")
    }

    func testFailuresWithinBudgetRunEveryBatch() {
        let fake = FakeFleet(failing: ["b01", "b10"])
        let run = run(Rollout(batch: .hosts(3), maxFail: .hosts(2)), fake: fake)
        XCTAssertEqual(fake.started.count, 10)
        XCTAssertEqual(run.batchesRun, 4)
        XCTAssertEqual(run.notAttempted, 0)
    }
}
