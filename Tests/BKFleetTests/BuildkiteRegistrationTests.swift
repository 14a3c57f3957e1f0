// How bkfleet decides an agent registered (RegistrationMatch) and how many API calls a
// fleet's verification costs (RegistrationBoard), with made-up listings and a fake clock.
import Foundation
import XCTest
@testable import BKFleet

final class BuildkiteRegistrationTests: XCTestCase {
    private let start = Date(timeIntervalSince1970: 1_714_557_600)

    private func agent(_ id: String, name: String = "builder-01-ci-1",
                       hostname: String = "builder-01", state: String = "connected",
                       createdOffset: TimeInterval) -> BuildkiteAgent {
        BuildkiteAgent(id: id, name: name, hostname: hostname, connectionState: state,
                       createdAt: start.addingTimeInterval(createdOffset), metaData: [])
    }

    private func find(_ agents: [BuildkiteAgent], skew: TimeInterval = 5) -> BuildkiteAgent? {
        RegistrationMatch.find(in: agents, name: "builder-01-ci-1", hostname: "builder-01",
                               startedAfter: start, skew: skew)
    }

    // MARK: Matching

    func test_the_connected_entry_registered_after_the_start_is_found() {
        let listing = [agent("other-host", hostname: "builder-02", createdOffset: 3),
                       agent("other-name", name: "builder-01-ci-2", createdOffset: 3),
                       agent("right", createdOffset: 3)]
        XCTAssertEqual(find(listing)?.id, "right")
    }

    func test_stale_disconnected_or_lost_entry_with_the_same_name_is_ignored() {
        XCTAssertNil(find([agent("old", state: "disconnected", createdOffset: 2),
                           agent("older", state: "lost", createdOffset: 1)]))
        XCTAssertEqual(find([agent("old", state: "lost", createdOffset: 20),
                             agent("new", createdOffset: 10)])?.id, "new")
    }

    func test_entry_created_before_the_unit_started_is_ignored() {
        XCTAssertNil(find([agent("previous-run", createdOffset: -60)]))
    }

    func test_skew_tolerates_a_buildkite_clock_slightly_behind_the_host() {
        XCTAssertEqual(find([agent("a", createdOffset: -3)], skew: 5)?.id, "a")
        XCTAssertNil(find([agent("a", createdOffset: -3)], skew: 1))
    }

    func test_registered_but_not_yet_connected_does_not_count() {
        XCTAssertNil(find([agent("a", state: "never_connected", createdOffset: 1)]))
    }

    func test_newest_of_several_qualifying_entries_wins_and_host_case_is_ignored() {
        let listing = [agent("first", createdOffset: 1),
                       agent("second", hostname: "BUILDER-01", createdOffset: 9)]
        XCTAssertEqual(find(listing)?.id, "second")
    }

    func test_a_miss_is_explained_with_what_buildkite_lists() {
        func explain(_ agents: [BuildkiteAgent]) -> String {
            RegistrationMatch.explainMiss(in: agents, name: "builder-01-ci-1",
                                          hostname: "builder-01", startedAfter: start, skew: 5)
        }
        XCTAssertTrue(explain([]).contains("does not list"))
        XCTAssertTrue(explain([agent("a", state: "lost", createdOffset: -100)])
            .contains("before the unit started"))
        XCTAssertTrue(explain([agent("a", state: "never_connected", createdOffset: 1)])
            .contains("never_connected"))
        XCTAssertTrue(explain([agent("a", hostname: "builder-01.lan", createdOffset: 1)])
            .contains("builder-01.lan"))
    }

    // MARK: Sharing listings

    func test_repeated_asks_for_an_old_enough_listing_reuse_it() throws {
        let clock = FakeClock(start)
        let calls = Counter()
        let board = RegistrationBoard(fetch: { calls.next(); return [] },
                                      clock: clock.now, sleep: clock.advance)
        clock.set(start.addingTimeInterval(10))
        for _ in 0..<5 {
            XCTAssertEqual(try board.snapshot(notBefore: start).fetchedAt,
                           start.addingTimeInterval(10))
        }
        XCTAssertEqual(calls.value, 1)

        // The next polling round asks for something newer and gets one more fetch.
        clock.set(start.addingTimeInterval(12))
        _ = try board.agents(fetchedAfter: start.addingTimeInterval(12))
        XCTAssertEqual(calls.value, 2)
    }

    func test_an_ask_for_a_future_time_waits_until_then_before_fetching() throws {
        let clock = FakeClock(start)
        let board = RegistrationBoard(fetch: { [] }, clock: clock.now, sleep: clock.advance)
        let snapshot = try board.snapshot(notBefore: start.addingTimeInterval(4))
        XCTAssertGreaterThanOrEqual(snapshot.fetchedAt, start.addingTimeInterval(4))
    }

    func test_a_failed_fetch_is_shared_and_the_next_round_tries_again() {
        struct Outage: Error {}
        let clock = FakeClock(start)
        let calls = Counter()
        let board = RegistrationBoard(fetch: {
            if calls.next() == 1 { throw Outage() }
            return []
        }, clock: clock.now, sleep: clock.advance)
        XCTAssertThrowsError(try board.agents(fetchedAfter: start))
        XCTAssertThrowsError(try board.agents(fetchedAfter: start))
        XCTAssertEqual(calls.value, 1)
        clock.set(start.addingTimeInterval(5))
        XCTAssertNoThrow(try board.agents(fetchedAfter: start.addingTimeInterval(5)))
        XCTAssertEqual(calls.value, 2)
    }

    func test_many_hosts_asking_during_one_fetch_share_it() throws {
        let gate = DispatchSemaphore(value: 0)
        let calls = Counter()
        let listing = [agent("a", createdOffset: 1)]
        let board = RegistrationBoard(fetch: {
            calls.next()
            gate.wait()
            return listing
        }, clock: { Date(timeIntervalSince1970: 1_714_557_610) })

        let results = Results()
        let group = DispatchGroup()
        func ask() {
            group.enter()
            Thread.detachNewThread {
                results.add(try? board.agents(fetchedAfter: self.start))
                group.leave()
            }
        }
        ask()
        try waitUntil { board.fetchCount == 1 }
        for _ in 0..<49 { ask() }
        try waitUntil { board.waitingCount == 49 }
        gate.signal()
        group.wait()

        XCTAssertEqual(calls.value, 1)
        XCTAssertEqual(results.all.count, 50)
        XCTAssertTrue(results.all.allSatisfy { $0 == listing })
    }

    func test_an_ask_newer_than_the_fetch_in_flight_waits_for_it_then_fetches_anew() throws {
        let clock = FakeClock(start)
        let gate = DispatchSemaphore(value: 0)
        let calls = Counter()
        let board = RegistrationBoard(fetch: {
            calls.next()
            gate.wait()
            return []
        }, clock: clock.now, sleep: clock.advance)

        let group = DispatchGroup()
        let results = Results()
        func ask(_ time: Date) {
            group.enter()
            Thread.detachNewThread {
                results.add(try? board.agents(fetchedAfter: time))
                group.leave()
            }
        }
        ask(start)
        try waitUntil { board.fetchCount == 1 }
        clock.set(start.addingTimeInterval(3))
        ask(start.addingTimeInterval(3))
        try waitUntil { board.waitingCount == 1 }
        XCTAssertEqual(calls.value, 1, "no second fetch while the first is in flight")
        gate.signal()
        try waitUntil { board.fetchCount == 2 }
        gate.signal()
        group.wait()
        XCTAssertEqual(calls.value, 2)
        XCTAssertEqual(results.all.count, 2)
    }

    private struct Stuck: Error {}

    /// Waits for a condition other threads make true; the bound only keeps a broken board
    /// from hanging the suite (it then fails), it is not what the test measures.
    private func waitUntil(_ condition: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(30)
        while !condition() {
            guard Date() < deadline else { throw Stuck() }
            usleep(1000)
        }
    }
}

private final class FakeClock: @unchecked Sendable {
    private let lock = NSLock()
    private var time: Date

    init(_ time: Date) { self.time = time }

    var now: @Sendable () -> Date { { self.lock.withLock { self.time } } }

    var advance: @Sendable (TimeInterval) -> Void {
        { seconds in self.lock.withLock { self.time += seconds } }
    }

    func set(_ date: Date) { lock.withLock { time = date } }
}

private final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0

    @discardableResult
    func next() -> Int { lock.withLock { count += 1; return count } }

    var value: Int { lock.withLock { count } }
}

private final class Results: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [[BuildkiteAgent]?] = []

    func add(_ item: [BuildkiteAgent]?) { lock.withLock { items.append(item) } }

    var all: [[BuildkiteAgent]?] { lock.withLock { items } }
}
