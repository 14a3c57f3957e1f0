// Fleet test of how many Buildkite REST calls bkfleet makes: a converged `apply` confirms
// every host's registrations from ONE shared agent listing, and `plan` calls the API not
// at all. Counts come from the stand-in's GET /_test/requests, which counts every client,
// so the test needs the fleet to itself. It measures no time and does not cover rotate.
import Foundation
import XCTest

private struct StandinUnusable: Error, CustomStringConvertible {
    var description: String
}

final class ApiCallFleetTests: XCTestCase {
    let hosts = ["builder-01", "builder-02", "builder-03"]
    let listing = "GET /v2/organizations/{org}/agents"

    override func setUpWithError() throws {
        try FleetHarness.requireFleet()
        continueAfterFailure = true
    }

    /// A GET to the stand-in's test API, trusting the fleet's CA; the JSON answer.
    func standin(_ path: String) throws -> Any {
        let result = FleetHarness.run("/usr/bin/curl", [
            "-sS", "--fail", "--cacert", FleetHarness.clientDir + "/ca.pem",
            "https://10.250.0.1" + path])
        // A 404 here means the running stand-in predates the endpoint: a failure, not a
        // skip, so the claim is never silently left unchecked.
        guard result.status == 0 else {
            throw StandinUnusable(description: "GET \(path) on the Buildkite stand-in "
                + "failed (\(result.all.trimmingCharacters(in: .whitespacesAndNewlines))); "
                + "if it started before /_test/requests existed, stop the process in the "
                + "fleet's buildkite.pid and run Tests/Fleet/fleet up to start it again")
        }
        return try JSONSerialization.jsonObject(with: Data(result.out.utf8))
    }

    /// REST requests the stand-in answered so far, per "METHOD route".
    func restRequests() throws -> [String: Int] {
        let document = try XCTUnwrap(try standin("/_test/requests") as? [String: Any])
        return try XCTUnwrap(document["requests"] as? [String: Int], "\(document)")
    }

    /// What was asked between two readings of `restRequests()`, routes with 0 left out.
    func requests(since before: [String: Int]) throws -> [String: Int] {
        try restRequests().reduce(into: [:]) { made, entry in
            let count = entry.value - (before[entry.key] ?? 0)
            if count != 0 { made[entry.key] = count }
        }
    }

    func test_converged_apply_lists_agents_once_for_all_hosts_and_plan_not_at_all() throws {
        FleetHarness.reset(hosts)
        let inventory = try FleetHarness.inventory(FleetHarness.standardInventory())
        let first = FleetHarness.bkfleet(["apply", inventory])
        XCTAssertEqual(first.status, 0, "first apply should converge: \(first.all)")

        // One listing is one request only while it fits on one page (100 agents).
        let agents = try XCTUnwrap(try standin("/_test/agents") as? [[String: Any]])
        let listed = agents.filter { $0["connection_state"] as? String != "disconnected" }
        XCTAssertLessThanOrEqual(listed.count, 100, "precondition: the stand-in lists "
                                 + "\(listed.count) agents, more than one page; POST "
                                 + "/_test/reset on it and rerun")

        let beforeApply = try restRequests()
        let again = FleetHarness.bkfleet(["apply", inventory])
        let applied = try requests(since: beforeApply)
        XCTAssertEqual(again.status, 0, again.all)
        XCTAssertTrue(again.out.contains("0 changed, 3 unchanged, 0 failed"), again.out)
        // Three converged hosts (four agents) are confirmed from one shared listing; a
        // listing per host, or per agent, would show 3 or 4 here.
        XCTAssertEqual(applied, [listing: 1],
                       "REST requests of a converged apply on \(hosts.count) hosts")

        let beforePlan = try restRequests()
        let plan = FleetHarness.bkfleet(["plan", inventory])
        let planned = try requests(since: beforePlan)
        XCTAssertEqual(plan.status, 0, plan.all)
        XCTAssertEqual(planned, [:], "plan reads hosts only; it made REST requests")
    }
}
