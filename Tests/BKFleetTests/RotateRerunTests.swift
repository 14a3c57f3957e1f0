// Rotation decisions that need no host: which agents a rerun restarts (restart pending),
// which agents count as serving a queue (connected ones only), what the closing summary
// says, and which value a later apply pushes for an API-managed token. The fleet tests
// cover the rotation end to end.
import Foundation
import XCTest
@testable import BKFleet

final class RestartPendingPlanTests: XCTestCase {
    let token = SecretValue(bytes: Array("tok-2".utf8))

    private func desired() throws -> DesiredState { try PlannerTests.desired(token: token) }

    /// A converged host whose agent started at `started` and whose token file (already
    /// the new value) last changed at `changed`.
    private func state(_ desired: DesiredState, started: Int, changed: Int) throws
        -> HostState {
        var lines = ["proto\t1", "hostname\tbuilder-01", "now\t300", "keysgroup\tyes",
                     "secretroot\troot\troot\t711",
                     "secretdir\tplain\tbuildkite-agent-plain\tbuildkite-agent-plain\t700",
                     "secret\tplain\ttoken\t\(token.sha256)\tbuildkite-agent-plain\t"
                        + "buildkite-agent-plain\t400",
                     "secretmtime\tplain\ttoken\t\(changed)",
                     "user\tplain\t990",
                     "unit\tplain\tLoadState=loaded", "unit\tplain\tActiveState=active",
                     "unit\tplain\tSubState=running", "unit\tplain\tNRestarts=0",
                     "unit\tplain\tExecMainStartTimestamp=@\(started)"]
        for (name, text) in desired.modules.files {
            lines.append("module\t\(name)\t\(Data(text.utf8).base64EncodedString())")
        }
        return try HostState.parse((lines + ["end"]).joined(separator: "\n"))
    }

    func test_an_agent_started_before_its_token_file_changed_is_restarted_by_a_rerun()
        throws {
        let desired = try desired()
        let stale = try state(desired, started: 100, changed: 200)
        let plan = Planner.plan(desired: desired, state: stale,
                                secretDir: "/var/lib/bkfleet/secrets", restartStale: true)
        XCTAssertTrue(plan.secrets.isEmpty, "the file already holds the new token")
        XCTAssertEqual(plan.units.map(\.agent), ["plain"])
        XCTAssertEqual(plan.units.first?.action, .restart)
        XCTAssertEqual(plan.units.first?.actor, .bkfleet)
        XCTAssertTrue(plan.units.first?.reason.contains("restart pending") == true)
        XCTAssertFalse(plan.needsRebuild)
    }

    func test_an_agent_started_after_its_token_changed_is_left_running() throws {
        let desired = try desired()
        let fresh = try state(desired, started: 200, changed: 200)
        XCTAssertTrue(Planner.plan(desired: desired, state: fresh,
                                   secretDir: "/var/lib/bkfleet/secrets",
                                   restartStale: true).isEmpty)
        // apply keeps its old behaviour: it does not restart on file times.
        let stale = try state(desired, started: 100, changed: 200)
        XCTAssertTrue(Planner.plan(desired: desired, state: stale,
                                   secretDir: "/var/lib/bkfleet/secrets").isEmpty)
    }
}

final class ConnectedQueueTests: XCTestCase {
    private func agent(_ id: String, _ name: String, _ host: String, _ state: String,
                       queue: String) -> BuildkiteAgent {
        BuildkiteAgent(id: id, name: name, hostname: host, connectionState: state,
                       createdAt: Date(timeIntervalSince1970: 0), metaData: ["queue=\(queue)"])
    }

    private let members = [
        QueueMember(host: "b1", agent: "deploy", hostname: "builder-01",
                    name: "builder-01-deploy-1"),
        QueueMember(host: "b2", agent: "deploy", hostname: "builder-02",
                    name: "builder-02-deploy-1"),
    ]

    func test_an_inventory_agent_that_is_not_connected_does_not_serve_its_queue() throws {
        // b2's deploy agent is down (its entry lingers as disconnected).
        let listing = [agent("a1", "builder-01-deploy-1", "builder-01", "connected",
                             queue: "deploy"),
                       agent("a2", "builder-02-deploy-1", "builder-02", "disconnected",
                             queue: "deploy")]
        let servers = RotationBatches.connectedServers(listing: listing, members: members)
        XCTAssertEqual(servers, ["deploy": ["b1/deploy"]])
        let restart = [RestartUnit(host: "b1", agent: "deploy", queue: "deploy")]
        XCTAssertThrowsError(try RotationBatches.plan(hosts: ["b1"], units: restart,
                                                      servers: servers, batchSize: 1,
                                                      allowQueueGap: false)) {
            XCTAssertEqual($0 as? QueueGapError, QueueGapError(queue: "deploy", host: "b1"))
        }
    }

    func test_a_connected_agent_bkfleet_does_not_manage_keeps_the_queue_served() throws {
        let listing = [agent("a1", "builder-01-deploy-1", "BUILDER-01", "connected",
                             queue: "deploy"),
                       agent("x9", "laptop-1", "laptop", "connected", queue: "deploy")]
        let servers = RotationBatches.connectedServers(listing: listing, members: members)
        XCTAssertEqual(servers, ["deploy": ["b1/deploy", "buildkite:x9"]])
        let restart = [RestartUnit(host: "b1", agent: "deploy", queue: "deploy")]
        XCTAssertEqual(try RotationBatches.plan(hosts: ["b1"], units: restart, servers: servers,
                                                batchSize: 1, allowQueueGap: false), [["b1"]])
    }
}

final class RotationSummaryTests: XCTestCase {
    func test_a_finished_rotation_names_the_agents_on_the_new_token_and_the_revocation() {
        let lines = RotationSummary.lines([TokenOutcome(
            name: "default", newFingerprint: "sha256:bbbbbbbbbbbb",
            oldFingerprint: "sha256:aaaaaaaaaaaa",
            agentsByToken: ["sha256:bbbbbbbbbbbb": ["b2/builder", "b1/builder"]],
            fate: .revoked)])
        XCTAssertEqual(lines, [
            "summary:",
            "  token 'default': sha256:aaaaaaaaaaaa → sha256:bbbbbbbbbbbb",
            "    on sha256:bbbbbbbbbbbb: b1/builder, b2/builder",
            "    old token: sha256:aaaaaaaaaaaa revoked",
        ])
    }

    func test_a_kept_old_token_says_why() {
        func fate(_ fate: OldTokenFate) -> String {
            RotationSummary.lines([TokenOutcome(
                name: "ci", newFingerprint: "sha256:new", oldFingerprint: "sha256:old",
                agentsByToken: [:], fate: fate)]).last ?? ""
        }
        XCTAssertTrue(fate(.keptForOutsiders(["b9/builder"])).contains(
            "kept alive: agents outside the selection use it (b9/builder)"))
        XCTAssertTrue(fate(.keptWithoutID).contains("id = \"...\" in [tokens.ci]"))
        XCTAssertTrue(fate(.keptRevokeFailed("HTTP 500")).contains("revoking it failed"))
        XCTAssertTrue(fate(.leftForRerun("1 host(s) failed: b3")).contains(
            "not revoked, left for a rerun: 1 host(s) failed: b3"))
    }
}

final class ApiTokenApplyTests: XCTestCase {
    private var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "bkfleet-apistore-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder,
                                                withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: folder)
    }

    private func inventory() throws -> Inventory {
        try "token-from-the-file".write(toFile: folder + "/default.token", atomically: true,
                                        encoding: .utf8)
        let text = minimalInventory.replacingOccurrences(
            of: "file = \"default.token\"",
            with: "file = \"default.token\"\nid = \"tok-0\"\n"
                + "api = { cluster = \"c-1\", store = \"store.json\" }")
        return try loadInventory(text, file: folder + "/inventory.toml")
    }

    func test_apply_pushes_the_stored_token_not_the_revoked_one_in_the_file() throws {
        let inventory = try inventory()
        let store = TokenStore(location: .file(path: folder + "/store.json"), token: "default")
        try store.write(TokenStoreDocument(
            current: StoredToken(bytes: Array("rotated".utf8), id: "tok-1")))
        let values = try RunSetup.readSecrets(for: inventory.hosts, inventory: inventory)
        XCTAssertEqual(values.tokens["default"]?.bytes, Array("rotated".utf8))
    }

    func test_before_the_first_rotation_apply_uses_the_file() throws {
        let inventory = try inventory()
        let values = try RunSetup.readSecrets(for: inventory.hosts, inventory: inventory)
        XCTAssertEqual(values.tokens["default"]?.bytes, Array("token-from-the-file".utf8))
    }

    func test_a_finished_rotation_leaves_no_temporary_copy_beside_the_store() throws {
        let path = folder + "/store.json"
        // What a write killed before its rename leaves behind.
        try "{\"previous\": \"old\"}".write(toFile: folder + "/.store.json.tmp.AbC123",
                                           atomically: false, encoding: .utf8)
        let store = TokenStore(location: .file(path: path), token: "default")
        try store.write(TokenStoreDocument(current: StoredToken(bytes: [0x61], id: nil)))
        store.removeLeftovers()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder),
                       ["store.json"])
    }
}
