// The `apply --json` event stream as a pipeline reads it: one object per line, the
// documented field names (docs/events.md), nulls where a field does not apply, and a
// final summary. Driven with synthetic events; no host is contacted.
import Foundation
import XCTest
@testable import BKFleet

final class JsonEventStreamTests: XCTestCase {
    final class Lines: @unchecked Sendable {
        var text = ""
        func objects() throws -> [[String: Any]] {
            try text.split(separator: "\n").map {
                try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8))
                              as? [String: Any])
            }
        }
    }

    func sink(_ lines: Lines) -> JsonEventSink {
        JsonEventSink(now: { Date(timeIntervalSince1970: 1_700_000_000.25) }) {
            lines.text += $0
        }
    }

    func testStepEventHasEveryDocumentedFieldWithNullsForWhatDoesNotApply() throws {
        let lines = Lines()
        sink(lines).event(host: "builder-01", step: .push, message: "2 secret(s)")
        let objects = try lines.objects()
        XCTAssertEqual(objects.count, 1)
        let event = objects[0]
        XCTAssertEqual(event["time"] as? String, "2023-11-14T22:13:20.250Z")
        XCTAssertEqual(event["event"] as? String, "step")
        XCTAssertEqual(event["host"] as? String, "builder-01")
        XCTAssertEqual(event["step"] as? String, "push")
        XCTAssertEqual(event["status"] as? String, "started")
        XCTAssertEqual(event["message"] as? String, "2 secret(s)")
        for field in ["agent", "duration", "error"] {
            XCTAssertTrue(event[field] is NSNull, "\(field) should be null, not missing")
        }
    }

    func testFinishedHostEmitsAgentResultsThenTheHostResultWithDuration() throws {
        let lines = Lines()
        var report = HostReport(host: "builder-02", outcome: .changed)
        report.plan = HostPlan()
        report.rebuilt = true
        report.seconds = 6.125
        report.agents = [AgentResult(agent: "builder", ok: true, detail: "running, confined",
                                     tokenFingerprint: "sha256:0123456789ab")]
        sink(lines).finished(report)
        let objects = try lines.objects()
        XCTAssertEqual(objects.map { $0["event"] as? String }, ["agent", "host"])
        XCTAssertEqual(objects[0]["agent"] as? String, "builder")
        XCTAssertEqual(objects[0]["status"] as? String, "ok")
        XCTAssertEqual(objects[0]["token_fingerprint"] as? String, "sha256:0123456789ab")
        XCTAssertEqual(objects[1]["status"] as? String, "changed")
        XCTAssertEqual(objects[1]["step"] as? String, "done")
        XCTAssertEqual(objects[1]["duration"] as? Double, 6.125)
        XCTAssertTrue(objects[1]["error"] is NSNull)
        XCTAssertTrue((objects[1]["message"] as? String ?? "").contains("rebuilt"))
    }

    func testFailedHostCarriesStepAndErrorOnOneLineEvenWhenTheMessageHasNewlines() throws {
        let lines = Lines()
        let report = HostReport(
            host: "builder-03", outcome: .failed(step: .hostKey, message: "HOST KEY \"x\"\nline 2"))
        sink(lines).finished(report)
        XCTAssertEqual(lines.text.filter { $0 == "\n" }.count, 1)
        let event = try lines.objects()[0]
        XCTAssertEqual(event["status"] as? String, "failed")
        XCTAssertEqual(event["step"] as? String, "host-key")
        XCTAssertEqual(event["error"] as? String, "HOST KEY \"x\"\nline 2")
    }

    func testSummaryCountsOutcomesIncludingHostsNeverAttempted() throws {
        let lines = Lines()
        let reports = [
            HostReport(host: "a", outcome: .unchanged),
            HostReport(host: "b", outcome: .changed),
            HostReport(host: "c", outcome: .failed(step: .rebuild, message: "exit 1")),
            HostReport(host: "d", outcome: .notAttempted(reason: "failure budget spent")),
        ]
        let events = sink(lines)
        events.finished(reports[3])
        events.summary(reports, seconds: 12.5, runDirectory: ".bkfleet/runs/x", exitCode: 1)
        let objects = try lines.objects()
        XCTAssertEqual(objects[0]["status"] as? String, "skipped")
        let summary = objects[1]
        XCTAssertEqual(summary["event"] as? String, "summary")
        XCTAssertEqual(summary["hosts"] as? Int, 4)
        XCTAssertEqual(summary["unchanged"] as? Int, 1)
        XCTAssertEqual(summary["changed"] as? Int, 1)
        XCTAssertEqual(summary["failed"] as? Int, 1)
        XCTAssertEqual(summary["skipped"] as? Int, 1)
        XCTAssertEqual(summary["exit_code"] as? Int, 1)
        XCTAssertEqual(summary["status"] as? String, "failed")
        XCTAssertEqual(summary["logs"] as? String, ".bkfleet/runs/x")
    }

    func testEventsFromManyHostThreadsNeverInterleaveWithinALine() throws {
        let lines = Lines()
        let events = sink(lines)
        DispatchQueue.concurrentPerform(iterations: 200) { index in
            events.event(host: "host-\(index)", step: .verify,
                         message: String(repeating: "x", count: 200))
        }
        XCTAssertEqual(try lines.objects().count, 200)
    }
}
