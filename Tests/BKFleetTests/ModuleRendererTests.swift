// The rendered modules: they parse with the real Nix parser, follow the wiki recipe's
// confinement, carry only paths to secrets, and every hostile inventory value reaches
// the module as the same string.
import Foundation
import XCTest
@testable import BKFleet

final class ModuleRendererTests: XCTestCase {
    static let templatesDir = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("templates").path

    static func inventory(_ extra: String = "") throws -> Inventory {
        try InventoryLoader.load(text: """
            version = 1
            [defaults]
            known_hosts = "known_hosts"
            identity_file = "id_ed25519"
            [tokens.default]
            file = "token"
            [ssh_keys.deploy]
            env = "DEPLOY_KEY"
            [agents.builder]
            token = "default"
            ssh_key = "deploy"
            tags = { queue = "nix", weird = "a \\" b \\\\ c ${x} ''${y}" }
            extra_config = "endpoint=https://agent.buildkite.test/v3\\ndisconnect-after-idle-timeout=0"
            hooks = { environment = "export A=\\"${B}\\"\\n" }
            [agents.plain]
            token = "default"
            confinement = false
            [[hosts]]
            name = "builder-01"
            address = "10.0.0.1"
            agents = ["builder", "plain"]
            \(extra)
            """, path: "/tmp/inventory.toml")
    }

    func render() throws -> RenderedModules {
        let renderer = ModuleRenderer(templates: try Templates.load(directory: Self.templatesDir))
        let inventory = try Self.inventory()
        return try renderer.render(host: inventory.hosts[0], inventory: inventory)
    }

    func test_renders_one_module_per_agent_and_an_index_importing_them() throws {
        let modules = try render()
        XCTAssertEqual(Set(modules.files.keys), ["default.nix", "builder.nix", "plain.nix"])
        XCTAssertTrue(modules.files["default.nix"]!.contains("./builder.nix"))
        XCTAssertTrue(modules.files["default.nix"]!.contains("./plain.nix"))
    }

    func test_every_rendered_file_parses_with_the_nix_parser() throws {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("bkfleet-render-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (name, text) in try render().files {
            let file = dir.appendingPathComponent(name).path
            try text.write(toFile: file, atomically: true, encoding: .utf8)
            XCTAssertNoThrow(try NixEvaluator.parse(file: file), name)
        }
    }

    func test_hostile_tag_and_hook_values_evaluate_to_the_inventory_strings() throws {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("bkfleet-render-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("builder.nix").path
        try render().files["builder.nix"]!.write(toFile: file, atomically: true, encoding: .utf8)
        // Evaluate the module function with just enough of `config` and `pkgs`.
        let expression = """
            let m = import \(file) {
              pkgs = { bash = "bash"; gnutar = "gnutar"; gzip = "gzip"; git = "git";
                       nix = "nix"; buildkite-agent = "agent"; };
              config = {
                services.buildkite-agents.builder = { runtimePackages = [ ]; dataDir = "/d"; };
                environment.etc."ssl/certs/ca-certificates.crt".source = "/ca";
              };
            }; a = m.services.buildkite-agents.builder;
            in { inherit (a) tags extraConfig hooks tokenPath privateSshKeyPath;
                 binds = m.systemd.services.buildkite-agent-builder.serviceConfig.BindReadOnlyPaths; }
            """
        let json = try NixEvaluator.evaluateJSON(expression)
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
        let inventory = try Self.inventory()
        XCTAssertEqual(object["tags"] as? [String: String], inventory.agents["builder"]!.tags)
        XCTAssertEqual(object["extraConfig"] as? String, inventory.agents["builder"]!.extraConfig)
        XCTAssertEqual(object["hooks"] as? [String: String], inventory.agents["builder"]!.hooks)
        XCTAssertEqual(object["tokenPath"] as? String, "/var/lib/bkfleet/secrets/builder/token")
        XCTAssertEqual(object["privateSshKeyPath"] as? String,
                       "/var/lib/bkfleet/secrets/builder/ssh_key")
        let binds = object["binds"] as? [String] ?? []
        XCTAssertTrue(binds.contains("/var/lib/bkfleet/secrets/builder/token"))
        XCTAssertTrue(binds.contains("/var/lib/bkfleet/secrets/builder/ssh_key"))
        XCTAssertTrue(binds.contains("-/etc/hosts"), "confined agents need name resolution")
        XCTAssertTrue(binds.contains("/nix/store"))
    }

    func test_unconfined_agent_gets_no_confinement_block() throws {
        let text = try render().files["plain.nix"]!
        XCTAssertTrue(text.contains("confined = false;"))
        XCTAssertTrue(text.contains("privateSshKeyPath = sshKeyPath;"))
        XCTAssertTrue(text.contains("sshKeyPath = null;"))
    }

    func test_modules_hold_paths_to_secrets_never_nix_path_literals() throws {
        // A Nix path literal (no quotes) would copy the token into the world-readable store.
        for (_, text) in try render().files {
            XCTAssertFalse(text.contains("= /var/lib/bkfleet"), text)
        }
    }

    func test_a_template_placeholder_without_a_value_is_an_error() {
        XCTAssertThrowsError(try Templates.fill("a @missing@ b", name: "t", [:]))
        XCTAssertThrowsError(try Templates.fill("a b", name: "t", ["unused": "x"]))
        XCTAssertEqual(try Templates.fill("a @x@ b", name: "t", ["x": "1"]), "a 1 b")
    }
}
