// Unit tests for the UTC time stamps that name run folders and run ids and date log lines
// and events: the exact text users see and sort by. No clock is read.
import XCTest
@testable import BKFleet

final class UTCStampTests: XCTestCase {
    func testCompactStampNamesRunFoldersSortably() {
        XCTAssertEqual(UTCStamp.compact(Date(timeIntervalSince1970: 0)), "19700101T000000")
        XCTAssertEqual(UTCStamp.compact(Date(timeIntervalSince1970: 1_706_745_599.9)),
                       "20240131T235959")
    }

    func testISO8601MatchesWhatLogsAndPlansShowed() {
        let date = Date(timeIntervalSince1970: 1_709_164_800) // 2024-02-29, leap day
        XCTAssertEqual(UTCStamp.iso8601(date), "2024-02-29T00:00:00Z")
        XCTAssertEqual(UTCStamp.iso8601(date.addingTimeInterval(0.05), fraction: true),
                       "2024-02-29T00:00:00.050Z")
    }

    func testFractionNeverRoundsIntoTheNextSecond() {
        let date = Date(timeIntervalSince1970: 1_700_000_000.9999)
        XCTAssertEqual(UTCStamp.iso8601(date, fraction: true), "2023-11-14T22:13:20.999Z")
    }
}
