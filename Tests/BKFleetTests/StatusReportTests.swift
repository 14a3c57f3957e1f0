// Unit tests for what `status` shows once the hosts were read: one note per row that is
// not as wanted (an SSH key too), the JSON document's fields (nulls kept, ISO 8601
// times, the table's notes), confinement only for running units, restart pending, and
// retired hosts. No host is contacted.
import XCTest
@testable import BKFleet

final class StatusReportTests: XCTestCase {
    private let wanted = "sha256:4f1c0a9e2b7d"

    private func converged(_ name: String = "builder") -> AgentStatus {
        AgentStatus(agent: name, inInventory: true, moduleUpToDate: true,
                    tokenOnHost: wanted, tokenWanted: wanted,
                    tokenOwner: "buildkite-agent-\(name):buildkite-agent-\(name)",
                    tokenMode: "0400",
                    ownershipWanted: "buildkite-agent-\(name):buildkite-agent-\(name) 0400",
                    ownershipOK: true, unit: "active/running", running: true,
                    confined: true, registered: true, registration: "registered",
                    connected: true, restartPending: false)
    }

    private func host(_ agents: [AgentStatus], record: [String: String] = [:],
                      retired: Bool = false) -> HostStatus {
        HostStatus(host: "builder-02", address: "10.250.0.12", reachable: true,
                   indexUpToDate: true, lastApply: record, retired: retired, agents: agents)
    }

    func testEveryDriftedRowGetsOneNoteSayingWhatDiffersAndWhatToRun() {
        var token = converged("builder")
        token.tokenOnHost = "sha256:91aa03c5e610"
        var stopped = converged("deploy")
        stopped.unit = "inactive/dead"
        stopped.running = false
        stopped.confined = nil
        stopped.registered = nil
        let status = host([token, stopped, converged("spare")])
        let table = StatusTable.render([status], color: false,
                                       applyCommand: "bkfleet apply fleet.toml")
        let notes = table.split(separator: "\n").filter { $0.hasPrefix("  builder-02:") }
        XCTAssertEqual(notes.count, 2, table)
        let tokenNote = notes.first { $0.contains("agent builder:") } ?? ""
        XCTAssertTrue(tokenNote.contains("sha256:91aa03c5e610 on the host"), table)
        XCTAssertTrue(tokenNote.contains("\(wanted) wanted"), table)
        XCTAssertTrue(tokenNote.contains("`bkfleet apply fleet.toml --on builder-02`"), table)
        let unitNote = notes.first { $0.contains("agent deploy:") } ?? ""
        XCTAssertTrue(unitNote.contains("unit inactive/dead"), table)
        XCTAssertTrue(unitNote.contains("--on builder-02"), table)
        XCTAssertTrue(table.contains("1 host(s), 0 as the inventory wants, 1 not"), table)
    }

    func testADifferingOrMissingSSHKeyIsNotOkAndItsNoteSaysToApply() {
        var differs = converged("builder")
        differs.sshKeyWanted = "sha256:7e21c09f4b3a"
        differs.sshKeyOnHost = "sha256:0b9d2e71c4aa"
        differs.restartPending = true
        var missing = converged("deploy")
        missing.sshKeyWanted = "sha256:7e21c09f4b3a"
        var same = converged("spare")
        same.sshKeyWanted = "sha256:7e21c09f4b3a"
        same.sshKeyOnHost = "sha256:7e21c09f4b3a"
        let status = host([differs, missing, same])
        XCTAssertFalse(status.ok)
        let table = StatusTable.render([status], color: false,
                                       applyCommand: "bkfleet apply fleet.toml")
        XCTAssertTrue(table.contains("1 host(s), 0 as the inventory wants, 1 not"), table)
        let notes = StatusTable.notes(status, applyCommand: "bkfleet apply fleet.toml")
        XCTAssertEqual(notes.count, 2, "\(notes)")
        let keyNote = notes.first { $0.contains("agent builder:") } ?? ""
        XCTAssertTrue(keyNote.contains("its SSH key on the host (sha256:0b9d2e71c4aa) differs "
                                       + "from the inventory's (sha256:7e21c09f4b3a)"), keyNote)
        // Restarting would only reload the wrong key: the advice is apply, not restart.
        XCTAssertTrue(keyNote.hasSuffix("run `bkfleet apply fleet.toml --on builder-02`"),
                      keyNote)
        XCTAssertFalse(keyNote.contains("systemctl restart"), keyNote)
        let missingNote = notes.first { $0.contains("agent deploy:") } ?? ""
        XCTAssertTrue(missingNote.contains("no SSH key file on the host"), missingNote)
        XCTAssertTrue(host([same]).ok)
    }

    func testJSONNotesAreTheNotesTheTablePrintsForThatHost() throws {
        var token = converged("builder")
        token.tokenOnHost = "sha256:91aa03c5e610"
        var drifted = host([token, converged("spare")])
        drifted.tempFiles = ["/etc/nixos/bkfleet/.builder.nix.bkfleet-tmp.1"]
        var other = host([converged()])
        other.host = "builder-03"
        let apply = "bkfleet apply fleet.toml"
        let table = StatusTable.render([drifted, other], color: false, applyCommand: apply)
        let shown = StatusTable.annotated([drifted, other], applyCommand: apply)
        let data = try JSONEncoder().encode(shown)
        let hosts = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [[String: Any]])
        let notes = try XCTUnwrap(hosts.first?["notes"] as? [String])
        XCTAssertEqual(notes.count, 2, "\(notes)")
        XCTAssertTrue(notes.contains { $0.contains("agent builder:")
            && $0.contains("sha256:91aa03c5e610 on the host") }, "\(notes)")
        XCTAssertTrue(notes.contains { $0.contains("temporary file(s)") }, "\(notes)")
        for note in notes {
            XCTAssertTrue(table.contains("  " + note), "the table prints \(note)")
        }
        XCTAssertEqual((hosts.last?["notes"] as? [String])?.count, 0, "\(hosts)")
    }

    func testConvergedRowFitsIn120ColumnsAndWrongOwnerIsSpelledOut() throws {
        let record = ["time": "2024-05-01T12:00:00Z", "operator": "alice@laptop"]
        var owner = converged("deploy")
        owner.tokenOwner = "root:root"
        owner.ownershipOK = false
        var mode = converged("spare")
        mode.tokenMode = "0644"
        mode.ownershipOK = false
        let fine = StatusTable.render([host([converged()], record: record)], color: false)
        let fineLines = fine.split(separator: "\n").map(String.init)
        let header = fineLines[0].split(separator: " ", omittingEmptySubsequences: true)
        XCTAssertEqual(header.count, 10, "one word per column name: \(fineLines[0])")
        XCTAssertTrue(header.contains("ACCESS"), fineLines[0])
        let good = fineLines[1]
        XCTAssertLessThanOrEqual(good.count, 120, fine)
        XCTAssertFalse(good.contains("buildkite-agent-builder"), fine)
        XCTAssertTrue(good.contains("2024-05-01 12:00Z by alice@laptop"), fine)

        let table = StatusTable.render([host([owner, mode], record: record)], color: false)
        let lines = table.split(separator: "\n").map(String.init)
        let wrongOwner = try XCTUnwrap(lines.first { $0.contains(" deploy ") })
        XCTAssertTrue(wrongOwner.contains("root:root 0400"), table)
        let wrongMode = try XCTUnwrap(lines.first { $0.contains(" spare ") })
        XCTAssertTrue(wrongMode.contains(" 0644 "), table)
        XCTAssertFalse(wrongMode.contains("buildkite-agent-spare"), table)
    }

    func testRestartPendingAloneSaysToRestartTheUnitNotToApply() {
        var pending = converged()
        pending.restartPending = true
        let notes = StatusTable.notes(host([pending]))
        XCTAssertEqual(notes.count, 1)
        XCTAssertTrue(notes[0].contains("restart pending"), "\(notes)")
        XCTAssertTrue(notes[0].contains("systemctl restart buildkite-agent-builder"),
                      "\(notes)")
        XCTAssertFalse(notes[0].contains("bkfleet apply"), "\(notes)")
    }

    func testRestartPendingComparesUnitStartWithNewestSecretChange() {
        var unit = UnitState()
        unit.properties = ["LoadState": "loaded", "ActiveState": "active",
                           "SubState": "running", "ExecMainStartTimestamp": "@1700000100"]
        XCTAssertTrue(AgentStatus.restartPending(unit, secretsChanged: [1_700_000_050,
                                                                       1_700_000_101]))
        XCTAssertFalse(AgentStatus.restartPending(unit, secretsChanged: [1_700_000_100]))
        unit.properties["ActiveState"] = "inactive"
        XCTAssertFalse(AgentStatus.restartPending(unit, secretsChanged: [1_700_000_101]))
    }

    func testConfinementIsUnknownForAUnitThatDoesNotRun() throws {
        var unit = UnitState()
        // A stopped unit keeps the properties of its definition.
        unit.properties = ["LoadState": "loaded", "ActiveState": "inactive",
                           "SubState": "dead", "RootDirectory": "/run/confinement/x",
                           "BindReadOnlyPaths": "/var/lib/bkfleet/secrets/b/token"]
        let path = "/var/lib/bkfleet/secrets/b/token"
        XCTAssertNil(AgentStatus.confinement(of: unit, tokenPath: path, wanted: true))
        unit.properties["ActiveState"] = "active"
        unit.properties["SubState"] = "running"
        XCTAssertEqual(AgentStatus.confinement(of: unit, tokenPath: path, wanted: true), true)
        unit.properties["RootDirectory"] = ""
        XCTAssertEqual(AgentStatus.confinement(of: unit, tokenPath: path, wanted: true), false)

        var stopped = converged()
        stopped.running = false
        stopped.unit = "inactive/dead"
        stopped.confined = nil
        stopped.registered = nil
        let table = StatusTable.render([host([stopped])], color: false)
        let lines = table.split(separator: "\n").map(String.init)
        let column = try XCTUnwrap(lines[0].range(of: "CONFINED")).lowerBound
            .utf16Offset(in: lines[0])
        let cell = lines[1].dropFirst(column).prefix(8)
        XCTAssertEqual(cell.trimmingCharacters(in: .whitespaces), "-", table)
    }

    func testJSONKeepsUnknownValuesAsNullAndTimesInISO8601() throws {
        var stopped = converged()
        stopped.running = false
        stopped.confined = nil
        stopped.registered = nil
        stopped.connected = nil
        stopped.sshKeyOnHost = "sha256:0b9d2e71c4aa"
        let record = HostStatus.presentRecord(["time": "1700000000", "action": "apply"])
        XCTAssertEqual(record["time"], "2023-11-14T22:13:20Z")
        XCTAssertEqual(StatusTable.lastApply(record), "2023-11-14 22:13Z")
        let data = try JSONEncoder().encode(host([stopped], record: record))
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        XCTAssertTrue(json["error"] is NSNull, "\(json)")
        XCTAssertEqual(json["retired"] as? Bool, false)
        let agent = try XCTUnwrap((json["agents"] as? [[String: Any]])?.first)
        for key in ["registered", "confined", "connected", "ssh_key_wanted"] {
            XCTAssertTrue(agent[key] is NSNull, "\(key) must be present as null: \(agent)")
        }
        XCTAssertEqual(agent["ssh_key_on_host"] as? String, "sha256:0b9d2e71c4aa")
        XCTAssertEqual((json["last_apply"] as? [String: String])?["time"],
                       "2023-11-14T22:13:20Z")
    }

    func testRetiredHostReadsAsRetiredNotAsDrift() throws {
        let state = try HostState.parse("""
            module\tdefault.nix\t\(Data("{ imports = [ ]; }".utf8).base64EncodedString())
            unit\tbuilder\tLoadState=not-found
            lastapply\ttime=1700000000
            lastapply\taction=retire
            lastapply\toperator=ops@desk
            end
            """)
        XCTAssertTrue(HostStatus.isRetired(state))
        let shown = HostStatus.presentRecord(state.lastApply)

        // The inventory lists the host with no agents: as wanted, and says retired.
        let empty = host([], record: shown, retired: true)
        XCTAssertTrue(empty.ok)
        let table = StatusTable.render([empty], color: false)
        XCTAssertTrue(table.contains("(retired)"), table)
        XCTAssertTrue(table.contains("1 as the inventory wants (1 retired), 0 not"), table)
        XCTAssertTrue(StatusTable.notes(empty).isEmpty)

        // The inventory still gives it an agent: one note, apply would restore it.
        var gone = converged()
        gone.tokenOnHost = nil
        gone.unit = "not loaded"
        gone.running = false
        gone.confined = nil
        gone.registered = nil
        let listed = host([gone], record: shown, retired: true)
        XCTAssertFalse(listed.ok)
        let notes = StatusTable.notes(listed)
        XCTAssertEqual(notes.count, 1, "\(notes)")
        XCTAssertTrue(notes[0].contains("retired"), "\(notes)")
        XCTAssertTrue(notes[0].contains("would restore"), "\(notes)")

        // A host that still has an agent's unit is not retired, whatever the record says.
        var busy = state
        busy.agents["builder"]?.unit.properties["LoadState"] = "loaded"
        XCTAssertFalse(HostStatus.isRetired(busy))
    }
}
