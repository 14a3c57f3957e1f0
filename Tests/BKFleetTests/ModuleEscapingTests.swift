// Proof that every inventory value that reaches a module stays the same string: tags,
// extra_config, hooks and the display name holding `"`, `\`, `${`, `''`, newlines and
// non-ASCII text go through the loader and renderer, the module parses with
// `nix-instantiate --parse`, and evaluating it gives back the exact inventory strings.
// Also the rendering of `public = true`. Needs nix-instantiate; skips without it.
import Foundation
import XCTest
@testable import BKFleet

final class ModuleEscapingTests: XCTestCase {
    /// Strings that break naive quoting in Nix, shell or TOML.
    static let hostile = [
        "plain",
        "quote \" inside",
        "back\\slash and trailing \\",
        "${builtins.readFile /etc/passwd}",
        "$${x} and \\${y} and $ alone",
        "''${z}'' and '''",
        "non-ASCII: ünïcødé ☃ 𝄞 日本",
        "line one\nline two\n\ttabbed\n",
        "\"; inherit (builtins) abort; x = \"",
    ]

    /// A TOML basic string holding `text` exactly.
    static func toml(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += String(format: "\\u%04X", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    static func singleLine(_ text: String) -> Bool {
        !text.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
    }

    func setUpNix() throws {
        guard (try? NixEvaluator.run(["--version"]))?.status == 0 else {
            throw XCTSkip("nix-instantiate is not installed")
        }
    }

    /// The inventory with every hostile string in every module-bound value it may take
    /// (tags and the display name are single-line by the loader's rules).
    static func hostileInventory(public: Bool = false) throws -> Inventory {
        let singles = hostile.filter(singleLine)
        let tags = singles.enumerated().map { "t\($0.offset) = \(toml($0.element))" }
            .joined(separator: ", ")
        let hookNames = Names.agentHooks
        let hooks = hostile.enumerated().prefix(hookNames.count).map {
            "\(hookNames[$0.offset]) = \(toml($0.element))"
        }.joined(separator: ", ")
        return try loadInventory("""
            version = 1
            [tokens.default]
            file = "default.token"
            [agents.builder]
            token = "default"
            tags = { \(tags) }
            extra_config = \(toml(hostile.joined(separator: "\n")))
            hooks = { \(hooks) }
            name = \(toml(singles.joined(separator: " | ")))
            \(`public` ? "public = true\nallowed_uris = [\"https://example.test/a\", " +
                "\"github:\"]" : "")
            [[hosts]]
            name = "builder-01"
            address = "10.250.0.11"
            agents = ["builder"]
            """)
    }

    func renderedFile(_ inventory: Inventory) throws -> String {
        let renderer = ModuleRenderer(
            templates: try Templates.load(directory: ModuleRendererTests.templatesDir))
        let text = try renderer.render(host: inventory.hosts[0], inventory: inventory)
            .files["builder.nix"]!
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("bkfleet-escape-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("builder.nix").path
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    /// The module evaluated with just enough `config` and `pkgs` to reach its values.
    func evaluate(_ file: String, _ select: String) throws -> Any {
        let expression = """
            let m = import \(file) {
              pkgs = { bash = "bash"; gnutar = "gnutar"; gzip = "gzip"; git = "git";
                       nix = "nix"; buildkite-agent = "agent"; };
              config = {
                services.buildkite-agents.builder = { runtimePackages = [ ]; dataDir = "/d"; };
                environment.etc."ssl/certs/ca-certificates.crt".source = "/ca";
              };
            }; a = m.services.buildkite-agents.builder;
              unit = m.systemd.services.buildkite-agent-builder;
            in \(select)
            """
        let json = try NixEvaluator.evaluateJSON(expression)
        return try JSONSerialization.jsonObject(with: Data(json.utf8),
                                                options: [.fragmentsAllowed])
    }

    func test_the_hostile_inventory_keeps_every_string_through_the_loader() throws {
        let agent = try XCTUnwrap(Self.hostileInventory().agents["builder"])
        XCTAssertEqual(agent.extraConfig, Self.hostile.joined(separator: "\n"))
        XCTAssertEqual(Set(agent.tags.values), Set(Self.hostile.filter(Self.singleLine)))
        XCTAssertEqual(agent.hooks.count, min(Self.hostile.count, Names.agentHooks.count))
    }

    func test_hostile_module_parses_with_the_nix_parser() throws {
        try setUpNix()
        XCTAssertNoThrow(try NixEvaluator.parse(file: renderedFile(Self.hostileInventory())))
        XCTAssertNoThrow(try NixEvaluator.parse(
            file: renderedFile(Self.hostileInventory(public: true))))
    }

    func test_hostile_values_evaluate_to_the_inventory_strings() throws {
        try setUpNix()
        let inventory = try Self.hostileInventory()
        let agent = inventory.agents["builder"]!
        let object = try evaluate(renderedFile(inventory),
                                  "{ inherit (a) tags extraConfig hooks name; }")
        let values = try XCTUnwrap(object as? [String: Any])
        XCTAssertEqual(values["tags"] as? [String: String], agent.tags)
        XCTAssertEqual(values["extraConfig"] as? String, agent.extraConfig)
        XCTAssertEqual(values["hooks"] as? [String: String], agent.hooks)
        XCTAssertEqual(values["name"] as? String, agent.displayName)
    }

    func test_each_hostile_string_alone_round_trips_as_extra_config() throws {
        try setUpNix()
        // One evaluation per string, so a failure names the string that broke.
        for text in Self.hostile {
            var inventory = try Self.hostileInventory()
            inventory.agents["builder"]!.extraConfig = text
            let value = try evaluate(renderedFile(inventory), "a.extraConfig")
            XCTAssertEqual(value as? String, text, "extra_config \(text.debugDescription)")
        }
    }

    func test_multi_line_tags_and_names_are_refused_with_their_position() {
        let errors = inventoryErrors("""
            version = 1
            [tokens.default]
            file = "default.token"
            [agents.builder]
            token = "default"
            tags = { queue = "a\\nb" }
            name = "x\\ny"
            [[hosts]]
            name = "builder-01"
            address = "10.250.0.11"
            agents = ["builder"]
            """)
        XCTAssertEqual(errors.count, 2, errors.joined(separator: "\n"))
        XCTAssertTrue(errors[0].hasPrefix("/srv/fleet/inventory.toml:6:"), errors[0])
        XCTAssertTrue(errors[0].contains("U+000A"), errors[0])
        XCTAssertTrue(errors[1].hasPrefix("/srv/fleet/inventory.toml:7:"), errors[1])
    }

    // MARK: public = true

    func test_public_agent_gets_restricted_eval_in_its_unit_and_the_agent_switches() throws {
        try setUpNix()
        let inventory = try Self.hostileInventory(public: true)
        let file = try renderedFile(inventory)
        let object = try evaluate(file, """
            { nixConfig = unit.environment.NIX_CONFIG; inherit (a) extraConfig; }
            """)
        let values = try XCTUnwrap(object as? [String: Any])
        let nixConfig = try XCTUnwrap(values["nixConfig"] as? String)
        XCTAssertEqual(nixConfig.split(separator: "\n"),
                       ["restrict-eval = true", "allowed-uris = https://example.test/a github:"])
        let extra = try XCTUnwrap(values["extraConfig"] as? String)
        XCTAssertTrue(extra.hasPrefix(inventory.agents["builder"]!.extraConfig + "\n"),
                      "the inventory's own extra_config comes first, unchanged")
        for line in ["no-local-hooks=true", "no-plugins=true", "no-command-eval=true"] {
            XCTAssertTrue(extra.split(separator: "\n").contains(Substring(line)), line)
        }
        // Scoped to the unit: the module sets no host-wide nix settings.
        let text = try String(contentsOfFile: file, encoding: .utf8)
        XCTAssertFalse(text.contains("nix.settings"), text)
        XCTAssertFalse(text.contains("nix.extraOptions"), text)
    }

    func test_agents_without_public_render_as_before() throws {
        let inventory = try Self.hostileInventory()
        let text = try String(contentsOfFile: renderedFile(inventory), encoding: .utf8)
        XCTAssertFalse(text.contains("NIX_CONFIG"))
        XCTAssertFalse(text.contains("no-plugins"))
        XCTAssertFalse(text.contains("@"), "no placeholder left: \(text)")
    }

    func test_public_requires_confinement_and_owns_its_switches() {
        let errors = inventoryErrors("""
            version = 1
            [tokens.default]
            file = "default.token"
            [agents.builder]
            token = "default"
            confinement = false
            public = true
            extra_config = "no-plugins=false"
            [agents.other]
            token = "default"
            allowed_uris = ["https://x.test/"]
            [[hosts]]
            name = "builder-01"
            address = "10.250.0.11"
            agents = ["builder", "other"]
            """)
        XCTAssertEqual(errors.count, 3, errors.joined(separator: "\n"))
        XCTAssertTrue(errors.contains { $0.contains(":7:") && $0.contains("must run confined") },
                      errors.joined(separator: "\n"))
        XCTAssertTrue(errors.contains { $0.contains(":8:") && $0.contains("sets no-plugins") },
                      errors.joined(separator: "\n"))
        XCTAssertTrue(errors.contains { $0.contains(":11:")
            && $0.contains("only applies with public = true") }, errors.joined(separator: "\n"))
    }

    func test_allowed_uris_with_spaces_are_refused() {
        let errors = inventoryErrors("""
            version = 1
            [tokens.default]
            file = "default.token"
            [agents.builder]
            token = "default"
            public = true
            allowed_uris = ["https://a.test/ https://b.test/"]
            [[hosts]]
            name = "builder-01"
            address = "10.250.0.11"
            agents = ["builder"]
            """)
        XCTAssertEqual(errors.count, 1, errors.joined(separator: "\n"))
        XCTAssertTrue(errors[0].contains(":7:") && errors[0].contains("allowed_uris"),
                      errors[0])
    }
}
