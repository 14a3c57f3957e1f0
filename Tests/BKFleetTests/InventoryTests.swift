// Specification of the inventory loader: what a good inventory becomes, and the exact
// located message for each kind of mistake. Secret reading and TOML parsing have their
// own test files; hostile names are in InventoryNameTests.swift.
import XCTest
@testable import BKFleet

/// A minimal valid inventory; tests append to it or replace parts of it.
let minimalInventory = """
version = 1

[tokens.default]
file = "default.token"

[agents.linux]
token = "default"

[[hosts]]
name = "builder-01"
address = "10.250.0.11"
agents = ["linux"]
"""

let testEnvironment = ["HOME": "/home/ci"]

func loadInventory(_ text: String, file: String = "/srv/fleet/inventory.toml",
                   environment: [String: String] = testEnvironment) throws -> Inventory {
    try InventoryLoader.load(text: text, path: file, environment: environment)
}

/// The diagnostics the loader reports for `text`, one string per problem; fails the
/// test if the text loads.
func inventoryErrors(_ text: String, file: String = "/srv/fleet/inventory.toml",
                     line: UInt = #line) -> [String] {
    do {
        _ = try loadInventory(text, file: file)
        XCTFail("expected the inventory to be refused", line: line)
        return []
    } catch let error as InventoryError {
        return error.diagnostics.map(\.description)
    } catch {
        XCTFail("unexpected error type: \(error)", line: line)
        return []
    }
}

final class InventoryTests: XCTestCase {
    func test_example_inventory_loads_with_every_key() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../inventory/example.toml").standardized
        let inventory = try InventoryLoader.load(path: url.path, environment: testEnvironment)
        let folder = url.deletingLastPathComponent().path

        XCTAssertEqual(inventory.path, url.path)
        XCTAssertEqual(inventory.defaults.user, "deploy")
        XCTAssertEqual(inventory.defaults.identityFile, "/home/ci/.ssh/id_ed25519")
        XCTAssertEqual(inventory.defaults.identityPassphrase,
                       .environment(name: "BKFLEET_KEY_PASSPHRASE"))
        XCTAssertEqual(inventory.defaults.knownHosts, "/home/ci/.ssh/known_hosts")
        XCTAssertEqual(inventory.defaults.rebuildTimeout, 1800)
        XCTAssertEqual(inventory.buildkite?.org, "my-org")
        XCTAssertEqual(inventory.buildkite?.caFile, folder + "/certs/private-ca.pem")
        XCTAssertEqual(inventory.tokens["default"]?.source,
                       .file(path: folder + "/secrets/default.token"))
        XCTAssertEqual(inventory.tokens["release"]?.source,
                       .command("pass show buildkite/release-token"))
        XCTAssertEqual(inventory.sshKeys["github"]?.source,
                       .environment(name: "BUILDKITE_GITHUB_KEY"))

        let linux = try XCTUnwrap(inventory.agents["linux"])
        XCTAssertEqual(linux.sshKey, "github")
        XCTAssertEqual(linux.tags, ["queue": "default", "os": "nixos"])
        XCTAssertEqual(linux.hooks.keys.sorted(), ["environment", "pre-command"])
        XCTAssertEqual(linux.extraConfig, "spawn=2\n")
        XCTAssertEqual(linux.displayName, "%hostname-linux-%n")
        XCTAssertTrue(linux.confinement)

        XCTAssertEqual(inventory.hosts.map(\.name), ["builder-01", "builder-02"])
        XCTAssertEqual(inventory.hosts[0].agents, ["linux", "release"])
        XCTAssertEqual(inventory.hosts[0].port, 22)
        XCTAssertEqual(inventory.hosts[0].user, "deploy")
        XCTAssertEqual(inventory.hosts[0].groups, ["x86", "rack-a"])
        XCTAssertEqual(inventory.hosts[1].port, 2222)
        XCTAssertEqual(inventory.hosts[1].user, "root")
        XCTAssertEqual(inventory.hosts[1].rebuildCommand,
                       "nixos-rebuild switch --flake /etc/nixos#builder-02")
        let bytes = try Data(contentsOf: url)
        XCTAssertEqual(inventory.contentHash, Digest.sha256Hex(bytes))
    }

    func test_minimal_inventory_gets_documented_defaults() throws {
        let inventory = try loadInventory(minimalInventory)
        let defaults = inventory.defaults
        XCTAssertEqual(defaults.user, "root")
        XCTAssertEqual(defaults.port, 22)
        XCTAssertEqual(defaults.identityFile, "/home/ci/.ssh/id_ed25519")
        XCTAssertFalse(defaults.useAgent)
        XCTAssertEqual(defaults.knownHosts, "/home/ci/.ssh/known_hosts")
        XCTAssertEqual(defaults.moduleDir, "/etc/nixos/bkfleet")
        XCTAssertEqual(defaults.secretDir, "/var/lib/bkfleet/secrets")
        XCTAssertNil(inventory.buildkite)
        XCTAssertTrue(inventory.agents["linux"]?.confinement ?? false)
        XCTAssertEqual(inventory.hosts[0].rebuildCommand, "nixos-rebuild switch")
        XCTAssertEqual(inventory.contentHash, Digest.sha256Hex(minimalInventory))
    }

    func test_ssh_agent_leaves_identity_file_unset() throws {
        let inventory = try loadInventory(minimalInventory + "\n[defaults]\nssh_agent = true\n")
        XCTAssertTrue(inventory.defaults.useAgent)
        XCTAssertNil(inventory.defaults.identityFile)
    }

    func test_relative_paths_resolve_against_the_inventory_folder() throws {
        let text = minimalInventory + """

        [defaults]
        identity_file = "keys/../keys/id_ed25519"
        known_hosts = "./known_hosts"

        [buildkite]
        org = "demo"
        api_token = { file = "/etc/bkfleet/api-token" }
        ca_file = "../ca.pem"
        """
        let inventory = try loadInventory(text, file: "/srv/fleet/prod/inventory.toml")
        XCTAssertEqual(inventory.defaults.identityFile, "/srv/fleet/prod/keys/id_ed25519")
        XCTAssertEqual(inventory.defaults.knownHosts, "/srv/fleet/prod/known_hosts")
        XCTAssertEqual(inventory.buildkite?.caFile, "/srv/fleet/ca.pem")
        XCTAssertEqual(inventory.buildkite?.token, .file(path: "/etc/bkfleet/api-token"))
        XCTAssertEqual(inventory.tokens["default"]?.source,
                       .file(path: "/srv/fleet/prod/default.token"))
    }

    func test_tilde_without_home_is_refused_with_what_to_do() {
        let text = minimalInventory + "\n[defaults]\nknown_hosts = \"~/kh\"\nssh_agent = true\n"
        do {
            _ = try loadInventory(text, environment: [:])
            XCTFail("expected an error")
        } catch {
            XCTAssertEqual("\(error)", "/srv/fleet/inventory.toml:14:15: known_hosts '~/kh' "
                + "needs HOME to expand '~', and HOME is not set; set HOME or write an "
                + "absolute path")
        }
    }

    func test_api_url_loses_trailing_v2_and_slash() throws {
        let text = minimalInventory + """

        [buildkite]
        org = "demo"
        api_url = "https://10.250.0.1/v2/"
        api_token = { env = "BK_API" }
        """
        let inventory = try loadInventory(text)
        XCTAssertEqual(inventory.buildkite?.url, "https://10.250.0.1")
        XCTAssertEqual(inventory.buildkite?.token, .environment(name: "BK_API"))
    }

    func test_unknown_key_in_hosts_gives_line_column_and_did_you_mean() {
        let text = minimalInventory.replacingOccurrences(of: "address =", with: "adress =")
        XCTAssertEqual(inventoryErrors(text), [
            "/srv/fleet/inventory.toml:9:1: [[hosts]] is missing 'address'; add e.g. "
                + "address = \"10.0.0.5\"",
            "/srv/fleet/inventory.toml:11:1: unknown key 'adress' in [[hosts]] "
                + "(did you mean 'address'?); fix the spelling or remove it",
        ])
    }

    func test_unknown_key_without_close_match_lists_valid_keys() {
        let errors = inventoryErrors(minimalInventory + "\n[defaults]\ncolour = \"blue\"\n")
        XCTAssertEqual(errors.count, 1)
        XCTAssertTrue(errors[0].hasPrefix("/srv/fleet/inventory.toml:14:1: unknown key "
            + "'colour' in [defaults]; valid keys: user, port,"), errors[0])
    }

    func test_unknown_top_level_section_suggests_the_right_one() {
        let errors = inventoryErrors(minimalInventory + "\n[agent.web]\ntoken = \"default\"\n")
        XCTAssertEqual(errors, ["/srv/fleet/inventory.toml:13:2: unknown key 'agent' in the "
            + "top level (did you mean 'agents'?); fix the spelling or remove it"])
    }

    func test_setting_above_the_first_header_says_where_it_belongs() {
        let text = "port = 2222\n" + minimalInventory
        XCTAssertEqual(inventoryErrors(text), ["/srv/fleet/inventory.toml:1:1: unknown key "
            + "'port' in the top level (it belongs in [defaults]); fix the spelling or remove it"])
    }

    func test_secret_dir_inside_module_dir_is_refused() {
        let errors = inventoryErrors(minimalInventory
            + "\n[defaults]\nmodule_dir = \"/var/lib/bkfleet\"\n")
        XCTAssertEqual(errors, ["/srv/fleet/inventory.toml:14:14: secret_dir must not be "
            + "inside module_dir: Nix reads the module directory and could copy secrets into "
            + "the store"])
    }

    func test_wrong_type_says_expected_and_found_at_the_value() {
        let text = minimalInventory + "\n[defaults]\nport = \"22\"\nssh_agent = 1\n"
        XCTAssertEqual(inventoryErrors(text), [
            "/srv/fleet/inventory.toml:14:8: 'port' in [defaults]: expected an integer, "
                + "found a string (write e.g. port = 22)",
            "/srv/fleet/inventory.toml:15:13: 'ssh_agent' in [defaults]: expected a boolean "
                + "(true or false), found an integer (write e.g. ssh_agent = true)",
        ])
    }

    func test_missing_version_and_unsupported_version_are_refused() {
        let missing = inventoryErrors(minimalInventory.replacingOccurrences(
            of: "version = 1\n", with: ""))
        XCTAssertEqual(missing, ["/srv/fleet/inventory.toml:1:1: missing 'version'; add "
            + "version = 1 as the first line"])
        let future = inventoryErrors(minimalInventory.replacingOccurrences(
            of: "version = 1", with: "version = 2"))
        XCTAssertEqual(future, ["/srv/fleet/inventory.toml:1:11: unsupported inventory "
            + "version 2; this bkfleet reads version 1"])
    }

    func test_missing_required_keys_point_at_their_table() {
        let text = """
        version = 1
        [buildkite]
        api_url = "https://api.buildkite.com"
        [agents.linux]
        tags = { queue = "x" }
        [[hosts]]
        address = "10.0.0.1"
        """
        XCTAssertEqual(inventoryErrors(text), [
            "/srv/fleet/inventory.toml:2:1: [buildkite] is missing 'org'; add e.g. "
                + "org = \"my-org\"",
            "/srv/fleet/inventory.toml:2:1: [buildkite] is missing 'api_token'; add e.g. "
                + "api_token = { env = \"BUILDKITE_API_TOKEN\" }",
            "/srv/fleet/inventory.toml:4:1: [agents.linux] is missing 'token'; add e.g. "
                + "token = \"default\"",
            "/srv/fleet/inventory.toml:6:1: [[hosts]] is missing 'name'; add e.g. "
                + "name = \"builder-01\"",
            "/srv/fleet/inventory.toml:6:1: [[hosts]] is missing 'agents'; add e.g. "
                + "agents = [\"linux\"] (or [] for none)",
        ])
    }

    func test_host_may_run_no_agents() throws {
        let text = minimalInventory.replacingOccurrences(of: "agents = [\"linux\"]",
                                                         with: "agents = []")
        XCTAssertEqual(try loadInventory(text).hosts[0].agents, [])
    }

    func test_host_listing_unknown_agent_names_it_with_did_you_mean() {
        let text = minimalInventory.replacingOccurrences(of: "agents = [\"linux\"]",
                                                         with: "agents = [\"linx\"]")
        XCTAssertEqual(inventoryErrors(text), [
            "/srv/fleet/inventory.toml:12:11: host 'builder-01' lists agent 'linx', but "
                + "there is no [agents.linx] (did you mean 'linux'?); define it or fix the name",
        ])
    }

    func test_agent_using_unknown_token_or_ssh_key_is_a_dangling_reference() {
        let text = minimalInventory.replacingOccurrences(
            of: "token = \"default\"", with: "token = \"defualt\"\nssh_key = \"deploy\"")
        XCTAssertEqual(inventoryErrors(text), [
            "/srv/fleet/inventory.toml:7:9: agent 'linux' uses token 'defualt', but there "
                + "is no [tokens.defualt] (did you mean 'default'?); define it or fix the name",
            "/srv/fleet/inventory.toml:8:11: agent 'linux' uses ssh_key 'deploy', but there "
                + "is no [ssh_keys.deploy]; define it or fix the name",
        ])
    }

    func test_duplicate_host_names_and_endpoints_are_refused() {
        let text = minimalInventory + """

        [[hosts]]
        name = "builder-01"
        address = "10.250.0.12"
        agents = []

        [[hosts]]
        name = "builder-03"
        address = "10.250.0.11"
        port = 22
        agents = []
        """
        XCTAssertEqual(inventoryErrors(text), [
            "/srv/fleet/inventory.toml:14:8: host name 'builder-01' is already used by the "
                + "host at line 10; host names must be unique",
            "/srv/fleet/inventory.toml:20:11: host 'builder-03' has the same address and "
                + "port (10.250.0.11:22) as the host at line 11; each host needs its own",
        ])
    }

    func test_same_address_on_another_port_is_a_different_host() throws {
        let text = minimalInventory + """

        [[hosts]]
        name = "builder-02"
        address = "10.250.0.11"
        port = 2222
        agents = ["linux"]
        """
        XCTAssertEqual(try loadInventory(text).hosts.map(\.port), [22, 2222])
    }

    func test_all_errors_are_reported_sorted_by_position() {
        let text = """
        version = 1
        [[hosts]]
        name = "a/b"
        address = "10.0.0.1"
        agents = ["ghost"]
        [defaults]
        port = 70000
        parallel = 0
        """
        let errors = inventoryErrors(text)
        XCTAssertEqual(errors.count, 4, "\(errors)")
        XCTAssertEqual(errors.map { $0.split(separator: ":")[1] }, ["3", "5", "7", "8"])
        XCTAssertTrue(errors[2].contains("port 70000 in [defaults] is out of range; use 1 to "
            + "65535"), errors[2])
        XCTAssertTrue(errors[3].contains("parallel must be at least 1"), errors[3])
    }

    func test_hooks_are_limited_to_the_agents_own_hooks() {
        let text = minimalInventory.replacingOccurrences(
            of: "token = \"default\"",
            with: "token = \"default\"\nhooks = { pre-comand = \"true\", environment = \"x\" }")
        XCTAssertEqual(inventoryErrors(text).count, 1)
        XCTAssertTrue(inventoryErrors(text)[0].hasPrefix(
            "/srv/fleet/inventory.toml:8:11: unknown hook 'pre-comand' in "
            + "[agents.linux.hooks] (did you mean 'pre-command'?); the agent runs only: "),
            inventoryErrors(text)[0])
    }

    func test_module_and_secret_dirs_must_be_clean_absolute_and_outside_the_store() {
        let text = minimalInventory + """

        [defaults]
        module_dir = "etc/nixos/bkfleet"
        secret_dir = "/nix/store/secrets"
        """
        XCTAssertEqual(inventoryErrors(text), [
            "/srv/fleet/inventory.toml:14:14: invalid module_dir 'etc/nixos/bkfleet': it must "
                + "be an absolute path",
            "/srv/fleet/inventory.toml:15:14: secret_dir must not be in /nix/store: "
                + "everything there is world-readable; use e.g. /var/lib/bkfleet/secrets",
        ])
        for bad in ["/var/lib/../etc", "/var/lib/bkfleet/", "/var/lib/my secrets",
                    "/var/lib/\"x\"", "/var//lib"] {
            let errors = inventoryErrors(minimalInventory + "\n[defaults]\nsecret_dir = '"
                                         + bad + "'\n")
            XCTAssertEqual(errors.count, 1, bad)
            XCTAssertTrue(errors.first?.contains("invalid secret_dir") ?? false, bad)
        }
    }

    func test_unreadable_inventory_file_names_the_path() {
        XCTAssertThrowsError(try InventoryLoader.load(path: "/nonexistent/inv.toml",
                                                      environment: testEnvironment)) { error in
            XCTAssertTrue("\(error)".hasPrefix("/nonexistent/inv.toml: cannot read the "
                + "inventory"), "\(error)")
        }
    }
}
