// The live terminal view, driven with synthetic events and a hand-moved clock into a
// buffer: which hosts are shown in flight, their step and elapsed time, the progress bar,
// and that redraws and stop() erase what was drawn. No terminal is needed.
import Foundation
import XCTest
@testable import BKFleet

final class LiveEventSinkTests: XCTestCase {
    final class Screen: @unchecked Sendable {
        var written = ""
        var now = Date(timeIntervalSince1970: 1000)
    }

    func live(_ screen: Screen, total: Int, color: Bool = false, verbose: Bool = false,
              maxHostLines: Int = 20) -> LiveEventSink {
        LiveEventSink(total: total, color: color, verbose: verbose,
                      maxHostLines: maxHostLines, minInterval: 0, columns: { 80 },
                      now: { screen.now }, write: { screen.written += $0 })
    }

    func testFrameShowsEachHostInFlightWithCurrentStepAndElapsedThenTheBar() {
        let screen = Screen()
        let sink = live(screen, total: 4)
        sink.event(host: "builder-01", step: .connect, message: "connecting to 10.0.0.1:22")
        screen.now += 1.5
        sink.event(host: "builder-10", step: .connect, message: "connecting to 10.0.0.10:22")
        screen.now += 2
        sink.event(host: "builder-01", step: .rebuild, message: "nixos-rebuild switch")
        XCTAssertEqual(sink.frame(), [
            "  builder-01  rebuild       3.5s  nixos-rebuild switch",
            "  builder-10  connect       2.0s  connecting to 10.0.0.10:22",
            "[----------------------------------------]  0/4 hosts  3.5s",
        ])
    }

    func testFinishedHostLeavesTheViewAndAdvancesTheBarWithCounts() {
        let screen = Screen()
        let sink = live(screen, total: 4)
        for name in ["a", "b", "c"] { sink.event(host: name, step: .probe, message: "reading") }
        sink.finished(HostReport(host: "a", outcome: .changed))
        sink.finished(HostReport(host: "b", outcome: .failed(step: .push, message: "disk full")))
        let frame = sink.frame()
        XCTAssertEqual(frame.count, 2)
        XCTAssertTrue(frame[0].hasPrefix("  c  probe"))
        // Half the bar, which shrinks to leave the counts room in 80 columns.
        XCTAssertEqual(frame[1], "[###################-------------------]  2/4 hosts "
                       + "(1 changed, 1 failed)  0.0s")
    }

    func testManyHostsAreCappedWithACountOfTheRest() {
        let screen = Screen()
        let sink = live(screen, total: 10, maxHostLines: 3)
        for index in 0..<7 { sink.event(host: "h\(index)", step: .connect, message: "") }
        let frame = sink.frame()
        XCTAssertEqual(frame.count, 5)
        XCTAssertEqual(frame[3], "  … and 4 more in flight")
    }

    func testLongMessagesAreCutToTheTerminalWidthSoRedrawsDoNotWrap() {
        let screen = Screen()
        let sink = live(screen, total: 1)
        sink.event(host: "builder-01", step: .verify, message: String(repeating: "w", count: 300))
        XCTAssertTrue(sink.frame().allSatisfy { $0.count < 80 })
    }

    func testEachRedrawMovesBackOverThePreviousFrameAndStopErasesIt() {
        let screen = Screen()
        let sink = live(screen, total: 2)
        sink.event(host: "a", step: .connect, message: "x")
        XCTAssertFalse(screen.written.contains("\u{1B}["), "first frame has nothing to erase")
        screen.written = ""
        sink.event(host: "b", step: .connect, message: "y")
        // One host line and the bar were drawn before: go up 2 lines and clear.
        XCTAssertTrue(screen.written.hasPrefix("\u{1B}[2A\r\u{1B}[J"))
        XCTAssertEqual(screen.written.filter { $0 == "\n" }.count, 3)
        screen.written = ""
        sink.stop()
        XCTAssertEqual(screen.written, "\u{1B}[3A\r\u{1B}[J")
        screen.written = ""
        sink.event(host: "c", step: .connect, message: "late")
        XCTAssertEqual(screen.written, "", "nothing is drawn after stop")
    }

    func testVerboseLinesArePrintedAboveTheLiveView() {
        let screen = Screen()
        let sink = live(screen, total: 1, verbose: true)
        sink.event(host: "a", step: .connect, message: "first")
        sink.event(host: "a", step: .probe, message: "reading state")
        let lastFrame = screen.written.components(separatedBy: "\u{1B}[J").last ?? ""
        XCTAssertTrue(lastFrame.hasPrefix(LineEventSink.format(host: "a", step: .probe,
                                                                message: "reading state")))
        XCTAssertTrue(lastFrame.contains("  a  probe"))
    }

    func testColourOnlyWhenAskedForAndTheWordsStayTheSame() {
        let plain = live(Screen(), total: 1, color: false)
        let coloured = live(Screen(), total: 1, color: true)
        for sink in [plain, coloured] {
            sink.event(host: "a", step: .connect, message: "")
            sink.finished(HostReport(host: "a", outcome: .failed(step: .connect, message: "")))
        }
        XCTAssertFalse(plain.frame().joined().contains("\u{1B}"))
        XCTAssertTrue(coloured.frame().joined().contains("\u{1B}[31m1 failed\u{1B}[0m"))
    }
}
