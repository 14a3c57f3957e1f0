// How an inventory says where a secret comes from: exactly one of file, env or command,
// and never the secret inline. The refusals must not repeat the value they refuse.
import XCTest
@testable import BKFleet

final class SecretSourceTests: XCTestCase {
    private func withToken(_ body: String) -> String {
        minimalInventory.replacingOccurrences(of: "file = \"default.token\"", with: body)
    }

    func test_each_kind_of_source_loads() throws {
        let text = minimalInventory + """

        [tokens.fromenv]
        env = "BUILDKITE_AGENT_TOKEN"

        [ssh_keys.fromcmd]
        command = "pass show ci/key"
        """
        let inventory = try loadInventory(text)
        XCTAssertEqual(inventory.tokens["default"]?.source,
                       .file(path: "/srv/fleet/default.token"))
        XCTAssertEqual(inventory.tokens["fromenv"]?.source,
                       .environment(name: "BUILDKITE_AGENT_TOKEN"))
        XCTAssertEqual(inventory.sshKeys["fromcmd"]?.source, .command("pass show ci/key"))
        XCTAssertEqual(inventory.tokens["default"]?.location.line, 3)
    }

    func test_inline_secret_value_is_refused_with_what_to_write_instead() {
        let errors = inventoryErrors(withToken("value = \"bkua_s3cr3t\""))
        XCTAssertEqual(errors, ["/srv/fleet/inventory.toml:4:1: 'value' in [tokens.default] "
            + "would put the secret itself in the inventory, which may be committed or shared;"
            + " write file = \"path\", env = \"NAME\" or command = \"...\" instead"])
        XCTAssertFalse(errors.joined().contains("s3cr3t"))
    }

    func test_token_written_as_a_plain_string_is_refused_without_echoing_it() {
        let text = minimalInventory.replacingOccurrences(
            of: "[tokens.default]\nfile = \"default.token\"",
            with: "[tokens]\ndefault = \"bkua_s3cr3t\"")
        let errors = inventoryErrors(text)
        XCTAssertEqual(errors, ["/srv/fleet/inventory.toml:4:11: token 'default' is written "
            + "inline; a secret never goes in the inventory. Write [tokens.default] with "
            + "file = \"path\", env = \"NAME\" or command = \"...\" instead"])
    }

    func test_api_token_as_a_string_is_refused_without_echoing_it() {
        let text = minimalInventory + """

        [buildkite]
        org = "demo"
        api_token = "bkua_s3cr3t"
        """
        let errors = inventoryErrors(text)
        XCTAssertEqual(errors, ["/srv/fleet/inventory.toml:15:13: 'api_token' in [buildkite] "
            + "is written inline; a secret never goes in the inventory. Write api_token = "
            + "{ env = \"NAME\" } (or { file = \"path\" } or { command = \"...\" }) instead"])
    }

    func test_two_sources_or_none_are_refused() {
        XCTAssertEqual(inventoryErrors(withToken("file = \"a\"\nenv = \"B\"")), [
            "/srv/fleet/inventory.toml:5:1: [tokens.default] gives both 'file' and 'env'; "
                + "keep exactly one of file, env or command",
        ])
        XCTAssertEqual(inventoryErrors(withToken("")), [
            "/srv/fleet/inventory.toml:3:1: [tokens.default] does not say where the secret "
                + "comes from; write one of file = \"path\", env = \"NAME\" or command = \"...\"",
        ])
    }

    func test_misspelt_source_key_gets_did_you_mean() {
        XCTAssertEqual(inventoryErrors(withToken("fiel = \"x\"\nenv = \"TOKEN\"")), [
            "/srv/fleet/inventory.toml:4:1: unknown key 'fiel' in [tokens.default] (did you "
                + "mean 'file'?); fix the spelling or remove it",
        ])
    }

    func test_env_must_be_a_variable_name() {
        let errors = inventoryErrors(withToken("env = \"$TOKEN\""))
        XCTAssertEqual(errors.count, 1)
        XCTAssertTrue(errors[0].hasPrefix("/srv/fleet/inventory.toml:4:7: env must name an "
            + "environment variable"), errors[0])
    }

    func test_broken_token_source_is_not_also_reported_as_missing_token() {
        let errors = inventoryErrors(withToken("env = 5"))
        XCTAssertEqual(errors, ["/srv/fleet/inventory.toml:4:7: 'env' in [tokens.default]: "
            + "expected a string, found an integer (write e.g. env = \"...\")"])
    }
}
