// Shell completion as a user meets it: the bash script loads, completes commands, each
// command's options and host names from the inventory (through `bkfleet hosts`). Uses the
// bkfleet binary built beside the tests; zsh and fish are not installed here, so their
// scripts are checked for the same commands and options only.
import Foundation
import XCTest
@testable import BKFleet

final class CompletionScriptTests: XCTestCase {
    /// The bkfleet executable SwiftPM built next to this test bundle.
    func binaryFolder() throws -> String {
        let candidates = [Bundle.main.bundlePath,
                          (Bundle.main.bundlePath as NSString).deletingLastPathComponent,
                          (CommandLine.arguments[0] as NSString).deletingLastPathComponent]
        let found = candidates.first {
            FileManager.default.isExecutableFile(atPath: "\($0)/bkfleet")
        }
        return try XCTUnwrap(found, "no bkfleet binary beside the tests in \(candidates)")
    }

    /// Runs `script` in bash with the built bkfleet first on PATH; returns stdout.
    func bash(_ script: String, in folder: String? = nil) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", script]
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = try binaryFolder() + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
        process.environment = environment
        if let folder { process.currentDirectoryURL = URL(fileURLWithPath: folder) }
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Asks the loaded completion function what it offers for `words` (last one partial).
    func complete(_ words: [String], in folder: String? = nil) throws -> [String] {
        let quoted = words.map { "'\($0)'" }.joined(separator: " ")
        let (status, out) = try bash("""
            source <(bkfleet completion bash) || exit 9
            COMP_WORDS=(\(quoted)); COMP_CWORD=\(words.count - 1)
            _bkfleet
            printf '%s\\n' "${COMPREPLY[@]}"
            """, in: folder)
        XCTAssertEqual(status, 0)
        return out.split(separator: "\n").map(String.init)
    }

    func testBashCompletionLoadsAndRegistersForBkfleet() throws {
        let (status, out) = try bash("source <(bkfleet completion bash); complete -p bkfleet")
        XCTAssertEqual(status, 0)
        XCTAssertTrue(out.contains("-F _bkfleet bkfleet"), out)
    }

    func testBashCompletesACommandFromItsPrefix() throws {
        XCTAssertEqual(try complete(["bkfleet", "ap"]), ["apply"])
        XCTAssertEqual(try complete(["bkfleet", "co"]), ["completion"])
    }

    func testBashCompletesTheOptionsOfTheCommandGiven() throws {
        XCTAssertEqual(try complete(["bkfleet", "plan", "--det"]), ["--detailed-exitcode"])
        XCTAssertEqual(try complete(["bkfleet", "check", "--pa"]), ["--parse"])
        // apply has no --detailed-exitcode to offer.
        XCTAssertEqual(try complete(["bkfleet", "apply", "--det"]), [])
    }

    func testBashCompletesHostNamesFromTheInventoryNamedOnTheLine() throws {
        let folder = NSTemporaryDirectory() + "bkfleet-completion-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder,
                                                withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try """
            version = 1

            [tokens.default]
            file = "default.token"

            [agents.builder]
            token = "default"

            [[hosts]]
            name = "alpha-1"
            address = "10.0.0.1"
            agents = ["builder"]

            [[hosts]]
            name = "alpha-2"
            address = "10.0.0.2"
            agents = ["builder"]

            [[hosts]]
            name = "beta-1"
            address = "10.0.0.3"
            agents = ["builder"]
            """.write(toFile: folder + "/fleet.toml", atomically: true, encoding: .utf8)
        let (status, names) = try bash("bkfleet hosts fleet.toml", in: folder)
        XCTAssertEqual(status, 0, "the test inventory should load")
        XCTAssertEqual(names, "alpha-1\nalpha-2\nbeta-1\n")
        XCTAssertEqual(try complete(["bkfleet", "render", "fleet.toml", "--host", "al"],
                                    in: folder), ["alpha-1", "alpha-2"])
        XCTAssertEqual(try complete(["bkfleet", "apply", "--on", "b"], in: folder), [],
                       "no inventory.toml in the folder: nothing to offer")
    }

    func testZshAndFishScriptsOfferTheSameCommandsAndOptions() throws {
        let zsh = try XCTUnwrap(ShellCompletion.script(for: "zsh"))
        let fish = try XCTUnwrap(ShellCompletion.script(for: "fish"))
        for command in ShellCompletion.commands {
            XCTAssertTrue(zsh.contains("'\(command.name):"), command.name)
            XCTAssertTrue(fish.contains("-a \(command.name) "), command.name)
            for option in command.options {
                XCTAssertTrue(zsh.contains("'--\(option.name)"), option.name)
                XCTAssertTrue(fish.contains(
                    "__fish_seen_subcommand_from \(command.name)' -l \(option.name)"),
                    option.name)
            }
        }
        XCTAssertNil(ShellCompletion.script(for: "tcsh"))
    }
}
