// Test equipment for the tests that run bkfleet against the local test fleet
// (Tests/Fleet/fleet): runs the real bkfleet binary, looks inside hosts with
// `fleet exec`, writes inventories that point at the fleet's client files, and resets
// hosts to fresh between scenarios. The product never uses any of this.
import Foundation
import XCTest

struct CommandResult {
    var status: Int32
    var out: String
    var err: String
    var all: String { out + err }
}

/// Holds what a reader thread collected; read only after the thread is done.
final class DataBox: @unchecked Sendable {
    var data = Data()
}

enum FleetHarness {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
    static let clientDir = repo + "/.fleet"
    static let fleetScript = repo + "/Tests/Fleet/fleet"

    /// The bkfleet binary under test: $BKFLEET_BIN, else the debug build in the repo.
    static var binary: String {
        ProcessInfo.processInfo.environment["BKFLEET_BIN"] ?? repo + "/.build/debug/bkfleet"
    }

    /// Fleet tests run when the fleet is up. The test runner (Tests/run) sets
    /// BKFLEET_REQUIRE_FLEET=1, so there a missing fleet fails instead of skipping.
    static func requireFleet() throws {
        let up = FileManager.default.fileExists(atPath: clientDir + "/hosts.json")
        if !up {
            if ProcessInfo.processInfo.environment["BKFLEET_REQUIRE_FLEET"] == "1" {
                XCTFail("the test fleet is not up (run Tests/Fleet/fleet up 3)")
            }
            throw XCTSkip("test fleet not up; Tests/run brings it up")
        }
    }

    @discardableResult
    static func run(_ executable: String, _ arguments: [String], stdin: String? = nil,
                    environment: [String: String] = [:], directory: String? = nil)
        -> CommandResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["NO_COLOR"] = "1"
        for (key, value) in environment { env[key] = value }
        process.environment = env
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let out = Pipe(), err = Pipe(), input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        do { try process.run() } catch {
            return CommandResult(status: -1, out: "", err: "cannot run \(executable): \(error)")
        }
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try? input.fileHandleForWriting.close()
        // Read both pipes at once so neither fills up and blocks the child.
        let errBox = DataBox()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errBox.data = err.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        let errData = errBox.data
        process.waitUntilExit()
        return CommandResult(status: process.terminationStatus,
                             out: String(decoding: outData, as: UTF8.self),
                             err: String(decoding: errData, as: UTF8.self))
    }

    static func bkfleet(_ arguments: [String], environment: [String: String] = [:])
        -> CommandResult {
        run(binary, arguments, environment: environment)
    }

    /// Runs a shell command inside a host, as root.
    @discardableResult
    static func exec(_ host: String, _ script: String) -> CommandResult {
        run(fleetScript, ["exec", host, "/bin/sh", "-c", script])
    }

    /// Puts hosts back to how `fleet up` left them: no bkfleet modules, secrets, agent
    /// units, agent users or generations.
    static func reset(_ hosts: [String]) {
        for host in hosts {
            let result = run(fleetScript, ["reset", host])
            XCTAssertEqual(result.status, 0, "fleet reset \(host): \(result.all)")
        }
    }

    /// Writes an inventory into a fresh temporary folder, with `@FLEET@` replaced by the
    /// fleet's client folder, and returns its path.
    static func inventory(_ text: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("bkfleet-fleettest-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("inventory.toml").path
        try text.replacingOccurrences(of: "@FLEET@", with: clientDir)
            .write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func read(_ path: String) -> String {
        (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    }

    /// A value that must never show up anywhere but the secret files themselves.
    static func tokenValue(_ name: String = "default") -> String {
        read(clientDir + "/tokens/\(name).token").trimmingCharacters(in: .newlines)
    }

    /// A token file the Buildkite stand-in does not know.
    static func badTokenFile() throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("bkfleet-badtoken-\(UUID().uuidString)").path
        try "bkct_not-a-known-token-\(UUID().uuidString)\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// The standard three-host inventory: `builder` on every host, `deploy` on builder-01.
    static func standardInventory(agentsExtra: String = "", hostsOverride: String? = nil)
        -> String {
        """
        version = 1
        [defaults]
        user = "root"
        identity_file = "@FLEET@/id_ed25519"
        known_hosts = "@FLEET@/known_hosts"
        verify_timeout = 45
        [buildkite]
        org = "demo"
        api_url = "https://10.250.0.1"
        ca_file = "@FLEET@/ca.pem"
        api_token = { file = "@FLEET@/api-token" }
        [tokens.default]
        file = "@FLEET@/tokens/default.token"
        [ssh_keys.deploy]
        file = "@FLEET@/id_ed25519"
        [agents.builder]
        token = "default"
        ssh_key = "deploy"
        tags = { queue = "nix" }
        extra_config = "endpoint=https://agent.buildkite.test/v3"
        [agents.deploy]
        token = "default"
        tags = { queue = "deploy" }
        extra_config = "endpoint=https://agent.buildkite.test/v3"
        \(agentsExtra)
        \(hostsOverride ?? """
        [[hosts]]
        name = "builder-01"
        address = "10.250.0.11"
        agents = ["builder", "deploy"]
        [[hosts]]
        name = "builder-02"
        address = "10.250.0.12"
        agents = ["builder"]
        [[hosts]]
        name = "builder-03"
        address = "10.250.0.13"
        agents = ["builder"]
        """)
        """
    }
}
