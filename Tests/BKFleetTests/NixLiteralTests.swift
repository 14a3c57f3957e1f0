// Nix escaping, proved with the real Nix evaluator: every hostile string must come back
// from `nix-instantiate --eval` exactly as it went in.
import Foundation
import XCTest
@testable import BKFleet

final class NixLiteralTests: XCTestCase {
    static let hostile = [
        "plain",
        "quote \" inside",
        "back\\slash",
        "interpolation ${builtins.currentTime} attempt",
        "dollar-dollar $${x} and lone $",
        "indented '' string ''${x}",
        "new\nline and\ttab and\rreturn",
        "non-ASCII: żółw 🐢 ünïcödé",
        "ends with backslash \\",
        "${",
        "$",
    ]

    func test_every_hostile_string_evaluates_to_itself_in_real_nix() throws {
        let list = NixLiteral.render(.list(Self.hostile.map { .string($0) }))
        let output = try NixEvaluator.evaluateJSON(list)
        let decoded = try JSONDecoder().decode([String].self, from: Data(output.utf8))
        XCTAssertEqual(decoded, Self.hostile)
    }

    func test_attribute_names_that_are_not_identifiers_are_quoted_and_survive() throws {
        let set: NixValue = .attrs([
            "queue": .string("nix"), "with space": .string("a"), "if": .string("kw"),
            "a\"b": .string("q"), "x-y": .string("dash"),
        ])
        let output = try NixEvaluator.evaluateJSON(NixLiteral.render(set))
        let decoded = try JSONDecoder().decode([String: String].self, from: Data(output.utf8))
        XCTAssertEqual(decoded, ["queue": "nix", "with space": "a", "if": "kw",
                                 "a\"b": "q", "x-y": "dash"])
    }

    func test_rendering_is_stable_with_sorted_keys() {
        let value: NixValue = .attrs(["b": .int(2), "a": .bool(true), "c": .null])
        XCTAssertEqual(NixLiteral.render(value), "{ a = true; b = 2; c = null; }")
    }

    func test_packages_render_as_pkgs_attributes() {
        XCTAssertEqual(NixLiteral.render(.list([.package("gnutar"),
                                                .package("python3Packages.pytest")])),
                       "[ pkgs.gnutar pkgs.python3Packages.pytest ]")
    }
}

/// Runs the real Nix evaluator with no store (`dummy://`), as the tests need no daemon.
enum NixEvaluator {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func run(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["nix-instantiate", "--store", "dummy://"] + arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: outData, as: UTF8.self),
                String(decoding: errData, as: UTF8.self))
    }

    static func evaluateJSON(_ expression: String) throws -> String {
        let result = try run(["--eval", "--strict", "--json", "-E", expression])
        guard result.status == 0 else { throw Failure(description: result.err) }
        return result.out
    }

    static func parse(file: String) throws {
        let result = try run(["--parse", file])
        guard result.status == 0 else { throw Failure(description: result.err) }
    }
}
