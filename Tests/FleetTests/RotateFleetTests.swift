// `bkfleet rotate` end to end on the test fleet and its Buildkite stand-in: an
// API-managed token is replaced on every agent in queue-safe batches and the old one
// revoked; a host whose agent cannot start on the new token is put back on the old one,
// nothing is revoked, and a rerun after the fix finishes the rotation.
import Foundation
import XCTest

final class RotateFleetTests: XCTestCase {
    let hosts = ["builder-01", "builder-02", "builder-03"]
    /// Agent names as the stand-in sees them, and their queue.
    let queues = ["builder-01-builder-1": "nix", "builder-02-builder-1": "nix",
                  "builder-03-builder-1": "nix", "builder-01-deploy-1": "deploy",
                  "builder-02-deploy-1": "deploy"]

    override func setUpWithError() throws {
        try FleetHarness.requireFleet()
        continueAfterFailure = true
        // API-made tokens from earlier runs go; the setup tokens are valid again.
        _ = standin("POST", "/_test/reset", body: "{}")
        FleetHarness.reset(hosts)
    }

    override func tearDown() {
        _ = standin("POST", "/_test/reset", body: "{}")
    }

    // MARK: Helpers

    /// A request to the stand-in, trusting the fleet's CA; the JSON answer.
    func standin(_ method: String, _ path: String, body: String? = nil,
                 header: String? = nil) -> Any? {
        var arguments = ["-sS", "--cacert", FleetHarness.clientDir + "/ca.pem", "-X", method,
                         "https://10.250.0.1" + path, "-w", "\n%{http_code}"]
        if let body { arguments += ["-H", "Content-Type: application/json", "-d", body] }
        // A header holding a token travels on stdin, not argv.
        if header != nil { arguments += ["-H", "@/dev/stdin"] }
        let result = FleetHarness.run("/usr/bin/curl", arguments, stdin: header)
        var lines = result.out.split(separator: "\n", omittingEmptySubsequences: false)
        lastStatus = Int(lines.popLast() ?? "") ?? 0
        return try? JSONSerialization.jsonObject(with: Data(lines.joined(separator: "\n").utf8))
    }
    var lastStatus = 0

    func tokens() -> [[String: Any]] {
        (standin("GET", "/_test/tokens") as? [String: Any])?["tokens"] as? [[String: Any]]
            ?? standin("GET", "/_test/tokens") as? [[String: Any]] ?? []
    }

    func token(fingerprint: String) -> [String: Any]? {
        tokens().first { $0["fingerprint"] as? String == fingerprint }
    }

    /// The newest record of each agent name.
    func agents() -> [String: [String: Any]] {
        let all = (standin("GET", "/_test/agents") as? [String: Any])?["agents"]
            as? [[String: Any]] ?? standin("GET", "/_test/agents") as? [[String: Any]] ?? []
        var newest: [String: [String: Any]] = [:]
        for agent in all {
            guard let name = agent["name"] as? String else { continue }
            let created = agent["created_at"] as? String ?? ""
            if created >= (newest[name]?["created_at"] as? String ?? "") { newest[name] = agent }
        }
        return newest
    }

    func fingerprint(_ text: String) -> String {
        let result = FleetHarness.run("/usr/bin/sha256sum", [], stdin: text)
        return "sha256:" + result.out.prefix(12)
    }

    func inventory(store: String = "store/default.json") throws -> String {
        let text = FleetHarness.standardInventory(hostsOverride: """
            [[hosts]]
            name = "builder-01"
            address = "10.250.0.11"
            agents = ["builder", "deploy"]
            [[hosts]]
            name = "builder-02"
            address = "10.250.0.12"
            agents = ["builder", "deploy"]
            [[hosts]]
            name = "builder-03"
            address = "10.250.0.13"
            agents = ["builder"]
            """)
        let secondID = token(fingerprint: fingerprint(FleetHarness.tokenValue("second")))?["id"]
            as? String ?? "unknown"
        let managed = text.replacingOccurrences(
            of: "[tokens.default]\nfile = \"@FLEET@/tokens/default.token\"",
            with: """
                [tokens.default]
                file = "@FLEET@/tokens/second.token"
                id = "\(secondID)"
                api = { cluster = "default", store = "\(store)" }
                """)
        XCTAssertNotEqual(managed, text, "inventory template changed; update this test")
        return try FleetHarness.inventory(managed)
    }

    /// Writes the token store an unfinished rotation leaves: `current` (the new token)
    /// beside `previous` (the one the agents ran), readable by its owner only; returns
    /// the store's path.
    @discardableResult
    func writeUnfinishedStore(_ inventory: String, current: (value: String, id: String),
                              previous: (value: String, id: String)) throws -> String {
        let storePath = (inventory as NSString).deletingLastPathComponent
            + "/store/default.json"
        try FileManager.default.createDirectory(
            atPath: (storePath as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true)
        let document: [String: Any] = [
            "format": "bkfleet-token-store-1",
            "current": ["value": current.value, "id": current.id],
            "previous": ["value": previous.value, "id": previous.id]]
        try JSONSerialization.data(withJSONObject: document)
            .write(to: URL(fileURLWithPath: storePath))
        chmod(storePath, 0o600)
        return storePath
    }

    func storeDocument(_ inventory: String) -> [String: Any] {
        let path = (inventory as NSString).deletingLastPathComponent + "/store/default.json"
        let data = FileManager.default.contents(atPath: path) ?? Data()
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
    }

    func current(_ document: [String: Any], _ key: String = "current") -> (String, String)? {
        guard let entry = document[key] as? [String: Any], let value = entry["value"] as? String,
              let id = entry["id"] as? String else { return nil }
        return (value, id)
    }

    /// Creates a cluster token through the stand-in's API, as a rotation would.
    func createToken(_ description: String) throws -> (value: String, id: String) {
        let bearer = FleetHarness.read(FleetHarness.clientDir + "/api-token")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let created = standin("POST", "/v2/organizations/demo/clusters/default/tokens",
                              body: #"{"description": "\#(description)"}"#,
                              header: "Authorization: Bearer \(bearer)") as? [String: Any]
        let value = try XCTUnwrap(created?["token"] as? String, "\(lastStatus)")
        let id = try XCTUnwrap(created?["id"] as? String)
        return (value, id)
    }

    /// Runs a shell script in a host with `input` on its standard input (values stay
    /// out of argv).
    @discardableResult
    func execWithInput(_ host: String, _ script: String, input: String) -> CommandResult {
        FleetHarness.run(FleetHarness.fleetScript, ["exec", host, "/bin/sh", "-c", script],
                         stdin: input)
    }

    func sha256(_ text: String) -> String {
        String(FleetHarness.run("/usr/bin/sha256sum", [], stdin: text).out.prefix(64))
    }

    // MARK: Scenarios

    func test_rotation_through_the_api_moves_every_agent_and_revokes_the_old_token() throws {
        let inventory = try inventory()
        let old = FleetHarness.tokenValue("second")
        let oldPrint = fingerprint(old)
        let applied = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(applied.status, 0, applied.all)

        // A dry run creates nothing and says what it would do.
        let tokensBefore = tokens().count
        let dry = FleetHarness.bkfleet(["rotate", inventory, "--dry-run", "--batch", "1"])
        XCTAssertEqual(dry.status, 0, dry.all)
        XCTAssertTrue(dry.out.contains("would push the token of deploy on builder-02"), dry.out)
        XCTAssertTrue(dry.out.contains("would revoke \(oldPrint)"), dry.out)
        XCTAssertEqual(tokens().count, tokensBefore, "a dry run created a token")

        // A job running on builder-02 is allowed to finish by the restart.
        _ = standin("POST", "/_test/jobs",
                    body: #"{"agent": "builder-02-builder-1", "seconds": 20}"#)
        Thread.sleep(forTimeInterval: 3)
        let since = (standin("GET", "/_test/events?since=0") as? [String: Any])?["next_seq"]
            as? Int ?? 0

        let rotated = FleetHarness.bkfleet(["rotate", inventory, "--batch", "1"])
        XCTAssertEqual(rotated.status, 0, rotated.all)
        XCTAssertFalse(rotated.all.contains(old), "old token value in the output")

        let (newValue, newID) = try XCTUnwrap(current(storeDocument(inventory)), rotated.all)
        XCTAssertFalse(rotated.all.contains(newValue), "new token value in the output")
        XCTAssertNil(current(storeDocument(inventory), "previous"), "old token kept in the store")
        let storePath = (inventory as NSString).deletingLastPathComponent + "/store/default.json"
        let mode = try FileManager.default.attributesOfItem(atPath: storePath)[.posixPermissions]
        XCTAssertEqual((mode as? NSNumber)?.intValue, 0o600)

        // Every agent re-registered with the new token and is connected.
        let now = agents()
        for name in queues.keys {
            XCTAssertEqual(now[name]?["token_id"] as? String, newID,
                           "\(name): \(now[name] ?? [:])")
            XCTAssertEqual(now[name]?["connection_state"] as? String, "connected", name)
        }
        // The old token is revoked, and registering with it is refused.
        XCTAssertNotNil(token(fingerprint: oldPrint)?["revoked_at"] as? String)
        _ = standin("POST", "/v3/register", body: #"{"name": "probe"}"#,
                    header: "Authorization: Token \(old)")
        XCTAssertEqual(lastStatus, 401)

        // No host keeps the old value (token files, backups) and the job finished.
        let oldSum = String(FleetHarness.run("/usr/bin/sha256sum", [], stdin: old).out.prefix(64))
        for host in hosts {
            let sums = FleetHarness.exec(host, "find /var/lib/bkfleet /etc/nixos -type f "
                                         + "-exec sha256sum {} +")
            XCTAssertTrue(sums.out.contains("/var/lib/bkfleet/secrets/builder/token"), sums.all)
            XCTAssertFalse(sums.out.contains(oldSum), "\(host) keeps the old token: \(sums.out)")
        }
        let jobs = (standin("GET", "/_test/jobs") as? [String: Any])?["jobs"] as? [[String: Any]]
            ?? standin("GET", "/_test/jobs") as? [[String: Any]] ?? []
        XCTAssertEqual(jobs.last?["state"] as? String, "finished", "\(jobs.last ?? [:])")

        // With --batch 1, each queue kept a connected agent at every moment.
        let events = (standin("GET", "/_test/events?since=\(since)") as? [String: Any])?["events"]
            as? [[String: Any]] ?? []
        var up = Set(queues.keys)
        var sawDown = false
        for event in events {
            guard let name = event["agent_name"] as? String, queues[name] != nil else { continue }
            switch event["type"] as? String {
            case "disconnect", "lost": up.remove(name); sawDown = true
            case "connect", "reconnect": up.insert(name)
            default: continue
            }
            for queue in Set(queues.values) {
                XCTAssertTrue(up.contains { queues[$0] == queue },
                              "queue \(queue) had no connected agent at event \(event)")
            }
        }
        XCTAssertTrue(sawDown, "no disconnect seen: the agents were not restarted")

        // The run record says what ran, and the summary says where every agent is.
        for host in hosts {
            let record = FleetHarness.exec(host, "cat /var/lib/bkfleet/last-apply").out
            XCTAssertTrue(record.contains("action=rotate"), "\(host): \(record)")
        }
        let newPrint = fingerprint(newValue)
        XCTAssertTrue(rotated.out.contains("on \(newPrint): builder-01/builder, "
                                           + "builder-01/deploy, builder-02/builder"),
                      rotated.out)
        XCTAssertTrue(rotated.out.contains("old token: \(oldPrint) revoked"), rotated.out)

        // A later apply keeps the new token: the store wins over the old source file.
        let again = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(again.status, 0, again.all)
        XCTAssertTrue(again.out.contains("0 changed"), again.out)
    }

    func test_a_host_that_fails_goes_back_to_the_old_token_and_a_rerun_finishes() throws {
        let inventory = try inventory()
        let old = FleetHarness.tokenValue("second")
        let oldPrint = fingerprint(old)
        let applied = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(applied.status, 0, applied.all)

        // builder-03's agent refuses to start with any token but the old one.
        let oldSum = FleetHarness.run("/usr/bin/sha256sum", [], stdin: old).out.prefix(64)
        let breakIt = FleetHarness.exec("builder-03", """
            d=/etc/systemd/system/buildkite-agent-builder.service.d
            mkdir -p $d && cat > $d/zz-rotate-test.conf <<'X'
            [Service]
            ExecStartPre=+/bin/sh -c 'test "$$(sha256sum < \
            /var/lib/bkfleet/secrets/builder/token | cut -c1-64)" = \(oldSum)'
            X
            systemctl daemon-reload
            """)
        XCTAssertEqual(breakIt.status, 0, breakIt.all)

        let failed = FleetHarness.bkfleet(["rotate", inventory])
        XCTAssertNotEqual(failed.status, 0, failed.all)
        XCTAssertTrue(failed.out.contains("FAILED  builder-03"), failed.out)
        XCTAssertTrue(failed.out.contains("\(oldPrint): ")
                      && failed.out.contains("builder-03/builder"), failed.out)
        XCTAssertNil(token(fingerprint: oldPrint)?["revoked_at"] as? String,
                     "old token revoked despite the failure")
        let onHost = FleetHarness.exec("builder-03", "sha256sum < "
                                       + "/var/lib/bkfleet/secrets/builder/token").out
        XCTAssertEqual(String(onHost.prefix(64)), String(oldSum),
                       "builder-03 not on the old token")
        let agent = agents()["builder-03-builder-1"]
        XCTAssertEqual(agent?["token_fingerprint"] as? String, oldPrint, "\(agent ?? [:])")
        XCTAssertEqual(agent?["connection_state"] as? String, "connected")
        XCTAssertNotNil(current(storeDocument(inventory), "previous"),
                        "the store must keep the old token until it is revoked")

        // Fixed, a rerun finishes: everyone on the new token, the old one revoked.
        FleetHarness.exec("builder-03", """
            rm /etc/systemd/system/buildkite-agent-builder.service.d/zz-rotate-test.conf
            systemctl daemon-reload
            """)
        let rerun = FleetHarness.bkfleet(["rotate", inventory])
        XCTAssertEqual(rerun.status, 0, rerun.all)
        let (_, newID) = try XCTUnwrap(current(storeDocument(inventory)))
        let now = agents()
        for name in queues.keys {
            XCTAssertEqual(now[name]?["token_id"] as? String, newID,
                           "\(name): \(now[name] ?? [:])")
        }
        XCTAssertNotNil(token(fingerprint: oldPrint)?["revoked_at"] as? String)
    }

    func test_a_rerun_after_a_killed_rotation_restarts_agents_already_given_the_new_token()
        throws {
        let inventory = try inventory()
        let old = FleetHarness.tokenValue("second")
        let oldPrint = fingerprint(old)
        let oldID = try XCTUnwrap(token(fingerprint: oldPrint)?["id"] as? String)
        let applied = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(applied.status, 0, applied.all)

        // What a rotation killed after builder-01's push and before its restart leaves:
        // the new token created and stored beside the old one, builder-01's token files
        // replaced (its agents still run on the old token), and that run's backup holding
        // the old value on the host.
        Thread.sleep(forTimeInterval: 1.5)   // the file must change after the unit started
        let new = try createToken("bkfleet rotate default (killed)")
        let storePath = try writeUnfinishedStore(inventory, current: new,
                                                 previous: (old, oldID))
        let killed = execWithInput("builder-01", """
            set -e
            v=$(cat)
            b=/var/lib/bkfleet/backup/20260101T000000-dead/files/var/lib/bkfleet/secrets
            for a in builder deploy; do
              f=/var/lib/bkfleet/secrets/$a/token
              mkdir -p $b/$a && cp -p $f $b/$a/token
              printf %s "$v" > $f.new && chown --reference=$f $f.new && chmod 400 $f.new
              mv $f.new $f
            done
            """, input: new.value)
        XCTAssertEqual(killed.status, 0, killed.all)
        XCTAssertEqual(agents()["builder-01-builder-1"]?["token_id"] as? String, oldID,
                       "setup: builder-01 should still run on the old token")

        let rerun = FleetHarness.bkfleet(["rotate", inventory, "--batch", "1"])
        XCTAssertEqual(rerun.status, 0, rerun.all)
        XCTAssertTrue(rerun.out.contains("finishing an earlier rotation"), rerun.out)

        // Every agent, builder-01's included, registered again with the new token, and
        // only then was the old one revoked.
        let now = agents()
        for name in queues.keys {
            XCTAssertEqual(now[name]?["token_id"] as? String, new.id,
                           "\(name): \(now[name] ?? [:])")
            XCTAssertEqual(now[name]?["connection_state"] as? String, "connected", name)
        }
        XCTAssertNotNil(token(fingerprint: oldPrint)?["revoked_at"] as? String)

        // No old value left: not in the killed run's backup on the host, not in the store.
        let oldSum = sha256(old)
        for host in hosts {
            let sums = FleetHarness.exec(host, "find /var/lib/bkfleet -type f "
                                         + "-exec sha256sum {} +")
            XCTAssertFalse(sums.out.contains(oldSum), "\(host) keeps the old token: \(sums.out)")
        }
        XCTAssertNil(current(storeDocument(inventory), "previous"), "old token kept in the store")
        XCTAssertFalse(FleetHarness.read(storePath).contains(old))
    }

    func test_queue_guard_counts_connected_agents_and_a_dry_run_still_shows_its_plan()
        throws {
        let inventory = try inventory()
        let oldSum = sha256(FleetHarness.tokenValue("second"))
        let applied = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(applied.status, 0, applied.all)

        // builder-02's deploy agent is down: builder-01's is the only one serving 'deploy'
        // although the inventory lists two.
        let stop = FleetHarness.exec("builder-02", "systemctl stop buildkite-agent-deploy")
        XCTAssertEqual(stop.status, 0, stop.all)
        XCTAssertNotEqual(agents()["builder-02-deploy-1"]?["connection_state"] as? String,
                          "connected")

        let tokensBefore = tokens().count
        let dry = FleetHarness.bkfleet(["rotate", inventory, "--on", "builder-01",
                                        "--batch", "1", "--dry-run"])
        XCTAssertNotEqual(dry.status, 0, dry.all)
        XCTAssertTrue(dry.out.contains("would push the token of deploy on builder-01"), dry.out)
        XCTAssertTrue(dry.out.contains("batch 1/1: builder-01"), dry.out)
        XCTAssertTrue(dry.out.contains("old token"), dry.out)
        XCTAssertTrue(dry.out.contains("the real run would refuse"), dry.out)
        XCTAssertTrue(dry.out.contains("queue 'deploy'"), dry.out)
        XCTAssertEqual(tokens().count, tokensBefore, "a dry run created a token")

        let real = FleetHarness.bkfleet(["rotate", inventory, "--on", "builder-01",
                                         "--batch", "1"])
        XCTAssertEqual(real.status, 64, real.all)
        XCTAssertTrue(real.err.contains("queue 'deploy'"), real.all)
        XCTAssertEqual(tokens().count, tokensBefore, "a refused rotation created a token")
        let onHost = FleetHarness.exec("builder-01", "sha256sum < "
                                       + "/var/lib/bkfleet/secrets/deploy/token").out
        XCTAssertEqual(String(onHost.prefix(64)), oldSum, "a refused rotation changed a host")
    }
}
