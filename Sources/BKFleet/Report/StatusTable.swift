// The `status` table: one row per agent (one per host that could not be read or was
// retired), then one note per row that is not as the inventory wants, saying what
// differs and what to run, then a summary line. Pure text from HostStatus values; it
// reads no host and decides nothing that HostStatus did not.
import Foundation

public enum StatusTable {
    /// The whole table. `applyCommand` is how the operator reruns apply for this
    /// inventory (e.g. `bkfleet apply fleet.toml`); notes add `--on HOST` to it.
    public static func render(_ statuses: [HostStatus], color: Bool,
                              applyCommand: String = "bkfleet apply") -> String {
        func mark(_ good: Bool, _ text: String) -> String {
            guard color, !good else { return text }
            return "\u{1B}[31m\(text)\u{1B}[0m"
        }
        var rows: [[(String, Bool)]] = [[
            ("HOST", true), ("AGENT", true), ("MODULE", true), ("TOKEN", true),
            ("ACCESS", true), ("UNIT", true), ("CONFINED", true), ("REGISTERED", true),
            ("CONNECTED", true), ("LAST-APPLY", true),
        ]]
        var notes: [String] = []
        func blankRow(_ host: String, _ agent: (String, Bool), _ module: (String, Bool),
                      last: (String, Bool)) -> [(String, Bool)] {
            [(host, true), agent, module] + Array(repeating: ("", true), count: 6) + [last]
        }
        for status in statuses {
            let last = (lastApply(status.lastApply), !status.lastApply.isEmpty)
            notes += self.notes(status, applyCommand: applyCommand)
            guard status.reachable, status.error == nil else {
                rows.append(blankRow(status.host, ("-", false),
                                     (status.reachable ? "unreadable" : "unreachable", false),
                                     last: ("", true)))
                continue
            }
            if status.retired || status.agents.isEmpty {
                let good = status.ok
                rows.append(blankRow(status.host,
                                     (status.retired ? "(retired)" : "(none)", good),
                                     (status.indexUpToDate ? "ok" : "stale",
                                      status.indexUpToDate), last: last))
                continue
            }
            for agent in status.agents {
                // Fingerprints stay out of the table to keep rows narrow; the note for a
                // differing token and `--json` carry both.
                let token = agent.tokenOnHost == nil ? "missing"
                    : agent.tokenOnHost == agent.tokenWanted ? "ok" : "differs"
                rows.append([
                    (status.host, true), (agent.agent, agent.inInventory),
                    (agent.moduleUpToDate ? "ok" : "stale", agent.moduleUpToDate),
                    (token, agent.tokenOnHost != nil && agent.tokenOnHost == agent.tokenWanted),
                    (access(agent), agent.ownershipOK),
                    // The usual state in one word keeps a converged row under 120 columns.
                    ((agent.unit == "active/running" ? "running" : agent.unit)
                        + (agent.restartPending ? " (restart pending)" : ""),
                     agent.running && !agent.restartPending),
                    (yesNo(agent.confined), agent.confined != false),
                    (yesNo(agent.registered), agent.registered == true),
                    (yesNo(agent.connected), agent.connected != false),
                    last,
                ])
            }
        }
        let widths = (0..<rows[0].count).map { column in
            rows.map { $0[column].0.count }.max() ?? 0
        }
        var lines = rows.map { row in
            row.enumerated().map { column, cell in
                let padded = column == row.count - 1 ? cell.0
                    : cell.0.padding(toLength: widths[column], withPad: " ", startingAt: 0)
                return mark(cell.1, padded)
            }.joined(separator: "  ")
        }
        lines += notes.map { "  " + $0 }
        let bad = statuses.filter { !$0.ok }.count
        let retired = statuses.filter { $0.ok && $0.retired }.count
        lines.append("\nStatus: \(statuses.count) host(s), \(statuses.count - bad) as the "
                     + "inventory wants" + (retired > 0 ? " (\(retired) retired)" : "")
                     + ", \(bad) not.")
        return lines.joined(separator: "\n")
    }

    /// The token file's owner and mode: `ok` when as wanted, `-` without a token file,
    /// the mode alone when only the mode is wrong, else `owner:group mode`.
    static func access(_ agent: AgentStatus) -> String {
        guard let owner = agent.tokenOwner else { return "-" }
        if agent.ownershipOK { return "ok" }
        let mode = agent.tokenMode ?? "?"
        let wantedOwner = agent.ownershipWanted?.split(separator: " ").first.map(String.init)
        return wantedOwner == owner ? mode : "\(owner) \(mode)"
    }

    /// `yes`, `no`, or `-` when not known (the unit does not run, no API access).
    static func yesNo(_ value: Bool?) -> String {
        value.map { $0 ? "yes" : "no" } ?? "-"
    }

    /// The statuses with each host's `notes` set to the lines the table prints for it, so
    /// `status --json` says what the table says.
    public static func annotated(_ statuses: [HostStatus],
                                 applyCommand: String = "bkfleet apply") -> [HostStatus] {
        statuses.map { status in
            var annotated = status
            annotated.notes = notes(status, applyCommand: applyCommand)
            return annotated
        }
    }

    /// The notes for one host: why it could not be read, a stale module index, a retired
    /// host the inventory still gives agents, and one line per agent not as wanted.
    public static func notes(_ status: HostStatus, applyCommand: String = "bkfleet apply")
        -> [String] {
        let apply = "\(applyCommand) --on \(status.host)"
        guard status.reachable, status.error == nil else {
            return ["\(status.host): \(status.error ?? "not read")"]
        }
        var notes: [String] = []
        let staleIndex = "\(status.host): the module index (default.nix) differs from the "
            + "inventory; run `\(apply)`"
        if status.retired {
            let wanted = status.agents.filter(\.inInventory).map(\.agent)
            if !wanted.isEmpty {
                notes.append("\(status.host): retired (\(lastApply(status.lastApply))), but "
                             + "the inventory still gives it \(wanted.joined(separator: ", "))"
                             + ": `\(apply)` would restore them; or remove the host from "
                             + "the inventory")
            }
            if !status.indexUpToDate { notes.append(staleIndex) }
            return notes
        }
        if !status.indexUpToDate { notes.append(staleIndex) }
        if status.switchPending {
            notes.append("\(status.host): an earlier switch did not finish (killed, failed "
                         + "or timed out), so the modules may not be what runs; run "
                         + "`\(apply)` to switch and verify")
        }
        if !status.tempFiles.isEmpty {
            notes.append("\(status.host): temporary file(s) left by an interrupted push: "
                         + status.tempFiles.joined(separator: ", ") + "; `\(apply)` "
                         + "removes them")
        }
        for agent in status.agents where !agent.ok {
            notes.append("\(status.host): agent \(agent.agent): " + note(agent, apply: apply))
        }
        return notes
    }

    /// What differs for one agent, then what to run about it.
    static func note(_ agent: AgentStatus, apply: String) -> String {
        var what: [String] = []
        // Differences apply repairs: it rewrites files, starts units, removes agents.
        var byApply = false
        if !agent.inInventory {
            what.append("not in the inventory for this host (apply removes it)")
            byApply = true
        } else {
            if !agent.moduleUpToDate {
                what.append("its module differs from the inventory's")
                byApply = true
            }
            if let have = agent.tokenOnHost {
                if have != agent.tokenWanted {
                    what.append("token \(have) on the host, \(agent.tokenWanted ?? "none") "
                                + "wanted")
                    byApply = true
                } else if !agent.ownershipOK {
                    what.append("token file is \(agent.tokenOwner ?? "?") "
                                + "\(agent.tokenMode ?? "?"), wanted "
                                + (agent.ownershipWanted ?? "?"))
                    byApply = true
                }
            } else {
                what.append("no token file")
                byApply = true
            }
            if !agent.sshKeyOK, let wanted = agent.sshKeyWanted {
                what.append(agent.sshKeyOnHost.map {
                    "its SSH key on the host (\($0)) differs from the inventory's (\(wanted))"
                } ?? "no SSH key file on the host, the inventory's is \(wanted)")
                byApply = true
            }
            if !agent.running {
                what.append("unit \(agent.unit)")
                byApply = true
            }
        }
        if agent.confined == false {
            what.append("runs unconfined (no RootDirectory, or the token file not bound)")
        }
        if agent.restartPending {
            what.append("started before its token or SSH key file last changed (restart "
                        + "pending)")
        }
        if agent.registered == false {
            what.append(agent.registration)
        } else if agent.connected == false {
            what.append("Buildkite lists no connected agent for it")
        }
        let unit = "buildkite-agent-\(agent.agent)"
        let next: String
        if byApply {
            next = "run `\(apply)`"
        } else if agent.confined == false {
            next = "check the host's configuration.nix for settings that override \(unit) "
                + "(systemd.services), then run `\(apply)`"
        } else if agent.restartPending {
            // apply restarts only for a changed secret or module; here both match.
            next = "restart it on the host: `systemctl restart \(unit)`"
        } else {
            next = "read its log on the host: `journalctl -u \(unit)`"
        }
        return (what.isEmpty ? ["not as the inventory wants"] : what)
            .joined(separator: "; ") + "; " + next
    }

    /// `2024-05-01 12:00Z by alice@laptop`, or `never` without a run record. Takes the
    /// record's `time` as ISO 8601 (as status shows it) or as seconds since the epoch.
    public static func lastApply(_ record: [String: String]) -> String {
        guard let time = record["time"] else { return "never" }
        // Both forms become UTCStamp's ISO text, cut to the minute (no DateFormatter:
        // it would load ICU's locale data for one line).
        let iso = Double(time).map { UTCStamp.iso8601(Date(timeIntervalSince1970: $0)) }
            ?? time
        let shape = iso.map { $0.isNumber ? "9" : $0 }
        guard shape.count >= 17, String(shape.prefix(17)) == "9999-99-99T99:99:" else {
            return "never"
        }
        let minute = iso.prefix(16).replacingOccurrences(of: "T", with: " ") + "Z"
        let action = record["action"].map { $0 == "apply" ? "" : " (\($0))" } ?? ""
        return minute + (record["operator"].map { " by \($0)" } ?? "") + action
    }
}
