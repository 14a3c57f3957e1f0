// Shares Buildkite agent listings among the threads verifying many hosts, so a fleet's
// verification costs about one API call per polling round instead of one per host. It
// does not match agents (RegistrationMatch does) and does not decide when to give up.

import Foundation

/// A listing of the organization's agents and when the request for it was sent.
public struct AgentSnapshot: Sendable {
    /// When the fetch started. Every registration finished before this moment is in
    /// `agents`, which is why it, not the arrival time, is what askers compare against.
    public var fetchedAt: Date
    public var agents: [BuildkiteAgent]
}

/// Hands out agent listings to many host threads at once.
///
/// A host asks for a listing "fetched no earlier than T" (`snapshot(notBefore:)`, or
/// `agents(fetchedAfter:)` for the list alone):
/// 1. the newest listing started at or after T is reused as it is;
/// 2. a fetch already in flight that started at or after T is waited for and shared;
/// 3. otherwise the asker fetches, and everyone arriving meanwhile with T up to that
///    fetch's start shares it; askers with a later T wait for it to end, then fetch anew.
/// A T in the future first waits until T, so a listing never predates what was asked.
///
/// A polling host asks first with T = its unit's start time, then with T = the previous
/// snapshot's `fetchedAt` + the poll interval. Hosts polling in the same round thus ask
/// for the same T and share one fetch. A failed fetch is shared like a listing (every
/// waiter sees the same error), so an API outage is not hammered by every host; the next
/// round, with a later T, tries again.
public final class RegistrationBoard: @unchecked Sendable {
    public typealias Fetch = @Sendable () throws -> [BuildkiteAgent]

    private let fetch: Fetch
    private let clock: @Sendable () -> Date
    private let sleep: @Sendable (TimeInterval) -> Void
    // Guards everything below; waiters sleep on it while a fetch is in flight.
    private let condition = NSCondition()
    private var latest: (fetchedAt: Date, result: Result<[BuildkiteAgent], Error>)?
    private var fetching = false
    private var fetches = 0
    private var waiting = 0

    /// `clock` and `sleep` are replaceable so tests need not wait on the real clock.
    public init(fetch: @escaping Fetch,
                clock: @escaping @Sendable () -> Date = { Date() },
                sleep: @escaping @Sendable (TimeInterval) -> Void = {
                    Thread.sleep(forTimeInterval: $0)
                }) {
        self.fetch = fetch
        self.clock = clock
        self.sleep = sleep
    }

    public convenience init(client: BuildkiteClient) {
        self.init(fetch: { try client.listAgents() })
    }

    /// How many fetches were started so far (each is one listing, possibly several pages).
    public var fetchCount: Int {
        condition.lock()
        defer { condition.unlock() }
        return fetches
    }

    /// How many askers are blocked on someone else's fetch right now; for tests.
    var waitingCount: Int {
        condition.lock()
        defer { condition.unlock() }
        return waiting
    }

    /// A listing whose fetch started at or after `notBefore`; throws the fetch's error.
    public func snapshot(notBefore: Date) throws -> AgentSnapshot {
        let wait = notBefore.timeIntervalSince(clock())
        if wait > 0 { sleep(wait) }

        condition.lock()
        while true {
            // Case 1: a listing that is recent enough.
            if let latest, latest.fetchedAt >= notBefore {
                condition.unlock()
                let result = latest.result
                return AgentSnapshot(fetchedAt: latest.fetchedAt, agents: try result.get())
            }
            // Cases 2 and 3: someone is fetching; after it ends, case 1 or a new fetch.
            if fetching {
                waiting += 1
                condition.wait()
                waiting -= 1
                continue
            }
            break
        }

        // Case 3: this thread fetches, outside the lock so others can queue up.
        let started = clock()
        fetching = true
        fetches += 1
        condition.unlock()

        let result = Result { try fetch() }

        condition.lock()
        if latest.map({ $0.fetchedAt <= started }) ?? true {
            latest = (fetchedAt: started, result: result)
        }
        fetching = false
        condition.broadcast()
        condition.unlock()
        return AgentSnapshot(fetchedAt: started, agents: try result.get())
    }

    /// The agents of a listing whose fetch started at or after `time` (no earlier than it).
    public func agents(fetchedAfter time: Date) throws -> [BuildkiteAgent] {
        try snapshot(notBefore: time).agents
    }
}
