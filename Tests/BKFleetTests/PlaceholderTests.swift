import XCTest
@testable import BKFleet
final class PlaceholderTests: XCTestCase { func testVersionIsSemantic() { XCTAssertEqual(BKFleetVersion.string.split(separator: ".").count, 3) } }
