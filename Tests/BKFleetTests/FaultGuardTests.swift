// Guards against faults and hostile build jobs, checked without the fleet: the reserved
// agent name `default`, the push script never re-owning or writing through a link a build
// job planted, and the restore script preferring an unfinished earlier run's backup (the
// last verified state) over the rerun's own. Scripts run under the local /bin/sh.
import Foundation
import XCTest
@testable import BKFleet

final class FaultGuardTests: XCTestCase {
    var root = ""
    var modules: String { root + "/modules" }
    var secrets: String { root + "/secrets" }
    let fm = FileManager.default

    override func setUpWithError() throws {
        root = fm.temporaryDirectory.appendingPathComponent("bkfleet-guard-\(UUID().uuidString)")
            .path
        try fm.createDirectory(atPath: secrets + "/a", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: secrets + "/b", withIntermediateDirectories: true)
    }

    override func tearDown() { try? fm.removeItem(atPath: root) }

    func sh(_ script: String, _ arguments: [String], stdin: [UInt8] = []) throws
        -> (Int32, String) {
        let result = try runScript(script, arguments, stdin: stdin)
        return (result.status, result.all)
    }

    func mode(_ path: String) throws -> Int {
        (try fm.attributesOfItem(atPath: path)[.posixPermissions] as! NSNumber).intValue
    }

    // MARK: - Names

    func test_an_agent_named_default_is_refused_with_its_position() {
        let text = minimalInventory
            .replacingOccurrences(of: "[agents.linux]", with: "[agents.default]")
            .replacingOccurrences(of: "agents = [\"linux\"]", with: "agents = []")
        let errors = inventoryErrors(text)
        XCTAssertEqual(errors.count, 1, "\(errors)")
        XCTAssertTrue(errors.first?.hasPrefix("/srv/fleet/inventory.toml:6:9: invalid agent "
                                              + "name 'default': it is reserved") == true,
                      "\(errors)")
    }

    func test_a_host_listing_the_reserved_agent_is_told_to_rename_it_not_to_define_it() {
        let text = minimalInventory
            .replacingOccurrences(of: "[agents.linux]", with: "[agents.default]")
            .replacingOccurrences(of: "agents = [\"linux\"]", with: "agents = [\"default\"]")
        let errors = inventoryErrors(text)
        XCTAssertEqual(errors.count, 2, "\(errors)")
        let listing = errors.first { $0.contains("host 'builder-01' lists agent") } ?? ""
        XCTAssertTrue(listing.contains("it is reserved"), "\(errors)")
        XCTAssertTrue(listing.contains("rename it here and in its [agents.default] table"),
                      "\(errors)")
        XCTAssertFalse(listing.contains("there is no [agents.default]"), "\(errors)")
        XCTAssertFalse(listing.contains("define it"), "\(errors)")
    }

    // MARK: - Secrets on a remote command line or in the run log

    func test_a_token_in_rebuild_command_is_refused_naming_host_and_key_not_value() throws {
        let token = "bkct_0123456789abcdef0123456789abcdef"
        let inventory = try loadInventory(minimalInventory.replacingOccurrences(
            of: "agents = [\"linux\"]",
            with: "agents = [\"linux\"]\nrebuild_command = \"env T=\(token) nixos-rebuild "
                + "switch\""))
        var secrets = SecretValues()
        secrets.tokens["default"] = SecretValue(bytes: Array(token.utf8))
        let found = BoundSecretCheck.problems(hosts: inventory.hosts, inventory: inventory,
                                              known: BoundSecretCheck.known(secrets))
        XCTAssertEqual(found.count, 1, "\(found)")
        XCTAssertTrue(found.first?.contains("rebuild_command holds the value of") == true,
                      "\(found)")
        XCTAssertFalse(found.joined().contains(token))
    }

    func test_the_host_log_writes_a_secret_as_its_fingerprint() throws {
        let secret = "bkct_fedcba9876543210fedcba9876543210"
        var log = HostLog(directory: root + "/logs", host: "h1",
                          scrub: { $0.replacingOccurrences(of: secret, with: "[secret]") })
        log.write("rebuild said \(secret)")
        let text = String(decoding: fm.contents(atPath: root + "/logs/h1.log") ?? Data(),
                          as: UTF8.self)
        XCTAssertTrue(text.contains("rebuild said [secret]"), text)
        XCTAssertFalse(text.contains(secret))
    }

    // MARK: - Status

    func test_status_of_a_host_with_an_unfinished_switch_or_temp_file_is_not_as_wanted() {
        var status = HostStatus(host: "b1", address: "10.250.0.11", reachable: true,
                                indexUpToDate: true, lastApply: [:], agents: [])
        XCTAssertTrue(status.ok)
        status.switchPending = true
        XCTAssertFalse(status.ok)
        XCTAssertTrue(StatusTable.notes(status).contains {
            $0.contains("an earlier switch did not finish") && $0.contains("bkfleet apply")
        }, "\(StatusTable.notes(status))")
        status.switchPending = false
        status.tempFiles = ["/var/lib/bkfleet/secrets/a/.token.bkfleet-tmp.x1"]
        XCTAssertFalse(status.ok)
        XCTAssertTrue(StatusTable.notes(status).contains { $0.contains(".token.bkfleet-tmp.x1") })
    }

    func test_status_json_of_an_unread_agent_has_every_field_with_unknowns_null() throws {
        var agent = AgentStatus(
            agent: "a", inInventory: true, moduleUpToDate: false, tokenOnHost: nil,
            tokenWanted: "sha256:000000000000", tokenOwner: nil, tokenMode: nil,
            ownershipWanted: nil, ownershipOK: false, unit: "unknown", running: false,
            confined: nil, registered: nil, registration: "not checked", connected: nil,
            restartPending: false)
        agent.readFromHost = false
        let object = try JSONSerialization.jsonObject(
            with: JSONEncoder().encode(agent)) as? [String: Any] ?? [:]
        for key in ["ssh_key_on_host", "ssh_key_wanted", "running", "unit",
                    "module_up_to_date", "ownership_ok", "restart_pending"] {
            XCTAssertTrue(object[key] is NSNull, "\(key): \(String(describing: object[key]))")
        }
        XCTAssertEqual(object["token_wanted"] as? String, "sha256:000000000000")
    }

    // MARK: - rebuild_timeout

    func test_a_wait_slice_never_outlasts_the_rebuild_timeout_left() {
        XCTAssertEqual(HostRun.waitSlice(20, left: 3), 3)
        XCTAssertEqual(HostRun.waitSlice(20, left: 0.2), 1)
        XCTAssertEqual(HostRun.waitSlice(20, left: 600), 20)
    }

    // MARK: - Links planted in a secret folder

    func test_ownership_repair_never_follows_a_link_to_another_agents_token() throws {
        let target = secrets + "/b/token"
        _ = fm.createFile(atPath: target, contents: Data("tok".utf8),
                      attributes: [.posixPermissions: 0o400])
        try fm.createSymbolicLink(atPath: secrets + "/a/token", withDestinationPath: target)
        var batch = PushBatch()
        batch.own(secrets + "/a/token", FileOwnership(owner: "root", group: "root", mode: "644"))
        let (status, output) = try sh(RemoteScripts.push, [modules, secrets],
                                      stdin: batch.payload())
        XCTAssertNotEqual(status, 0, output)
        XCTAssertTrue(output.contains("not a regular file"), output)
        XCTAssertEqual(try mode(target), 0o400, "the link's target was chmodded")
    }

    func test_a_secret_written_over_a_link_or_folder_becomes_a_regular_file() throws {
        let target = secrets + "/b/token"
        _ = fm.createFile(atPath: target, contents: Data("other".utf8),
                      attributes: [.posixPermissions: 0o400])
        try fm.createSymbolicLink(atPath: secrets + "/a/token", withDestinationPath: target)
        try fm.createDirectory(atPath: secrets + "/a/ssh_key/inner",
                               withIntermediateDirectories: true)
        var batch = PushBatch()
        let owner = FileOwnership(owner: "root", group: "root", mode: "400")
        batch.write(secrets + "/a/token", owner, Array("new".utf8))
        batch.write(secrets + "/a/ssh_key", owner, Array("key".utf8))
        let (status, output) = try sh(RemoteScripts.push, [modules, secrets],
                                      stdin: batch.payload())
        XCTAssertEqual(status, 0, output)
        for path in [secrets + "/a/token", secrets + "/a/ssh_key"] {
            let type = try fm.attributesOfItem(atPath: path)[.type] as? FileAttributeType
            XCTAssertEqual(type, .typeRegular, path)
        }
        XCTAssertEqual(fm.contents(atPath: secrets + "/a/token"), Data("new".utf8))
        XCTAssertEqual(fm.contents(atPath: target), Data("other".utf8))
    }

    // MARK: - Restore after an unfinished earlier run

    func test_restore_puts_back_the_unfinished_earlier_runs_backup_not_the_reruns()
        throws {
        let token = secrets + "/a/token"
        let backups = root + "/backup"
        _ = fm.createFile(atPath: token, contents: Data("good".utf8))
        // The killed run replaced the verified token (its backup holds the good one).
        let killed = backups + "/20260101T000000Z-1"
        var batch = PushBatch()
        let owner = FileOwnership(owner: "root", group: "root", mode: "400")
        batch.write(token, owner, Array("bad".utf8))
        var (status, output) = try sh(RemoteScripts.push, [modules, secrets, killed],
                                      stdin: batch.payload())
        XCTAssertEqual(status, 0, output)
        // The rerun writes the same bad token and must not remove the killed run's backup.
        let rerun = backups + "/20260101T000100Z-2"
        (status, output) = try sh(RemoteScripts.push, [modules, secrets, rerun],
                                  stdin: batch.payload())
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(fm.fileExists(atPath: killed + "/files" + token),
                      "the rerun removed the unfinished run's backup")
        (status, output) = try sh(RemoteScripts.restore, [rerun])
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("earlier 1"), output)
        XCTAssertEqual(fm.contents(atPath: token), Data("good".utf8))
    }
}
