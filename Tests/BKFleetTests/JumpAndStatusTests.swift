// Unit tests for the operator features that need no host: `jump` in the inventory
// (named, inline, fleet-wide, and the mistakes it refuses), and the probe records that
// `status` reads (secret modification times and the run record of the last apply).
import XCTest
@testable import BKFleet

final class JumpInventoryTests: XCTestCase {
    let twoHosts = """
        version = 1
        [tokens.default]
        file = "default.token"
        [agents.linux]
        token = "default"
        [[hosts]]
        name = "builder-01"
        address = "10.250.0.11"
        user = "deploy"
        agents = ["linux"]
        """

    func testNamedJumpTakesThatHostsAddressPortAndUser() throws {
        let inventory = try loadInventory(twoHosts + """

            [[hosts]]
            name = "inner-01"
            address = "10.250.1.11"
            agents = []
            jump = "builder-01"
            """)
        let inner = try XCTUnwrap(inventory.hosts.first { $0.name == "inner-01" })
        XCTAssertEqual(inner.jump, JumpHost(name: "builder-01", address: "10.250.0.11",
                                            port: 22, user: "deploy"))
        XCTAssertNil(inventory.hosts.first { $0.name == "builder-01" }?.jump)
    }

    func testInlineJumpDefaultsPortAndUser() throws {
        let inventory = try loadInventory(twoHosts.replacingOccurrences(
            of: "agents = [\"linux\"]",
            with: "agents = [\"linux\"]\njump = { address = \"10.250.0.12\", port = 2222 }"))
        XCTAssertEqual(inventory.hosts[0].jump, JumpHost(name: "10.250.0.12",
                                                         address: "10.250.0.12",
                                                         port: 2222, user: "root"))
    }

    func testFleetWideJumpSkipsTheJumpHostItself() throws {
        let inventory = try loadInventory(twoHosts.replacingOccurrences(
            of: "version = 1", with: "version = 1\n[defaults]\njump = \"builder-01\"") + """

            [[hosts]]
            name = "inner-01"
            address = "10.250.1.11"
            agents = []
            """)
        XCTAssertNil(inventory.hosts[0].jump)
        XCTAssertEqual(inventory.hosts[1].jump?.address, "10.250.0.11")
    }

    func testUnknownJumpNameIsLocatedWithSuggestion() {
        let errors = inventoryErrors(twoHosts + """

            [[hosts]]
            name = "inner-01"
            address = "10.250.1.11"
            agents = []
            jump = "builder-1"
            """)
        XCTAssertEqual(errors.count, 1, "\(errors)")
        XCTAssertTrue(errors[0].hasPrefix("/srv/fleet/inventory.toml:15:8:"), errors[0])
        XCTAssertTrue(errors[0].contains("not a [[hosts]] name"), errors[0])
        XCTAssertTrue(errors[0].contains("builder-01"), errors[0])
    }

    func testJumpChainsAreRefused() {
        let errors = inventoryErrors(twoHosts.replacingOccurrences(
            of: "agents = [\"linux\"]",
            with: "agents = [\"linux\"]\njump = { address = \"10.250.0.12\" }") + """

            [[hosts]]
            name = "inner-01"
            address = "10.250.1.11"
            agents = []
            jump = "builder-01"
            """)
        XCTAssertTrue(errors.contains { $0.contains("itself has a jump") }, "\(errors)")
    }

    func testInlineJumpNeedsAnAddress() {
        let errors = inventoryErrors(twoHosts + "\njump = { port = 22 }")
        XCTAssertTrue(errors.contains { $0.contains("missing 'address'") }, "\(errors)")
    }
}

final class StatusProbeRecordTests: XCTestCase {
    func testProbeRecordsForStatusAreParsed() throws {
        let state = try HostState.parse("""
            secret\tbuilder\ttoken\tabc\tbuildkite-agent-builder\tbuildkite-agent-builder\t400
            secretmtime\tbuilder\ttoken\t1700000100
            lastapply\ttime=1700000000
            lastapply\trun=20231114T221320Z
            lastapply\toperator=ops@desk
            end
            """)
        XCTAssertEqual(state.agents["builder"]?.secretModified[.token], 1_700_000_100)
        XCTAssertEqual(state.lastApply["time"], "1700000000")
        XCTAssertEqual(state.lastApply["operator"], "ops@desk")
        XCTAssertEqual(state.agents["builder"]?.secrets[.token]?.sha256, "abc")
    }
}
