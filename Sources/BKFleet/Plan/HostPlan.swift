// Compares a host's state with what the inventory wants and lists the changes, in the
// order apply makes them. Pure and deterministic: the same inputs give the same plan,
// which is what lets `plan` show exactly what `apply` will do.

public enum ChangeAction: String, Sendable, Codable {
    case create, update, remove

    /// Terraform's markers: `+` create, `~` update in place, `-` remove.
    public var marker: String {
        switch self {
        case .create: return "+"
        case .update: return "~"
        case .remove: return "-"
        }
    }
}

public enum UnitAction: String, Sendable, Codable {
    case start, restart, stop
}

/// Who acts on a unit: NixOS (because its definition changed) or bkfleet (a secret
/// changed under an unchanged definition, or the unit was found stopped).
public enum UnitActor: String, Sendable, Codable {
    case rebuild, bkfleet
}

public struct ModuleChange: Sendable {
    public var file: String
    public var action: ChangeAction
    public var old: String?
    public var new: String?
}

public struct SecretChange: Sendable {
    public var agent: String
    public var kind: SecretKind
    public var action: ChangeAction
    public var oldSHA256: String?
    public var newSHA256: String?
}

public struct OwnershipRepair: Sendable {
    public var path: String
    public var agent: String
    public var from: FileOwnership
    public var to: FileOwnership
}

public struct UnitChange: Sendable {
    public var agent: String
    public var action: UnitAction
    public var actor: UnitActor
    public var reason: String
}

public struct HostPlan: Sendable {
    public var modules: [ModuleChange] = []
    public var secrets: [SecretChange] = []
    public var ownership: [OwnershipRepair] = []
    public var units: [UnitChange] = []
    /// Agents found on the host that the inventory no longer gives it.
    public var removedAgents: [String] = []
    /// Agents whose Unix user does not exist yet: their secrets go to `root` first and
    /// to the agent's user after the switch creates it.
    public var handover: [String] = []
    /// An earlier run's switch did not finish (failed, killed or timed out): rebuild even
    /// though the module files already match.
    public var pendingSwitch = false
    /// Temporary files a killed run left in the secret folders; the push removes them.
    public var leftoverTempFiles: [String] = []
    /// Managed folders that do not exist yet or are empty: the push creates and marks them.
    public var foldersToMark: [String] = []

    /// NixOS must switch when a module changed, or when a unit NixOS should have started
    /// is missing (an earlier run wrote the module but its switch did not finish).
    public init() {}

    public var needsRebuild: Bool {
        !modules.isEmpty || pendingSwitch || units.contains { $0.actor == .rebuild }
    }
    public var isEmpty: Bool {
        modules.isEmpty && secrets.isEmpty && ownership.isEmpty && units.isEmpty
            && removedAgents.isEmpty && !pendingSwitch && leftoverTempFiles.isEmpty
            && foldersToMark.isEmpty
    }
}

extension HostPlan {
    /// The plan with only `agents`' secret pushes, ownership repairs and bkfleet restarts
    /// (a rotation never touches agents outside its selection). Module changes and the
    /// restarts NixOS makes stay: they make the plan need a rebuild, which rotate refuses.
    public func limited(to agents: Set<String>) -> HostPlan {
        var plan = self
        plan.secrets.removeAll { !agents.contains($0.agent) }
        plan.ownership.removeAll { !$0.agent.isEmpty && !agents.contains($0.agent) }
        plan.units.removeAll { $0.actor == .bkfleet && !agents.contains($0.agent) }
        return plan
    }
}

public enum Planner {
    /// The owner, group and mode a secret file must have on this host right now.
    /// Before the first switch the agent's user does not exist: the file stays root's
    /// alone (not group `keys`, which every agent user is in) until the switch has made
    /// the user; then bkfleet hands it over and starts the agent.
    static func secretOwnership(agent: AgentProfile, on state: HostState) -> FileOwnership {
        if state.agents[agent.name]?.uid != nil {
            return FileOwnership(owner: agent.userName, group: agent.userName, mode: "400")
        }
        return FileOwnership(owner: "root", group: "root", mode: "400")
    }

    static func secretDirOwnership(agent: AgentProfile, on state: HostState)
        -> FileOwnership {
        if state.agents[agent.name]?.uid != nil {
            return FileOwnership(owner: agent.userName, group: agent.userName, mode: "700")
        }
        return FileOwnership(owner: "root", group: "root", mode: "700")
    }

    static let secretRootOwnership = FileOwnership(owner: "root", group: "root", mode: "711")

    /// Managed folders that hold things bkfleet did not put there. bkfleet refuses such
    /// a host: listing, re-moding or emptying them could destroy what is not its own.
    public static func foreignFolders(_ state: HostState, moduleDir: String,
                                      secretDir: String) -> [String] {
        [moduleDir, secretDir].filter { state.folders[$0] == "foreign" }
    }

    /// `restartStale`: also restart a running agent whose unit started before one of its
    /// secret files last changed (its file is right but it still runs the old value).
    public static func plan(desired: DesiredState, state: HostState, secretDir: String,
                            moduleDir: String = "/etc/nixos/bkfleet",
                            restartStale: Bool = false) -> HostPlan {
        var plan = HostPlan()
        plan.pendingSwitch = state.switchPending
        plan.leftoverTempFiles = (state.agents.values.flatMap(\.tempFiles)
            + state.moduleTempFiles).sorted()
        plan.foldersToMark = [moduleDir, secretDir].filter {
            ["absent", "empty"].contains(state.folders[$0] ?? "marked")
        }

        // 1. Module files: the index and one per agent; anything else bkfleet left in its
        //    own folder is removed.
        for (file, text) in desired.modules.files.sorted(by: { $0.key < $1.key }) {
            if let existing = state.modules[file] {
                if existing != text {
                    plan.modules.append(ModuleChange(file: file, action: .update,
                                                     old: existing, new: text))
                }
            } else {
                plan.modules.append(ModuleChange(file: file, action: .create, old: nil,
                                                 new: text))
            }
        }
        for (file, text) in state.modules.sorted(by: { $0.key < $1.key })
        where desired.modules.files[file] == nil {
            plan.modules.append(ModuleChange(file: file, action: .remove, old: text, new: nil))
        }
        let changedModules = Set(plan.modules.map(\.file))

        // 2. Secrets, their folders and the units, agent by agent.
        if let root = state.secretRoot, root != secretRootOwnership {
            plan.ownership.append(OwnershipRepair(path: secretDir, agent: "",
                                                  from: root, to: secretRootOwnership))
        }
        for name in desired.agents.keys.sorted() {
            let agent = desired.agents[name]!
            let found = state.agents[name] ?? AgentOnHost()
            if found.uid == nil { plan.handover.append(name) }
            let wantedOwner = secretOwnership(agent: agent.profile, on: state)
            let dir = "\(secretDir)/\(name)"
            let wantedDir = secretDirOwnership(agent: agent.profile, on: state)
            if let current = found.secretDir, current != wantedDir {
                plan.ownership.append(OwnershipRepair(path: dir, agent: name, from: current,
                                                      to: wantedDir))
            }
            var secretChanged = false
            for kind in SecretKind.allCases {
                let want = agent.secrets[kind]
                let have = found.secrets[kind]
                switch (want, have) {
                case (nil, nil):
                    break
                case (let want?, nil):
                    plan.secrets.append(SecretChange(agent: name, kind: kind, action: .create,
                                                     oldSHA256: nil, newSHA256: want.sha256))
                case (nil, let have?):
                    plan.secrets.append(SecretChange(agent: name, kind: kind, action: .remove,
                                                     oldSHA256: have.sha256, newSHA256: nil))
                    secretChanged = true
                case (let want?, let have?):
                    if want.sha256 != have.sha256 {
                        plan.secrets.append(SecretChange(
                            agent: name, kind: kind, action: .update,
                            oldSHA256: have.sha256, newSHA256: want.sha256))
                        secretChanged = true
                    } else if have.ownership != wantedOwner {
                        plan.ownership.append(OwnershipRepair(
                            path: "\(dir)/\(kind.fileName)", agent: name,
                            from: have.ownership, to: wantedOwner))
                    }
                }
            }
            let unit = found.unit
            let definitionChanged = changedModules.contains("\(name).nix")
            if !unit.loaded || unit.activeState == "inactive" && definitionChanged {
                plan.units.append(UnitChange(agent: name, action: .start, actor: .rebuild,
                                             reason: "new agent"))
            } else if definitionChanged {
                plan.units.append(UnitChange(agent: name, action: .restart, actor: .rebuild,
                                             reason: "module changed"))
            } else if secretChanged {
                plan.units.append(UnitChange(agent: name, action: .restart, actor: .bkfleet,
                                             reason: "secret changed"))
            } else if !unit.isRunning {
                plan.units.append(UnitChange(agent: name, action: .start, actor: .bkfleet,
                                             reason: "unit is \(unit.summary)"))
            } else if restartStale, let started = unit.startedAt,
                      let changed = found.secretModified.values.max(), started < changed {
                // LIMITATION: both times are whole seconds; a file replaced within the
                // second its unit started is not seen as newer.
                plan.units.append(UnitChange(agent: name, action: .restart, actor: .bkfleet,
                                             reason: "restart pending: started before its "
                                                + "secret file changed"))
            }
        }

        // 3. Agents the host has but should not: NixOS stops them once their module is
        //    gone; their secrets go after that.
        for name in state.agents.keys.sorted() where desired.agents[name] == nil {
            let found = state.agents[name]!
            let hasModule = state.modules["\(name).nix"] != nil
            guard hasModule || found.secretDir != nil || found.unit.loaded else { continue }
            plan.removedAgents.append(name)
            for kind in SecretKind.allCases {
                if let have = found.secrets[kind] {
                    plan.secrets.append(SecretChange(agent: name, kind: kind, action: .remove,
                                                     oldSHA256: have.sha256, newSHA256: nil))
                }
            }
            if found.unit.loaded && found.unit.activeState != "inactive" {
                plan.units.append(UnitChange(agent: name, action: .stop, actor: .rebuild,
                                             reason: "agent removed from the inventory"))
            }
        }
        return plan
    }
}
