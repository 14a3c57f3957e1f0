// The TOML layer: values with positions, and syntax errors that come out of the
// inventory loader as FILE:LINE:COL with toml++'s own message, never as a crash.
import XCTest
@testable import BKFleet

final class TOMLTests: XCTestCase {
    func test_values_carry_kinds_and_positions() throws {
        let root = try TOML.parse("a = 1\nb = [\"x\", 2.5, true]\nd = 1979-05-27T07:32:00Z\n")
        XCTAssertEqual(root["a"], .integer(1, TOMLPosition(line: 1, column: 5)))
        guard case .array(let items, _)? = root["b"] else { return XCTFail("no array") }
        XCTAssertEqual(items.map(\.kindDescription), ["a string", "a float", "a boolean"])
        XCTAssertEqual(items[0].position, TOMLPosition(line: 2, column: 6))
        XCTAssertEqual(root["d"], .dateTime("1979-05-27T07:32:00Z",
                                            TOMLPosition(line: 3, column: 5)))
    }

    func test_table_entries_come_in_file_order_with_key_positions() throws {
        let root = try TOML.parse("zeta = 1\nalpha = 2\n")
        guard case .table(let entries, _) = root else { return XCTFail("no table") }
        XCTAssertEqual(entries.map(\.key), ["zeta", "alpha"])
        XCTAssertEqual(entries[1].keyPosition, TOMLPosition(line: 2, column: 1))
    }

    func test_syntax_error_in_inventory_gives_file_line_column_and_toml_message() {
        let errors = inventoryErrors("version = 1\n[defaults]\nport = 22\nport = 23\n",
                                     file: "fleet.toml")
        XCTAssertEqual(errors, ["fleet.toml:4:8: Error while parsing key-value pair: cannot "
            + "redefine existing integer 'port'"])
    }

    func test_unterminated_string_is_a_located_syntax_error() {
        let errors = inventoryErrors("version = 1\n[[hosts]]\nname = \"builder\n",
                                     file: "fleet.toml")
        XCTAssertEqual(errors.count, 1)
        XCTAssertTrue(errors[0].hasPrefix("fleet.toml:3:"), errors[0])
    }

    func test_invalid_utf8_is_a_located_syntax_error() throws {
        let bytes: [UInt8] = Array("version = 1\nx = \"".utf8) + [0xFF, 0x22, 0x0A]
        XCTAssertThrowsError(try InventoryLoader.load(bytes: bytes, path: "fleet.toml",
                                                      environment: [:])) { error in
            XCTAssertEqual("\(error)", "fleet.toml:2:5: Encountered invalid utf-8 sequence")
        }
    }

    func test_deeply_dotted_keys_are_refused_instead_of_overflowing_the_stack() {
        let deep = String(repeating: "a.", count: 200_000) + "b = 1\n"
        let errors = inventoryErrors(deep, file: "fleet.toml")
        XCTAssertEqual(errors, ["fleet.toml:1:64: a key has more than 32 dotted parts"])
    }

    func test_deeply_nested_inline_tables_are_refused() {
        let deep = "x = [\n" + String(repeating: "{ a.b.c = [\n", count: 40)
        let errors = inventoryErrors(deep, file: "fleet.toml")
        XCTAssertEqual(errors, ["fleet.toml:9:11: arrays and tables nest more than 16 levels "
            + "deep"])
    }

    func test_dots_in_strings_and_comments_do_not_count_as_nesting() throws {
        let dots = String(repeating: ".", count: 100)
        let root = try TOML.parse("a = \"\(dots)\" # \(dots)\nb = '''\n\(dots)'''\n")
        XCTAssertEqual(root["a"], .string(dots, TOMLPosition(line: 1, column: 5)))
    }
}
