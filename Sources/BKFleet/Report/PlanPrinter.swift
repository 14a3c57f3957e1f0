// Turns host plans and results into what a person reads: Terraform's markers (`+`
// create, `~` change, `-` remove), a unified diff of each module file, secrets by
// fingerprint only, then one summary line. Colour only when asked (a terminal without
// NO_COLOR); the words alone must carry the meaning.

public struct PlanPrinter {
    public var color: Bool
    public var moduleDir: String
    /// Applied to every printed line: a module diff shows inventory text, and a secret
    /// pasted into a module-bound value must not reach the screen.
    public var scrub: (String) -> String

    public init(color: Bool, moduleDir: String, scrub: @escaping (String) -> String = { $0 }) {
        self.color = color
        self.moduleDir = moduleDir
        self.scrub = scrub
    }

    private func paint(_ text: String, _ code: String) -> String {
        color ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text
    }

    private func marked(_ action: ChangeAction, _ text: String) -> String {
        let code = action == .create ? "32" : action == .update ? "33" : "31"
        return "  " + paint(action.marker, code) + " " + text
    }

    /// The changes planned for one host, or nothing when it already matches.
    public func lines(for report: HostReport, address: String) -> [String] {
        unscrubbedLines(for: report, address: address).map(scrub)
    }

    private func unscrubbedLines(for report: HostReport, address: String) -> [String] {
        guard let plan = report.plan, !plan.isEmpty else { return [] }
        var out = [paint("\(report.host)", "1") + " (\(address))"]
        for change in plan.modules {
            out.append(marked(change.action, "module \(moduleDir)/\(change.file)"))
            let hunks = UnifiedDiff.hunks(old: change.old ?? "", new: change.new ?? "")
            for line in hunks {
                let code = line.hasPrefix("+") ? "32" : line.hasPrefix("-") ? "31"
                    : line.hasPrefix("@@") ? "36" : ""
                out.append("      " + (code.isEmpty ? line : paint(line, code)))
            }
        }
        for change in plan.secrets {
            let old = change.oldSHA256.map(Digest.fingerprint(hex:))
            let new = change.newSHA256.map(Digest.fingerprint(hex:))
            let what = "\(change.kind.label) of agent \(change.agent)"
            switch change.action {
            case .create: out.append(marked(.create, "\(what) \(new ?? "")"))
            case .update: out.append(marked(.update, "\(what) \(old ?? "") → \(new ?? "")"))
            case .remove: out.append(marked(.remove, "\(what) \(old ?? "")"))
            }
        }
        for repair in plan.ownership {
            out.append(marked(.update, "ownership \(repair.path) \(repair.from.description) → "
                              + repair.to.description))
        }
        for unit in plan.units {
            let action: ChangeAction = unit.action == .start ? .create
                : unit.action == .stop ? .remove : .update
            let by = unit.actor == .rebuild ? "by the rebuild" : "by bkfleet"
            out.append(marked(action, "\(unit.action.rawValue) buildkite-agent-\(unit.agent) "
                              + "(\(unit.reason); \(by))"))
        }
        if !plan.handover.isEmpty {
            out.append("    new agent users: " + plan.handover.joined(separator: ", ")
                       + " (secrets go to root until the switch creates them)")
        }
        if !plan.leftoverTempFiles.isEmpty {
            out.append(marked(.remove, "\(plan.leftoverTempFiles.count) temporary file(s) "
                              + "left by an interrupted run"))
        }
        out.append(plan.pendingSwitch
                   ? "    rebuild: yes (an earlier switch did not finish)"
                   : plan.needsRebuild ? "    rebuild: yes" : "    rebuild: no")
        if let deep = report.deepOutput {
            out.append("    NixOS says (dry-activate of the staged modules):")
            out += deep.split(separator: "\n").map { "      " + $0 }
        }
        return out
    }

    /// `Plan: 2 hosts to change, 1 agent to add, 1 token to replace, 0 to remove.`
    public static func summary(_ reports: [HostReport]) -> String {
        let plans = reports.compactMap(\.plan)
        let hosts = plans.filter { !$0.isEmpty }.count
        if reports.isEmpty {
            // An empty shard, say: nothing was read, so nothing is known to match.
            return "No host selected (--on, --shard or BUILDKITE_PARALLEL_JOB): nothing "
                + "was read or planned."
        }
        if hosts == 0 && !reports.contains(where: { $0.outcome.isFailure }) {
            return "No changes. The fleet matches the inventory."
        }
        let agentsAdded = plans.reduce(0) { sum, plan in
            sum + plan.units.filter { $0.action == .start && $0.reason == "new agent" }.count
        }
        let tokensReplaced = plans.reduce(0) { sum, plan in
            sum + plan.secrets.filter { $0.kind == .token && $0.action == .update }.count
        }
        let removed = plans.reduce(0) { $0 + $1.removedAgents.count }
        func plural(_ n: Int, _ word: String) -> String { "\(n) \(word)\(n == 1 ? "" : "s")" }
        var text = "Plan: \(plural(hosts, "host")) to change, \(plural(agentsAdded, "agent")) "
            + "to add, \(plural(tokensReplaced, "token")) to replace, \(removed) to remove."
        let failed = reports.filter { $0.outcome.isFailure }.count
        if failed > 0 { text += " \(plural(failed, "host")) could not be read." }
        return text
    }
}
