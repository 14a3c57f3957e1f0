// `check --parse`: rendered modules through `nix-instantiate --parse`, errors mapped back
// to the module's path on the host, its agent and the hosts that get it; each distinct
// text parsed once; the private temporary folder removed. The tests that run Nix skip
// where nix-instantiate is not installed; reading its messages needs no Nix.
import Foundation
import XCTest
@testable import BKFleet

final class CheckParseTests: XCTestCase {
    func tool() throws -> String {
        try XCTUnwrap(NixParseCheck.findTool(environment: ProcessInfo.processInfo.environment),
                      "nix-instantiate is not installed")
    }

    func testCheckParseNamesFileLineColumnAgentAndEveryHostGettingTheBrokenModule() throws {
        guard NixParseCheck.findTool(environment: ProcessInfo.processInfo.environment) != nil
        else { throw XCTSkip("nix-instantiate is not installed") }
        let good = "{ ... }:\n{\n  services.x = { enable = true; };\n}\n"
        let broken = "{ ... }:\n{\n  services.x = { enable = true\n}\n"
        let index = "{ imports = [ ./builder.nix ]; }\n"
        let modules = [
            "builder-01": ["builder.nix": broken, "default.nix": index],
            "builder-02": ["builder.nix": broken, "default.nix": index],
            "builder-03": ["builder.nix": good, "default.nix": index],
        ]
        let before = try FileManager.default.contentsOfDirectory(
            atPath: NSTemporaryDirectory()).filter { $0.hasPrefix("bkfleet-parse-") }
        let result = try NixParseCheck.check(modules: modules, moduleDir: "/etc/nixos/bkfleet",
                                             tool: try tool())
        XCTAssertEqual(result.distinctModules, 3, "broken, good and the shared index")
        XCTAssertEqual(result.problems.count, 1)
        let problem = result.problems[0]
        XCTAssertEqual(problem.hosts, ["builder-01", "builder-02"])
        XCTAssertEqual(problem.agent, "builder")
        XCTAssertEqual(problem.path, "/etc/nixos/bkfleet/builder.nix")
        XCTAssertEqual(problem.line, 4)
        XCTAssertNotNil(problem.column)
        XCTAssertTrue(problem.description.hasPrefix("/etc/nixos/bkfleet/builder.nix:4:"),
                      problem.description)
        XCTAssertTrue(problem.description.contains("agent builder on builder-01, builder-02"))
        XCTAssertFalse(problem.description.contains("bkfleet-parse-"),
                       "the temporary path is not shown")
        let after = try FileManager.default.contentsOfDirectory(
            atPath: NSTemporaryDirectory()).filter { $0.hasPrefix("bkfleet-parse-") }
        XCTAssertEqual(Set(after), Set(before), "the temporary folder is removed")
    }

    func testCheckParseAcceptsModulesThatParse() throws {
        guard NixParseCheck.findTool(environment: ProcessInfo.processInfo.environment) != nil
        else { throw XCTSkip("nix-instantiate is not installed") }
        let result = try NixParseCheck.check(
            modules: ["h": ["a.nix": "{ x = 1; }\n", "default.nix": "{ imports = []; }\n"]],
            moduleDir: "/etc/nixos/bkfleet", tool: try tool())
        XCTAssertEqual(result.problems, [])
    }

    func testCheckParseReadsCurrentNixErrorFormat() {
        let output = """
            error: syntax error, unexpected '}', expecting ';'

                   at /tmp/bkfleet-parse-abc/0/builder.nix:12:3:

                       11|   enable = true
                       12| }
                         |   ^
            """
        let found = NixParseCheck.parseErrors(
            output, tempFile: "/tmp/bkfleet-parse-abc/0/builder.nix",
            path: "/etc/nixos/bkfleet/builder.nix")
        XCTAssertEqual(found.count, 1)
        XCTAssertEqual(found.first?.line, 12)
        XCTAssertEqual(found.first?.column, 3)
        XCTAssertEqual(found.first?.message, "syntax error, unexpected '}', expecting ';'")
    }

    func testCheckParseReadsOlderNixErrorFormat() {
        let output = "error: syntax error, unexpected $end, at /tmp/p/0/x.nix:7:1\n"
        let found = NixParseCheck.parseErrors(output, tempFile: "/tmp/p/0/x.nix",
                                              path: "/etc/nixos/bkfleet/x.nix")
        XCTAssertEqual(found.count, 1)
        XCTAssertEqual(found.first?.line, 7)
        XCTAssertEqual(found.first?.column, 1)
        XCTAssertEqual(found.first?.message, "syntax error, unexpected $end")
    }

    func testCheckParseWithoutNixOnPathFindsNoTool() {
        XCTAssertNil(NixParseCheck.findTool(environment: ["PATH": "/nonexistent:/also-not"]))
    }
}
