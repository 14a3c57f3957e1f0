import XCTest
@testable import BKFleet
final class FleetPlaceholderTests: XCTestCase { func testVersionIsSemantic() { XCTAssertEqual(BKFleetVersion.string.split(separator: ".").count, 3) } }
