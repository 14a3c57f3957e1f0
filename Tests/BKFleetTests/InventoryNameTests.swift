// Hostile and invalid names in an inventory: each is refused with the line and column
// of the name and the rule it breaks, before anything could reach a host.
import XCTest
@testable import BKFleet

final class InventoryNameTests: XCTestCase {
    private func agentNamed(_ name: String) -> String {
        minimalInventory.replacingOccurrences(of: "[agents.linux]", with: "[agents.\(name)]")
            .replacingOccurrences(of: "agents = [\"linux\"]", with: "agents = []")
    }

    func test_agent_name_of_17_characters_is_refused_because_unix_users_stop_at_32() {
        let errors = inventoryErrors(agentNamed("abcdefghijklmnopq"))
        XCTAssertEqual(errors, ["/srv/fleet/inventory.toml:6:9: invalid agent name "
            + "'abcdefghijklmnopq': it has 17 characters; at most 16 fit, because the Unix "
            + "user 'buildkite-agent-<name>' must stay within 32; use e.g. [agents.linux-x86]"])
    }

    func test_agent_name_of_16_characters_is_accepted() throws {
        let inventory = try loadInventory(agentNamed("abcdefghijklmnop"))
        XCTAssertEqual(inventory.agents["abcdefghijklmnop"]?.userName,
                       "buildkite-agent-abcdefghijklmnop")
    }

    func test_agent_names_with_path_parts_uppercase_or_control_characters_are_refused() {
        let cases: [(String, String)] = [
            ("\"../x\"", "it must start with a lowercase letter"),
            ("\"a/b\"", "only lowercase letters, digits and '-' are allowed"),
            ("Linux", "it must start with a lowercase letter"),
            ("\"web\\u0000\"", "it contains a control character (U+0000)"),
            ("\"we\\nb\"", "it contains a control character (U+000A)"),
            ("\"\"", "it is empty"),
            ("web-", "it must not end with '-'"),
        ]
        for (written, reason) in cases {
            let errors = inventoryErrors(agentNamed(written))
            XCTAssertEqual(errors.count, 1, written)
            XCTAssertTrue(errors.first?.hasPrefix("/srv/fleet/inventory.toml:6:9: invalid "
                + "agent name") ?? false, "\(errors)")
            XCTAssertTrue(errors.first?.contains(reason) ?? false, "\(written): \(errors)")
        }
    }

    func test_control_characters_in_names_are_shown_escaped_not_raw() {
        let errors = inventoryErrors(agentNamed("\"we\\u001b[2Jb\""))
        XCTAssertTrue(errors.first?.contains("'we\\u{1b}[2Jb'") ?? false, "\(errors)")
        XCTAssertFalse(errors.joined().unicodeScalars.contains("\u{1b}"))
    }

    func test_host_names_with_slashes_dotdot_or_too_long_are_refused_at_the_value() {
        let cases: [(String, String)] = [
            ("../x", "it contains '/'"),
            ("a..b", "it contains '..'"),
            ("a/b", "it contains '/'"),
            (String(repeating: "h", count: 64), "it has 64 characters; at most 63"),
            ("-rf", "it must start with a letter or digit"),
            ("has space", "only letters, digits, '-', '.' and '_' are allowed"),
        ]
        for (name, reason) in cases {
            let text = minimalInventory.replacingOccurrences(of: "\"builder-01\"",
                                                             with: "\"\(name)\"")
            let errors = inventoryErrors(text)
            XCTAssertEqual(errors.count, 1, name)
            XCTAssertTrue(errors.first?.hasPrefix("/srv/fleet/inventory.toml:10:8: invalid "
                + "host name") ?? false, "\(errors)")
            XCTAssertTrue(errors.first?.contains(reason) ?? false, "\(name): \(errors)")
        }
    }

    func test_host_name_of_63_characters_with_dots_and_underscores_is_accepted() throws {
        let name = "b_1." + String(repeating: "x", count: 59)
        let text = minimalInventory.replacingOccurrences(of: "builder-01", with: name)
        XCTAssertEqual(try loadInventory(text).hosts[0].name, name)
    }

    func test_tags_with_newlines_or_bad_keys_are_refused() {
        let text = minimalInventory.replacingOccurrences(
            of: "token = \"default\"",
            with: "token = \"default\"\ntags = { queue = \"a\\nb\", \"bad key\" = \"x\" }")
        XCTAssertEqual(inventoryErrors(text), [
            "/srv/fleet/inventory.toml:8:18: invalid value for tag 'queue' in "
                + "[agents.linux]: it contains a control character (U+000A); Buildkite tags "
                + "are single-line text",
            "/srv/fleet/inventory.toml:8:26: invalid tag name 'bad key' in [agents.linux]: "
                + "only letters, digits, '-', '.' and '_' are allowed",
        ])
    }

    func test_tag_values_keep_quotes_dollars_and_non_ascii() throws {
        let text = minimalInventory.replacingOccurrences(
            of: "token = \"default\"",
            with: "token = \"default\"\ntags = { note = 'say \"hi\" ${x} \\ ünïcødé' }")
        let inventory = try loadInventory(text)
        XCTAssertEqual(inventory.agents["linux"]?.tags["note"], "say \"hi\" ${x} \\ ünïcødé")
    }

    func test_user_names_and_ports_must_be_valid() {
        let text = minimalInventory.replacingOccurrences(
            of: "agents = [\"linux\"]",
            with: "agents = [\"linux\"]\nuser = \"Root;rm\"\nport = 0")
        XCTAssertEqual(inventoryErrors(text), [
            "/srv/fleet/inventory.toml:13:8: invalid user name 'Root;rm' for host "
                + "'builder-01': it must start with a lowercase letter or '_'",
            "/srv/fleet/inventory.toml:14:8: port 0 in [[hosts]] is out of range; use 1 to "
                + "65535",
        ])
    }

    func test_runtime_packages_must_be_nix_attribute_names() {
        let text = minimalInventory.replacingOccurrences(
            of: "token = \"default\"",
            with: "token = \"default\"\nruntime_packages = [\"git\", \"${evil}\", "
                + "\"python3Packages.pytest\"]")
        let errors = inventoryErrors(text)
        XCTAssertEqual(errors.count, 1)
        XCTAssertTrue(errors[0].hasPrefix("/srv/fleet/inventory.toml:8:28: invalid package "
            + "'${evil}' in runtime_packages"), errors[0])
    }

    func test_address_starting_with_dash_is_refused() {
        let text = minimalInventory.replacingOccurrences(of: "\"10.250.0.11\"",
                                                         with: "\"-oProxyCommand=x\"")
        XCTAssertEqual(inventoryErrors(text).count, 1)
        XCTAssertTrue(inventoryErrors(text)[0].contains("it must not start with '-'"))
    }
}
