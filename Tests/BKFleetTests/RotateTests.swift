// Rotation's offline parts: how the inventory declares an API-managed token, the token
// store on disk (mode, atomic replace, previous token kept), and the restart batches
// that keep every queue served. The fleet tests cover the rotation itself.
import XCTest
@testable import BKFleet

final class RotateInventoryTests: XCTestCase {
    private func withToken(_ body: String) -> String {
        minimalInventory.replacingOccurrences(of: "file = \"default.token\"", with: body)
    }

    func test_api_token_with_a_store_file_loads_without_a_source() throws {
        let inventory = try loadInventory(withToken(
            "api = { cluster = \"c-1\", store = \"store/default.json\" }"))
        let token = try XCTUnwrap(inventory.tokens["default"])
        XCTAssertEqual(token.source, .apiStore)
        XCTAssertEqual(token.api, TokenAPI(cluster: "c-1",
                                           store: .file(path: "/srv/fleet/store/default.json")))
        XCTAssertNil(token.apiID)
    }

    func test_api_token_with_store_commands_and_a_starting_source_and_id() throws {
        let inventory = try loadInventory(withToken("""
            file = "default.token"
            id = "tok-1"
            api = { cluster = "c-1", store_read = "pass show bk", store_write = "pass insert bk" }
            """))
        let token = try XCTUnwrap(inventory.tokens["default"])
        XCTAssertEqual(token.source, .file(path: "/srv/fleet/default.token"))
        XCTAssertEqual(token.apiID, "tok-1")
        XCTAssertEqual(token.api?.store, .commands(read: "pass show bk", write: "pass insert bk"))
    }

    func test_api_token_without_a_store_is_refused() {
        let errors = inventoryErrors(withToken("api = { cluster = \"c-1\" }"))
        XCTAssertEqual(errors.count, 1)
        XCTAssertTrue(errors[0].contains("says nowhere to keep the token"), errors[0])
    }
}

final class TokenStoreTests: XCTestCase {
    private var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "bkfleet-store-\(UUID().uuidString)"
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: folder)
    }

    func test_a_missing_store_file_is_an_empty_store() throws {
        let store = TokenStore(location: .file(path: folder + "/t.json"), token: "default")
        XCTAssertEqual(try store.read(), TokenStoreDocument())
    }

    func test_written_store_is_private_and_reads_back_current_and_previous() throws {
        let path = folder + "/sub/t.json"
        let store = TokenStore(location: .file(path: path), token: "default")
        let old = StoredToken(bytes: Array("old-value".utf8), id: nil)
        let new = StoredToken(bytes: Array("new-value".utf8), id: "id-2")
        try store.write(TokenStoreDocument(current: new, previous: old))
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions]
        XCTAssertEqual((mode as? NSNumber)?.intValue, 0o600)
        XCTAssertEqual(try store.read(), TokenStoreDocument(current: new, previous: old))

        // Finishing drops the previous value from disk entirely.
        try store.write(TokenStoreDocument(current: new, previous: nil))
        let text = try String(contentsOfFile: path, encoding: .utf8)
        XCTAssertFalse(text.contains("old-value"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder + "/sub"),
                       ["t.json"], "no temporary file left beside the store")
    }

    func test_store_commands_get_the_document_on_stdin_and_print_it_back() throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let file = folder + "/kept"
        let store = TokenStore(location: .commands(read: "cat \(file) 2>/dev/null || true",
                                                   write: "cat > \(file)"), token: "default")
        XCTAssertEqual(try store.read(), TokenStoreDocument())
        let new = StoredToken(bytes: Array("v2".utf8), id: "id-2")
        try store.write(TokenStoreDocument(current: new))
        XCTAssertEqual(try store.read().current, new)
    }

    func test_a_store_holding_something_else_is_an_error_not_an_empty_store() throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let path = folder + "/t.json"
        try "bkct_plain_token".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try TokenStore(location: .file(path: path), token: "d").read()) {
            XCTAssertFalse("\($0)".contains("bkct_plain_token"))
        }
    }
}

final class RotationBatchTests: XCTestCase {
    private func units(_ spec: [(String, String, String)]) -> [RestartUnit] {
        spec.map { RestartUnit(host: $0.0, agent: $0.1, queue: $0.2) }
    }

    func test_batch_of_two_never_takes_every_agent_of_a_queue() throws {
        // Queue "deploy" is served only by b1 and b2: they must not share a batch.
        let restart = units([("b1", "builder", "nix"), ("b1", "deploy", "deploy"),
                             ("b2", "builder", "nix"), ("b2", "deploy", "deploy"),
                             ("b3", "builder", "nix")])
        let servers: [String: Set<String>] = [
            "nix": ["b1/builder", "b2/builder", "b3/builder"],
            "deploy": ["b1/deploy", "b2/deploy"]]
        let batches = try RotationBatches.plan(hosts: ["b1", "b2", "b3"], units: restart,
                                               servers: servers, batchSize: 2,
                                               allowQueueGap: false)
        XCTAssertEqual(batches, [["b1", "b3"], ["b2"]])
    }

    func test_without_batch_size_everything_but_one_server_per_queue_goes_first() throws {
        let restart = units([("b1", "builder", "nix"), ("b2", "builder", "nix"),
                             ("b3", "builder", "nix")])
        let servers: [String: Set<String>] = ["nix": ["b1/builder", "b2/builder", "b3/builder"]]
        XCTAssertEqual(try RotationBatches.plan(hosts: ["b1", "b2", "b3"], units: restart,
                                                servers: servers, batchSize: nil,
                                                allowQueueGap: false),
                       [["b1", "b2"], ["b3"]])
        XCTAssertEqual(try RotationBatches.plan(hosts: ["b1", "b2", "b3"], units: restart,
                                                servers: servers, batchSize: nil,
                                                allowQueueGap: true),
                       [["b1", "b2"], ["b3"]], "allowing a gap never empties a queue needlessly")
    }

    func test_an_allowed_unavoidable_gap_does_not_empty_other_queues() throws {
        // deploy runs on b2 alone (unavoidable gap); nix has an agent on every host.
        let restart = units([("b1", "builder", "nix"), ("b2", "builder", "nix"),
                             ("b2", "deploy", "deploy"), ("b3", "builder", "nix")])
        let servers: [String: Set<String>] = ["nix": ["b1/builder", "b2/builder", "b3/builder"],
                                              "deploy": ["b2/deploy"]]
        XCTAssertThrowsError(try RotationBatches.plan(hosts: ["b1", "b2", "b3"], units: restart,
                                                      servers: servers, batchSize: nil,
                                                      allowQueueGap: false))
        XCTAssertEqual(try RotationBatches.plan(hosts: ["b1", "b2", "b3"], units: restart,
                                                servers: servers, batchSize: nil,
                                                allowQueueGap: true),
                       [["b1", "b2"], ["b3"]])
    }

    func test_an_agent_outside_the_rotation_keeps_its_queue_served() throws {
        let restart = units([("b1", "builder", "nix")])
        let servers: [String: Set<String>] = ["nix": ["b1/builder", "b9/builder"]]
        XCTAssertEqual(try RotationBatches.plan(hosts: ["b1"], units: restart, servers: servers,
                                                batchSize: 1, allowQueueGap: false), [["b1"]])
    }

    func test_a_queue_served_by_one_host_only_is_refused_unless_a_gap_is_allowed() throws {
        let restart = units([("b1", "deploy", "deploy"), ("b2", "builder", "nix")])
        let servers: [String: Set<String>] = ["deploy": ["b1/deploy"],
                                              "nix": ["b2/builder", "b3/builder"]]
        XCTAssertThrowsError(try RotationBatches.plan(hosts: ["b1", "b2"], units: restart,
                                                      servers: servers, batchSize: 1,
                                                      allowQueueGap: false)) {
            XCTAssertEqual($0 as? QueueGapError, QueueGapError(queue: "deploy", host: "b1"))
        }
        XCTAssertEqual(try RotationBatches.plan(hosts: ["b1", "b2"], units: restart,
                                                servers: servers, batchSize: 1,
                                                allowQueueGap: true), [["b1"], ["b2"]])
    }
}
