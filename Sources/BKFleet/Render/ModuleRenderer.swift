// Renders the NixOS modules one host needs: one file per agent plus an index that
// imports them. Pure: inventory and templates in, file names and text out. Which files
// change on the host is the planner's business.

/// The module files for one host, keyed by file name inside the module directory.
public struct RenderedModules: Equatable, Sendable {
    public var files: [String: String]
}

public struct ModuleRenderer: Sendable {
    public var templates: Templates

    public init(templates: Templates) {
        self.templates = templates
    }

    public static let indexFile = "default.nix"

    /// The path of an agent's secret on the host.
    public static func secretPath(_ inventory: Inventory, agent: String, kind: SecretKind)
        -> String {
        "\(inventory.defaults.secretDir)/\(agent)/\(kind.fileName)"
    }

    public func render(host: Host, inventory: Inventory) throws -> RenderedModules {
        var files: [String: String] = [:]
        for name in host.agents.sorted() {
            guard let agent = inventory.agents[name] else { continue }
            files["\(name).nix"] = try renderAgent(agent, inventory: inventory)
        }
        let imports = host.agents.sorted().map { "    ./\($0).nix" }.joined(separator: "\n")
        files[Self.indexFile] = try Templates.fill(templates.index, name: "index.nix",
                                                   ["imports": imports])
        return RenderedModules(files: files)
    }

    func renderAgent(_ agent: AgentProfile, inventory: Inventory) throws -> String {
        let sshKey: NixValue = agent.sshKey == nil ? .null
            : .string(Self.secretPath(inventory, agent: agent.name, kind: .sshKey))
        let values: [String: NixValue] = [
            "tokenPath": .string(Self.secretPath(inventory, agent: agent.name, kind: .token)),
            "sshKeyPath": sshKey,
            "confinement": .bool(agent.confinement),
            "tags": .attrs(agent.tags.mapValues { .string($0) }),
            "runtimePackages": .list(agent.runtimePackages.map { .package($0) }),
            "extraConfig": .string(Self.extraConfig(agent)),
            "hooks": .attrs(agent.hooks.mapValues { .string($0) }),
            "package": .package(agent.package),
        ]
        var filled = values.mapValues(NixLiteral.render)
        // The agent's name in Buildkite: set only when the inventory gives one, so
        // NixOS's own default (`%hostname-<agent>-%n`) applies otherwise.
        filled["nameSetting"] = agent.displayName.map {
            "    name = \(NixLiteral.render(.string($0)));\n"
        } ?? ""
        // Only a public agent's module gains this line, so other modules stay
        // byte-for-byte what earlier versions rendered.
        filled["unitEnvironment"] = agent.publicBuilds
            ? "      environment.NIX_CONFIG = "
                + NixLiteral.render(.string(Self.nixConfig(agent))) + ";\n"
            : ""
        filled["agent"] = agent.name
        filled["agentAttr"] = NixLiteral.attributeName(agent.name)
        filled["unitAttr"] = NixLiteral.attributeName(agent.unitName)
        return try Templates.fill(templates.agent, name: "agent.nix", filled)
    }
}

extension ModuleRenderer {
    /// buildkite-agent settings a public agent gets: no hooks from the checked-out
    /// repository, no plugins, no commands other than scripts (docs/security.md). The
    /// loader refuses an extra_config line that sets one of them itself.
    static let publicAgentSettings = ["no-local-hooks", "no-plugins", "no-command-eval"]
    public static let publicAgentConfig = publicAgentSettings.map { "\($0)=true" }

    /// The agent's `extraConfig`: the inventory's text, then the public switches.
    static func extraConfig(_ agent: AgentProfile) -> String {
        guard agent.publicBuilds else { return agent.extraConfig }
        let own = agent.extraConfig
        let joined = own.isEmpty || own.hasSuffix("\n") ? own : own + "\n"
        return joined + publicAgentConfig.joined(separator: "\n")
    }

    /// `NIX_CONFIG` for a public agent's unit: restricted evaluation for the Nix
    /// commands the agent and its jobs run. It is the unit's environment, not the
    /// host's nix.conf, so `nixos-rebuild` and other users are unaffected.
    // LIMITATION: a job that runs arbitrary shell can unset NIX_CONFIG; this guards
    // evaluation of repository Nix code in fixed pipelines, not hostile commands.
    static func nixConfig(_ agent: AgentProfile) -> String {
        "restrict-eval = true\nallowed-uris = " + agent.allowedURIs.joined(separator: " ")
    }
}

/// The two secrets an agent can have on a host.
public enum SecretKind: String, CaseIterable, Sendable, Codable {
    case token
    case sshKey = "ssh_key"

    public var fileName: String { rawValue }
    public var label: String { self == .token ? "token" : "SSH key" }
}
