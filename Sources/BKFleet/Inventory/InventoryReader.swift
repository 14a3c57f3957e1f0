// Walks a parsed inventory (TOMLValue tree) section by section, building the model and
// recording a located diagnostic for every unknown key, wrong type, bad name, missing
// key and dangling reference. It keeps going after a problem so one run shows them all;
// it does not parse TOML or read any secret.
import Foundation

/// A table of the inventory with the title used in messages, e.g. `[agents.web]`.
struct Section {
    var title: String
    var entries: [TOMLEntry]
    var position: TOMLPosition

    subscript(key: String) -> TOMLEntry? {
        entries.first { $0.key == key }
    }
}

struct InventoryReader {
    let file: String
    let folder: String
    let environment: [String: String]
    private(set) var diagnostics: [InventoryDiagnostic] = []
    /// `jump` in [defaults], applied to every host that names none.
    private var defaultJump: JumpSpec?
    /// [agents.*] tables refused for their name, so a host listing one is told to rename
    /// it in both places rather than to define a table that is already there.
    private var refusedAgentNames: Set<String> = []

    init(file: String, folder: String, environment: [String: String]) {
        self.file = file
        self.folder = folder
        self.environment = environment
    }

    static let topKeys = ["version", "defaults", "buildkite", "tokens", "ssh_keys", "agents",
                          "hosts"]
    static let defaultsKeys = [
        "user", "port", "identity_file", "identity_passphrase", "ssh_agent", "known_hosts",
        "module_dir", "secret_dir", "parallel", "rebuild_command", "connect_timeout",
        "command_timeout", "rebuild_timeout", "verify_timeout", "lock_timeout", "jump",
    ]
    static let buildkiteKeys = ["org", "api_url", "api_token", "ca_file"]
    static let secretKeys = ["file", "env", "command"]
    static let agentKeys = ["token", "ssh_key", "tags", "runtime_packages", "extra_config",
                            "hooks", "package", "name", "confinement", "public",
                            "allowed_uris"]
    static let hostKeys = ["name", "address", "port", "user", "agents", "tags", "groups",
                           "rebuild_command", "jump"]
    /// Keys people reach for when they mean to paste the secret itself.
    static let inlineSecretKeys = ["value", "token", "secret", "password", "passphrase",
                                   "key", "text", "data", "content", "literal", "string"]

    // MARK: Whole file

    mutating func read(root: TOMLValue, absolutePath: String,
                       contentHash: String) -> Inventory? {
        guard case .table(let entries, _) = root else { return nil }
        let top = Section(title: "the top level", entries: entries,
                          position: TOMLPosition(line: 1, column: 1))
        checkKeys(top, allowed: Self.topKeys)
        readVersion(top)

        let defaults = readDefaults(top["defaults"])
        let buildkite = readBuildkite(top["buildkite"])
        let tokens = readSecretTable(top["tokens"], kind: "token", table: "tokens")
        let sshKeys = readSecretTable(top["ssh_keys"], kind: "SSH key", table: "ssh_keys")
        // References are checked against every declared name, so a token whose source
        // is broken gets one error, not a second "no such token" at each agent.
        let agents = readAgents(top["agents"], tokens: declaredNames(top["tokens"]),
                                sshKeys: declaredNames(top["ssh_keys"]))
        let hosts = readHosts(top["hosts"], defaults: defaults, agents: agents)
        return Inventory(path: absolutePath, defaults: defaults, buildkite: buildkite,
                         tokens: tokens, sshKeys: sshKeys, agents: agents, hosts: hosts,
                         contentHash: contentHash)
    }

    private func declaredNames(_ entry: TOMLEntry?) -> Set<String> {
        guard case .table(let entries, _)? = entry?.value else { return [] }
        return Set(entries.map(\.key))
    }

    private mutating func readVersion(_ top: Section) {
        guard let entry = top["version"] else {
            let version = InventoryLoader.schemaVersion
            report(top.position, "missing 'version'; add version = \(version) as the first line")
            return
        }
        guard case .integer(let version, let at) = entry.value else {
            wrongType(entry, in: top, expected: "an integer", example: "version = 1")
            return
        }
        if version != Int64(InventoryLoader.schemaVersion) {
            report(at, "unsupported inventory version \(version); this bkfleet reads version "
                + "\(InventoryLoader.schemaVersion)")
        }
    }

    // MARK: [defaults]

    private mutating func readDefaults(_ entry: TOMLEntry?) -> FleetDefaults {
        var defaults = FleetDefaults(knownHosts: "")
        var knownHostsGiven = false
        let section = entry.flatMap { self.section($0, title: "[defaults]") }
        if let section = section {
            checkKeys(section, allowed: Self.defaultsKeys)
            if let (user, at) = string(section, "user", example: "user = \"deploy\"") {
                if let problem = Names.userNameProblem(user) {
                    report(at, "invalid user name in [defaults]: \(problem)")
                } else {
                    defaults.user = user
                }
            }
            if let port = port(section) { defaults.port = port }
            if let (path, at) = string(section, "identity_file",
                                       example: "identity_file = \"~/.ssh/id_ed25519\"") {
                defaults.identityFile = resolvePath(path, at: at, key: "identity_file")
            }
            if let found = section["identity_passphrase"] {
                defaults.identityPassphrase = secretSource(
                    found.value, title: "'identity_passphrase' in [defaults]",
                    key: "identity_passphrase")
            }
            if let (agent, _) = bool(section, "ssh_agent", example: "ssh_agent = true") {
                defaults.useAgent = agent
            }
            if let (path, at) = string(section, "known_hosts",
                                       example: "known_hosts = \"~/.ssh/known_hosts\"") {
                knownHostsGiven = true
                defaults.knownHosts = resolvePath(path, at: at, key: "known_hosts") ?? ""
            }
            if let dir = hostDirectory(section, "module_dir") { defaults.moduleDir = dir }
            if let dir = hostDirectory(section, "secret_dir") {
                if dir == "/nix/store" || dir.hasPrefix("/nix/store/") {
                    report(section["secret_dir"]!.value.position,
                           "secret_dir must not be in /nix/store: everything there is "
                           + "world-readable; use e.g. /var/lib/bkfleet/secrets")
                } else {
                    defaults.secretDir = dir
                }
            }
            if let (parallel, at) = integer(section, "parallel", example: "parallel = 50") {
                if parallel < 1 {
                    report(at, "parallel must be at least 1 (the number of hosts worked on "
                        + "at once)")
                } else {
                    defaults.parallel = Int(clamping: parallel)
                }
            }
            if let command = command(section, "rebuild_command") {
                defaults.rebuildCommand = command
            }
            if let found = section["jump"] {
                defaultJump = jumpSpec(found, in: section, user: defaults.user)
            }
            let timeouts: [(String, WritableKeyPath<FleetDefaults, Double>)] = [
                ("connect_timeout", \.connectTimeout), ("command_timeout", \.commandTimeout),
                ("rebuild_timeout", \.rebuildTimeout), ("verify_timeout", \.verifyTimeout),
                ("lock_timeout", \.lockTimeout),
            ]
            for (key, field) in timeouts {
                if let seconds = seconds(section, key) { defaults[keyPath: field] = seconds }
            }
            if defaults.secretDir.hasPrefix(defaults.moduleDir + "/")
                || defaults.secretDir == defaults.moduleDir,
               let dirEntry = section["secret_dir"] ?? section["module_dir"] {
                report(dirEntry.value.position, "secret_dir must not be inside module_dir: "
                    + "Nix reads the module directory and could copy secrets into the store")
            }
            if defaults.identityFile != nil, defaults.useAgent {
                report(section["ssh_agent"]!.value.position, "identity_file and ssh_agent = "
                    + "true are alternatives; keep one of them")
            }
            if let found = section["identity_passphrase"], defaults.useAgent {
                report(found.keyPosition, "identity_passphrase only applies to identity_file;"
                    + " remove it when ssh_agent = true")
            }
        }

        // The two defaults that live in the user's home directory.
        let at = section?.position ?? TOMLPosition(line: 1, column: 1)
        if !knownHostsGiven {
            defaults.knownHosts = resolvePath("~/.ssh/known_hosts", at: at,
                                              key: "known_hosts") ?? ""
        }
        if defaults.identityFile == nil, !defaults.useAgent,
           section?["identity_file"] == nil {
            defaults.identityFile = resolvePath("~/.ssh/id_ed25519", at: at,
                                                key: "identity_file")
        }
        return defaults
    }

    // MARK: [buildkite]

    private mutating func readBuildkite(_ entry: TOMLEntry?) -> BuildkiteAPI? {
        guard let entry = entry, let section = section(entry, title: "[buildkite]") else {
            return nil
        }
        checkKeys(section, allowed: Self.buildkiteKeys)
        var org: String?
        if let (slug, at) = string(section, "org", example: "org = \"my-org\"") {
            if let bad = Names.controlCharacter(in: slug) {
                report(at, "invalid org in [buildkite]: it contains \(bad)")
            } else if slug.isEmpty || !slug.unicodeScalars.allSatisfy({
                ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-"
            }) {
                report(at, "invalid org in [buildkite]: write the organization's slug as in "
                    + "its URL (lowercase letters, digits and '-'), e.g. org = \"my-org\"")
            } else {
                org = slug
            }
        } else if section["org"] == nil {
            missing(section, "org", example: "org = \"my-org\"")
        }

        var url = "https://api.buildkite.com"
        if let (text, at) = string(section, "api_url",
                                   example: "api_url = \"https://api.buildkite.com\"") {
            if let normalized = apiURL(text, at: at) { url = normalized }
        }

        var token: SecretSource?
        if let found = section["api_token"] {
            token = secretSource(found.value, title: "'api_token' in [buildkite]",
                                 key: "api_token")
        } else {
            missing(section, "api_token", example: "api_token = { env = \"BUILDKITE_API_TOKEN\" }")
        }

        var caFile: String?
        if let (path, at) = string(section, "ca_file", example: "ca_file = \"ca.pem\"") {
            caFile = resolvePath(path, at: at, key: "ca_file")
        }
        guard let org = org, let token = token else { return nil }
        return BuildkiteAPI(org: org, url: url, token: token, caFile: caFile,
                            location: location(section.position))
    }

    /// Accepts `https://host[:port][/path]` (or http for a local stand-in); drops a
    /// trailing `/` and `/v2`, since bkfleet adds the API version itself.
    private mutating func apiURL(_ text: String, at: TOMLPosition) -> String? {
        let lower = text.lowercased()
        guard lower.hasPrefix("https://") || lower.hasPrefix("http://") else {
            report(at, "api_url must start with https://, e.g. "
                + "api_url = \"https://api.buildkite.com\"")
            return nil
        }
        if text.unicodeScalars.contains(where: { Names.isControl($0) || $0 == " " }) {
            report(at, "api_url must not contain spaces or control characters")
            return nil
        }
        var url = text
        while url.hasSuffix("/") { url.removeLast() }
        if url.hasSuffix("/v2") { url.removeLast(3) }
        while url.hasSuffix("/") { url.removeLast() }
        return url
    }

    // MARK: [tokens.*] and [ssh_keys.*]

    private mutating func readSecretTable(_ entry: TOMLEntry?, kind: String,
                                          table: String) -> [String: NamedSecret] {
        guard let entry = entry, let section = section(entry, title: "[\(table)]") else {
            return [:]
        }
        var result: [String: NamedSecret] = [:]
        for item in section.entries {
            if let problem = Names.labelProblem(item.key) {
                report(item.keyPosition, "invalid \(kind) name \(quoted(item.key)): \(problem)")
                continue
            }
            let title = "[\(table).\(item.key)]"
            if case .string = item.value {
                report(item.value.position, "\(kind) '\(item.key)' is written inline; a secret"
                    + " never goes in the inventory. Write \(title) with file = \"path\", "
                    + "env = \"NAME\" or command = \"...\" instead")
                continue
            }
            // Tokens may also be API-managed (`api`, `id`: see readTokenAPI).
            var value = item.value
            var api: TokenAPI?
            var apiID: String?
            var managed = false
            if table == "tokens", case .table(let entries, let position) = item.value {
                let extra = entries.filter { $0.key == "api" || $0.key == "id" }
                if !extra.isEmpty {
                    let rest = entries.filter { $0.key != "api" && $0.key != "id" }
                    value = .table(rest, position)
                    (api, apiID, managed) = readTokenAPI(extra, title: title)
                    if managed && !rest.contains(where: { Self.secretKeys.contains($0.key) })
                        && !rest.contains(where: { Self.inlineSecretKeys.contains($0.key) }) {
                        for entry in rest { unknownKey(entry, in: Section(
                            title: title, entries: rest, position: position),
                            allowed: Self.secretKeys + ["api", "id"]) }
                        result[item.key] = NamedSecret(name: item.key, source: .apiStore,
                                                       location: location(item.keyPosition),
                                                       api: api, apiID: apiID)
                        continue
                    }
                }
            }
            guard let source = secretSource(value, title: title, key: nil) else {
                continue
            }
            result[item.key] = NamedSecret(name: item.key, source: source,
                                           location: location(item.keyPosition),
                                           api: api, apiID: apiID)
        }
        return result
    }

    /// `api = { cluster = "...", store = "path" }` (or `store_read`/`store_write`
    /// commands) and `id = "..."` of a `[tokens.NAME]` section. Returns whether `api`
    /// was given at all, so a broken one does not also draw "no source" errors.
    private mutating func readTokenAPI(_ entries: [TOMLEntry], title: String)
        -> (TokenAPI?, String?, Bool) {
        var api: TokenAPI?
        var apiID: String?
        var managed = false
        for entry in entries {
            if entry.key == "id" {
                guard case .string(let text, let at) = entry.value else {
                    report(entry.value.position, "'id' in \(title): expected a string, e.g. "
                        + "id = \"b6001416-0e4d-4a6d-a5a2-e4e3e4bc5d2b\"")
                    continue
                }
                if text.isEmpty || text.unicodeScalars.contains(where: {
                    Names.isControl($0) || $0 == " " || $0 == "/" }) {
                    report(at, "'id' in \(title) must be the token's API id (no spaces or "
                        + "'/'), as Buildkite lists it under the cluster's agent tokens")
                } else {
                    apiID = text
                }
                continue
            }
            managed = true
            guard case .table(let fields, let position) = entry.value else {
                report(entry.value.position, "'api' in \(title): expected a table, e.g. "
                    + "api = { cluster = \"CLUSTER-UUID\", store = \"secrets/ci.json\" }")
                continue
            }
            let section = Section(title: "'api' in \(title)", entries: fields,
                                  position: position)
            checkKeys(section, allowed: ["cluster", "store", "store_read", "store_write"])
            let cluster = string(section, "cluster", example: "cluster = \"CLUSTER-UUID\"")
            if cluster == nil && section["cluster"] == nil {
                missing(section, "cluster", example: "cluster = \"CLUSTER-UUID\"")
            }
            let file = string(section, "store", example: "store = \"secrets/ci.json\"")
                .flatMap { resolvePath($0.0, at: $0.1, key: "store") }
            let reader = command(section, "store_read")
            let writer = command(section, "store_write")
            var store: TokenStoreLocation?
            if let file {
                if reader != nil || writer != nil {
                    report(position, "\(section.title) gives both store and store_read/"
                        + "store_write; keep one way of storing the token")
                } else {
                    store = .file(path: file)
                }
            } else if let reader, let writer {
                store = .commands(read: reader, write: writer)
            } else if section["store"] == nil {
                report(position, "\(section.title) says nowhere to keep the token (Buildkite "
                    + "shows a new token's value only once); add store = \"path\" or "
                    + "store_read = \"...\" and store_write = \"...\"")
            }
            if let (name, at) = cluster, let store {
                if name.isEmpty || name.unicodeScalars.contains(where: {
                    Names.isControl($0) || $0 == " " || $0 == "/" }) {
                    report(at, "cluster in \(section.title) must be the cluster's id (UUID)")
                } else {
                    api = TokenAPI(cluster: name, store: store)
                }
            }
        }
        return (api, apiID, managed)
    }

    /// A secret source: a table with exactly one of `file`, `env` or `command`.
    /// `key` is the key holding an inline table (`api_token`), nil for a named section.
    private mutating func secretSource(_ value: TOMLValue, title: String,
                                       key: String?) -> SecretSource? {
        let how = "file = \"path\", env = \"NAME\" or command = \"...\""
        guard case .table(let entries, let position) = value else {
            if case .string = value, let key = key {
                // Never echo the value: it is probably the secret itself.
                report(value.position, "\(title) is written inline; a secret never goes in "
                    + "the inventory. Write \(key) = { env = \"NAME\" } (or { file = \"path\" }"
                    + " or { command = \"...\" }) instead")
            } else {
                report(value.position, "\(title): expected a table with one of \(how), found "
                    + value.kindDescription)
            }
            return nil
        }
        let section = Section(title: title, entries: entries, position: position)
        var sources: [(TOMLEntry, SecretSource)] = []
        for entry in entries {
            switch entry.key {
            case "file", "env", "command":
                guard case .string(let text, let at) = entry.value else {
                    wrongType(entry, in: section, expected: "a string",
                              example: "\(entry.key) = \"...\"")
                    continue
                }
                if let source = secretField(entry.key, text, at: at) {
                    sources.append((entry, source))
                }
            case _ where Self.inlineSecretKeys.contains(entry.key):
                report(entry.keyPosition, "'\(entry.key)' in \(title) would put the secret "
                    + "itself in the inventory, which may be committed or shared; write \(how)"
                    + " instead")
            default:
                unknownKey(entry, in: section, allowed: Self.secretKeys)
            }
        }
        let given = entries.filter { Self.secretKeys.contains($0.key) }
        if given.isEmpty {
            if !entries.contains(where: { Self.inlineSecretKeys.contains($0.key) }) {
                report(position, "\(title) does not say where the secret comes from; "
                    + "write one of \(how)")
            }
            return nil
        }
        if given.count > 1 {
            report(given[1].keyPosition, "\(title) gives both '\(given[0].key)' and "
                + "'\(given[1].key)'; keep exactly one of file, env or command")
            return nil
        }
        return sources.first?.1
    }

    private mutating func secretField(_ key: String, _ text: String,
                                      at: TOMLPosition) -> SecretSource? {
        switch key {
        case "file":
            return resolvePath(text, at: at, key: "file").map { .file(path: $0) }
        case "env":
            let scalars = Array(text.unicodeScalars)
            let valid = !scalars.isEmpty
                && !("0"..."9").contains(scalars[0])
                && scalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic
                    || ("0"..."9").contains($0) || $0 == "_") }
            if !valid {
                report(at, "env must name an environment variable (letters, digits and '_',"
                    + " not starting with a digit), e.g. env = \"BUILDKITE_AGENT_TOKEN\"")
                return nil
            }
            return .environment(name: text)
        default:
            if text.trimmingCharacters(in: .whitespaces).isEmpty {
                report(at, "command is empty; write the shell command that prints the "
                    + "secret, e.g. command = \"pass show buildkite/token\"")
                return nil
            }
            if text.unicodeScalars.contains("\u{0}") {
                report(at, "command contains a NUL character, which no shell accepts")
                return nil
            }
            return .command(text)
        }
    }

    // MARK: [agents.*]

    private mutating func readAgents(_ entry: TOMLEntry?, tokens: Set<String>,
                                     sshKeys: Set<String>) -> [String: AgentProfile] {
        guard let entry = entry, let section = section(entry, title: "[agents]") else {
            return [:]
        }
        var result: [String: AgentProfile] = [:]
        for item in section.entries {
            if let problem = Names.agentNameProblem(item.key) {
                report(item.keyPosition, "invalid agent name \(quoted(item.key)): \(problem); "
                    + "use e.g. [agents.linux-x86]")
                refusedAgentNames.insert(item.key)
                continue
            }
            let title = "[agents.\(item.key)]"
            guard let agent = self.section(item, title: title) else { continue }
            checkKeys(agent, allowed: Self.agentKeys)
            var profile = AgentProfile(name: item.key, token: "",
                                       location: location(agent.position))

            if let (name, at) = string(agent, "token", example: "token = \"default\"") {
                profile.token = name
                if !tokens.contains(name) && Self.mayBeSecret(name) {
                    report(at, Self.pastedSecret("agent '\(item.key)'", key: "token",
                                                 table: "tokens"))
                } else if !tokens.contains(name) {
                    report(at, "agent '\(item.key)' uses token \(quoted(name)), but there is "
                        + "no [tokens.\(name)]" + DidYouMean.hint(for: name,
                                                                   among: Array(tokens))
                        + "; define it or fix the name")
                }
            } else if agent["token"] == nil {
                missing(agent, "token", example: "token = \"default\"")
            }
            if let (name, at) = string(agent, "ssh_key", example: "ssh_key = \"deploy\"") {
                profile.sshKey = name
                if !sshKeys.contains(name) && Self.mayBeSecret(name) {
                    report(at, Self.pastedSecret("agent '\(item.key)'", key: "ssh_key",
                                                 table: "ssh_keys"))
                } else if !sshKeys.contains(name) {
                    report(at, "agent '\(item.key)' uses ssh_key \(quoted(name)), but there is "
                        + "no [ssh_keys.\(name)]" + DidYouMean.hint(for: name,
                                                                     among: Array(sshKeys))
                        + "; define it or fix the name")
                }
            }
            if let tags = tags(agent) { profile.tags = tags }
            if let packages = stringArray(agent, "runtime_packages",
                                          example: "runtime_packages = [\"git\", \"nix\"]") {
                var names: [String] = []
                for (name, at) in packages {
                    if let problem = Names.nixAttributeProblem(name) {
                        report(at, "invalid package \(quoted(name)) in runtime_packages: "
                            + "\(problem); write an attribute under pkgs, e.g. \"gnutar\"")
                    } else {
                        names.append(name)
                    }
                }
                profile.runtimePackages = names
            }
            if let text = script(agent, "extra_config") { profile.extraConfig = text }
            profile.hooks = hooks(agent)
            if let (name, at) = string(agent, "package",
                                       example: "package = \"buildkite-agent\"") {
                if let problem = Names.nixAttributeProblem(name) {
                    report(at, "invalid package \(quoted(name)): \(problem); write an attribute"
                        + " under pkgs, e.g. package = \"buildkite-agent\"")
                } else {
                    profile.package = name
                }
            }
            if let (name, at) = string(agent, "name", example: "name = \"%hostname-ci\"") {
                if let bad = Names.controlCharacter(in: name) {
                    report(at, "invalid name in \(title): it contains \(bad)")
                } else if name.trimmingCharacters(in: .whitespaces).isEmpty {
                    report(at, "name in \(title) is empty; remove it to keep the default")
                } else {
                    profile.displayName = name
                }
            }
            if let (confined, _) = bool(agent, "confinement", example: "confinement = true") {
                profile.confinement = confined
            }
            readPublicHardening(agent, into: &profile)
            result[item.key] = profile
        }
        return result
    }

    /// `public = true` and `allowed_uris`: the hardening for builders of public
    /// repositories. A public agent must be confined, and its extra_config must not
    /// set the switches this setting owns.
    private mutating func readPublicHardening(_ agent: Section, into profile: inout AgentProfile) {
        if let (flag, at) = bool(agent, "public", example: "public = true") {
            profile.publicBuilds = flag
            if flag && !profile.confinement {
                report(at, "\(agent.title) sets public = true with confinement = false; a "
                    + "builder of public repositories must run confined: remove "
                    + "confinement = false")
            }
        }
        if let uris = stringArray(agent, "allowed_uris",
                                  example: "allowed_uris = [\"https://github.com/\"]") {
            if !profile.publicBuilds, let first = uris.first {
                report(first.1, "allowed_uris in \(agent.title) only applies with "
                    + "public = true; add public = true or remove allowed_uris")
            }
            for (uri, at) in uris {
                if uri.isEmpty || uri.unicodeScalars.contains(where: {
                    $0.properties.isWhitespace || $0.value < 0x20 || $0.value == 0x7F }) {
                    report(at, "invalid entry \(quoted(uri)) in allowed_uris of "
                        + "\(agent.title): write one URI prefix without spaces, e.g. "
                        + "\"https://github.com/\"")
                } else {
                    profile.allowedURIs.append(uri)
                }
            }
        }
        guard profile.publicBuilds, let entry = agent["extra_config"],
              case .string(let text, let at) = entry.value else { return }
        for line in text.split(separator: "\n") {
            let key = line.split(separator: "=", maxSplits: 1).first
                .map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            if ModuleRenderer.publicAgentSettings.contains(key) {
                report(at, "extra_config in \(agent.title) sets \(key), which public = true "
                    + "sets to true; remove that line")
            }
        }
    }

    private mutating func hooks(_ agent: Section) -> [String: String] {
        guard let entry = agent["hooks"] else { return [:] }
        guard case .table(let entries, let position) = entry.value else {
            wrongType(entry, in: agent, expected: "a table",
                      example: "hooks.environment = \"export FOO=1\"")
            return [:]
        }
        let hooks = Section(title: String(agent.title.dropLast()) + ".hooks]", entries: entries,
                            position: position)
        var result: [String: String] = [:]
        for item in entries {
            guard Names.agentHooks.contains(item.key) else {
                report(item.keyPosition, "unknown hook \(quoted(item.key)) in \(hooks.title)"
                    + DidYouMean.hint(for: item.key, among: Names.agentHooks)
                    + "; the agent runs only: " + Names.agentHooks.joined(separator: ", "))
                continue
            }
            if let text = script(hooks, item.key) { result[item.key] = text }
        }
        return result
    }

    // MARK: [[hosts]]

    private mutating func readHosts(_ entry: TOMLEntry?, defaults: FleetDefaults,
                                    agents: [String: AgentProfile]) -> [Host] {
        guard let entry = entry else { return [] }
        guard case .array(let items, _) = entry.value else {
            report(entry.value.position, "'hosts' must be written as [[hosts]] sections "
                + "(an array of tables), found \(entry.value.kindDescription)")
            return []
        }
        var hosts: [Host] = []
        var names: [String: TOMLPosition] = [:]
        var endpoints: [String: TOMLPosition] = [:]
        var jumps: [JumpSpec?] = []
        for item in items {
            guard case .table(let entries, let position) = item else {
                report(item.position, "each entry of 'hosts' must be a table ([[hosts]]), "
                    + "found \(item.kindDescription)")
                continue
            }
            let host = Section(title: "[[hosts]]", entries: entries, position: position)
            checkKeys(host, allowed: Self.hostKeys)
            var ok = true

            var name = ""
            if let (text, at) = string(host, "name", example: "name = \"builder-01\"") {
                if let problem = Names.hostNameProblem(text) {
                    ok = false
                    report(at, "invalid host name \(quoted(text)): \(problem)")
                } else if let first = names[text.lowercased()] {
                    ok = false
                    report(at, "host name '\(text)' is already used by the host at line "
                        + "\(first.line); host names must be unique")
                } else {
                    names[text.lowercased()] = at
                    name = text
                }
            } else {
                ok = false
                if host["name"] == nil { missing(host, "name", example: "name = \"builder-01\"") }
            }
            let label = name.isEmpty ? "this host" : "host '\(name)'"

            var address = ""
            if let (text, at) = string(host, "address", example: "address = \"10.0.0.5\"") {
                if let problem = Names.addressProblem(text) {
                    ok = false
                    report(at, "invalid address \(quoted(text)) for \(label): \(problem)")
                } else {
                    address = text
                }
            } else {
                ok = false
                if host["address"] == nil {
                    missing(host, "address", example: "address = \"10.0.0.5\"")
                }
            }
            let port = self.port(host) ?? defaults.port
            if !address.isEmpty, let at = host["address"]?.value.position {
                let endpoint = "\(address.lowercased()):\(port)"
                if let first = endpoints[endpoint] {
                    ok = false
                    report(at, "\(label) has the same address and port (\(address):\(port)) as "
                        + "the host at line \(first.line); each host needs its own")
                } else {
                    endpoints[endpoint] = at
                }
            }

            var user = defaults.user
            if let (text, at) = string(host, "user", example: "user = \"deploy\"") {
                if let problem = Names.userNameProblem(text) {
                    report(at, "invalid user name \(quoted(text)) for \(label): \(problem)")
                } else {
                    user = text
                }
            }

            var agentNames: [String] = []
            if let listed = stringArray(host, "agents", example: "agents = [\"linux\"]") {
                for (agent, at) in listed {
                    if agents[agent] == nil, let problem = Names.agentNameProblem(agent) {
                        ok = false
                        let table = refusedAgentNames.contains(agent)
                            ? " and in its [agents.\(agent)] table" : ""
                        report(at, "\(label) lists agent \(quoted(agent)), a name an agent "
                            + "cannot have (\(problem)); rename it here\(table), e.g. to "
                            + "'linux-x86'")
                    } else if agents[agent] == nil {
                        ok = false
                        report(at, "\(label) lists agent \(quoted(agent)), but there is "
                            + "no [agents.\(agent)]"
                            + DidYouMean.hint(for: agent, among: Array(agents.keys))
                            + "; define it or fix the name")
                    } else if agentNames.contains(agent) {
                        report(at, "\(label) lists agent '\(agent)' twice; list it once")
                    } else {
                        agentNames.append(agent)
                    }
                }
            } else if host["agents"] == nil {
                ok = false
                missing(host, "agents", example: "agents = [\"linux\"] (or [] for none)")
            }

            let tags = self.tags(host) ?? [:]
            var groups: [String] = []
            if let listed = stringArray(host, "groups", example: "groups = [\"linux\"]") {
                for (group, at) in listed {
                    if let problem = Names.labelProblem(group) {
                        report(at, "invalid group name \(quoted(group)): \(problem)")
                    } else if !groups.contains(group) {
                        groups.append(group)
                    }
                }
            }
            let rebuild = command(host, "rebuild_command") ?? defaults.rebuildCommand

            let jump = host["jump"].map { jumpSpec($0, in: host, user: defaults.user) }
                ?? defaultJump
            if ok {
                hosts.append(Host(name: name, address: address, port: port, user: user,
                                  agents: agentNames, tags: tags, groups: groups,
                                  rebuildCommand: rebuild, location: location(position)))
                jumps.append(jump)
            }
        }
        resolveJumps(&hosts, jumps)
        return hosts
    }

    // MARK: Typed fields

    private mutating func section(_ entry: TOMLEntry, title: String) -> Section? {
        guard case .table(let entries, let position) = entry.value else {
            report(entry.value.position, "\(title) must be a table, found "
                + "\(entry.value.kindDescription); write it as a \(title) section")
            return nil
        }
        return Section(title: title, entries: entries, position: position)
    }

    private mutating func string(_ section: Section, _ key: String,
                                 example: String) -> (String, TOMLPosition)? {
        guard let entry = section[key] else { return nil }
        guard case .string(let text, let at) = entry.value else {
            wrongType(entry, in: section, expected: "a string", example: example)
            return nil
        }
        return (text, at)
    }

    private mutating func integer(_ section: Section, _ key: String,
                                  example: String) -> (Int64, TOMLPosition)? {
        guard let entry = section[key] else { return nil }
        guard case .integer(let number, let at) = entry.value else {
            wrongType(entry, in: section, expected: "an integer", example: example)
            return nil
        }
        return (number, at)
    }

    private mutating func bool(_ section: Section, _ key: String,
                               example: String) -> (Bool, TOMLPosition)? {
        guard let entry = section[key] else { return nil }
        guard case .bool(let flag, let at) = entry.value else {
            wrongType(entry, in: section, expected: "a boolean (true or false)",
                      example: example)
            return nil
        }
        return (flag, at)
    }

    private mutating func port(_ section: Section) -> Int? {
        guard let (port, at) = integer(section, "port", example: "port = 22") else {
            return nil
        }
        guard (1...65535).contains(port) else {
            report(at, "port \(port) in \(section.title) is out of range; use 1 to 65535")
            return nil
        }
        return Int(port)
    }

    private mutating func seconds(_ section: Section, _ key: String) -> Double? {
        guard let entry = section[key] else { return nil }
        let value: Double
        switch entry.value {
        case .integer(let number, _): value = Double(number)
        case .float(let number, _): value = number
        default:
            wrongType(entry, in: section, expected: "a number of seconds",
                      example: "\(key) = 30")
            return nil
        }
        guard value.isFinite, value > 0 else {
            report(entry.value.position, "\(key) in \(section.title) must be a positive number"
                + " of seconds, e.g. \(key) = 30")
            return nil
        }
        return value
    }

    /// A single-line shell command, e.g. `rebuild_command`.
    private mutating func command(_ section: Section, _ key: String) -> String? {
        guard let (text, at) = string(section, key,
                                      example: "\(key) = \"nixos-rebuild switch\"") else {
            return nil
        }
        if let bad = Names.controlCharacter(in: text) {
            report(at, "\(key) in \(section.title) contains \(bad); write one line")
            return nil
        }
        if text.trimmingCharacters(in: .whitespaces).isEmpty {
            report(at, "\(key) in \(section.title) is empty; remove it to keep the default")
            return nil
        }
        return text
    }

    /// Multi-line text (scripts, extra config): newlines and tabs only, no other controls.
    private mutating func script(_ section: Section, _ key: String) -> String? {
        guard let (text, at) = string(section, key, example: "\(key) = '''...'''") else {
            return nil
        }
        let stripped = text.replacingOccurrences(of: "\n", with: "")
            .replacingOccurrences(of: "\t", with: "")
        if let bad = Names.controlCharacter(in: stripped) {
            report(at, "\(key) in \(section.title) contains \(bad); only newlines and tabs "
                + "are allowed")
            return nil
        }
        return text
    }

    private mutating func hostDirectory(_ section: Section, _ key: String) -> String? {
        guard let (path, at) = string(section, key, example: "\(key) = \"/var/lib/x\"") else {
            return nil
        }
        if let problem = Names.hostDirectoryProblem(path) {
            report(at, "invalid \(key) \(quoted(path)): \(problem)")
            return nil
        }
        return path
    }

    private mutating func stringArray(_ section: Section, _ key: String,
                                      example: String) -> [(String, TOMLPosition)]? {
        guard let entry = section[key] else { return nil }
        guard case .array(let items, _) = entry.value else {
            wrongType(entry, in: section, expected: "an array of strings", example: example)
            return nil
        }
        var result: [(String, TOMLPosition)] = []
        for item in items {
            guard case .string(let text, let at) = item else {
                report(item.position, "'\(key)' in \(section.title): expected strings, found "
                    + "\(item.kindDescription) (write e.g. \(example))")
                continue
            }
            result.append((text, at))
        }
        return result
    }

    private mutating func tags(_ section: Section) -> [String: String]? {
        guard let entry = section["tags"] else { return nil }
        guard case .table(let entries, _) = entry.value else {
            wrongType(entry, in: section, expected: "a table of strings",
                      example: "tags = { queue = \"default\" }")
            return nil
        }
        var result: [String: String] = [:]
        for item in entries {
            if let problem = Names.tagKeyProblem(item.key) {
                report(item.keyPosition, "invalid tag name \(quoted(item.key)) in "
                    + "\(section.title): \(problem)")
                continue
            }
            guard case .string(let text, let at) = item.value else {
                report(item.value.position, "tag '\(item.key)' in \(section.title): expected a"
                    + " string, found \(item.value.kindDescription) (write e.g. "
                    + "\(item.key) = \"value\")")
                continue
            }
            if let problem = Names.tagValueProblem(text) {
                report(at, "invalid value for tag '\(item.key)' in \(section.title): \(problem)")
                continue
            }
            result[item.key] = text
        }
        return result
    }

    // MARK: Paths

    /// Expands `~/` with HOME and resolves relative paths against the inventory's folder.
    private mutating func resolvePath(_ raw: String, at: TOMLPosition, key: String) -> String? {
        if let bad = Names.controlCharacter(in: raw) {
            report(at, "\(key) contains \(bad); write a plain path")
            return nil
        }
        if raw.isEmpty {
            report(at, "\(key) is empty; write a path (relative paths start from the "
                + "inventory's folder)")
            return nil
        }
        if raw == "~" || raw.hasPrefix("~/") {
            guard let home = environment["HOME"], home.hasPrefix("/") else {
                report(at, "\(key) '\(raw)' needs HOME to expand '~', and HOME is not set; "
                    + "set HOME or write an absolute path")
                return nil
            }
            return PathRules.clean(home + "/" + raw.dropFirst())
        }
        if raw.hasPrefix("~") {
            report(at, "\(key) '\(raw)': only '~/' (your own home) is expanded; write an "
                + "absolute path")
            return nil
        }
        if raw.hasPrefix("/") { return PathRules.clean(raw) }
        return PathRules.clean(folder + "/" + raw)
    }

    // MARK: Reporting

    private mutating func checkKeys(_ section: Section, allowed: [String]) {
        for entry in section.entries where !allowed.contains(entry.key) {
            unknownKey(entry, in: section, allowed: allowed)
        }
    }

    private mutating func unknownKey(_ entry: TOMLEntry, in section: Section,
                                     allowed: [String]) {
        var hint = DidYouMean.hint(for: entry.key, among: allowed)
        if hint.isEmpty, section.title == "the top level" {
            // A setting written above the first section header lands at the top level.
            if Self.defaultsKeys.contains(entry.key) {
                hint = " (it belongs in [defaults])"
            } else if Self.hostKeys.contains(entry.key) {
                hint = " (it belongs in a [[hosts]] section)"
            }
        }
        let what = hint.isEmpty
            ? "; valid keys: " + allowed.joined(separator: ", ")
            : "; fix the spelling or remove it"
        report(entry.keyPosition, "unknown key \(quoted(entry.key)) in \(section.title)"
            + hint + what)
    }

    private mutating func wrongType(_ entry: TOMLEntry, in section: Section,
                                    expected: String, example: String) {
        report(entry.value.position, "'\(entry.key)' in \(section.title): expected \(expected), "
            + "found \(entry.value.kindDescription) (write e.g. \(example))")
    }

    private mutating func missing(_ section: Section, _ key: String, example: String) {
        report(section.position, "\(section.title) is missing '\(key)'; add e.g. \(example)")
    }

    private mutating func report(_ at: TOMLPosition, _ message: String) {
        // Messages quote inventory text; a control character there must not break the
        // one-line message or reach the terminal raw (found by Tests/Fuzz).
        diagnostics.append(InventoryDiagnostic(location: location(at),
                                               message: TOML.printable(message)))
    }

    private func location(_ at: TOMLPosition) -> SourceLocation {
        SourceLocation(file: file, line: at.line, column: at.column)
    }

    /// A name from the file, quoted for a message with control characters made visible.
    private func quoted(_ text: String) -> String {
        var out = "'"
        for scalar in text.unicodeScalars {
            if Names.isControl(scalar) {
                out += "\\u{" + String(scalar.value, radix: 16) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out + "'"
    }
}

// MARK: - Jump hosts

/// A `jump` as written: the name of another [[hosts]] entry (resolved once every host is
/// read), or an inline `{ address, port, user }`.
enum JumpSpec {
    case named(String, TOMLPosition)
    case inline(JumpHost)
}

extension InventoryReader {
    static let jumpKeys = ["address", "port", "user"]

    fileprivate mutating func jumpSpec(_ entry: TOMLEntry, in section: Section,
                                       user defaultUser: String) -> JumpSpec? {
        let example = "jump = \"builder-01\" or jump = { address = \"10.0.0.2\" }"
        switch entry.value {
        case .string(let name, let at):
            return .named(name, at)
        case .table(let entries, let position):
            let table = Section(title: "'jump' in \(section.title)", entries: entries,
                                position: position)
            checkKeys(table, allowed: Self.jumpKeys)
            guard let (address, at) = string(table, "address",
                                             example: "address = \"10.0.0.2\"") else {
                if table["address"] == nil {
                    missing(table, "address", example: "address = \"10.0.0.2\"")
                }
                return nil
            }
            if let problem = Names.addressProblem(address) {
                report(at, "invalid jump address \(quoted(address)): \(problem)")
                return nil
            }
            var user = defaultUser
            if let (text, at) = string(table, "user", example: "user = \"deploy\"") {
                if let problem = Names.userNameProblem(text) {
                    report(at, "invalid jump user \(quoted(text)): \(problem)")
                    return nil
                }
                user = text
            }
            return .inline(JumpHost(name: address, address: address,
                                    port: port(table) ?? 22, user: user))
        default:
            wrongType(entry, in: section, expected: "a host name or a table", example: example)
            return nil
        }
    }

    /// Turns named jumps into the named host's address, port and user. A host is never its
    /// own jump (a fleet-wide jump skips the jump host itself), and a jump host must be
    /// reachable directly: chains are refused.
    fileprivate mutating func resolveJumps(_ hosts: inout [Host], _ specs: [JumpSpec?]) {
        func direct(_ index: Int) -> JumpSpec? {
            if case .named(let name, _)? = specs[index], name == hosts[index].name { return nil }
            return specs[index]
        }
        for index in hosts.indices {
            switch direct(index) {
            case nil:
                continue
            case .inline(let jump)?:
                hosts[index].jump = jump
            case .named(let name, let at)?:
                guard let target = hosts.firstIndex(where: { $0.name == name }) else {
                    report(at, "host '\(hosts[index].name)' jumps through '\(name)', which is "
                        + "not a [[hosts]] name"
                        + DidYouMean.hint(for: name, among: hosts.map(\.name))
                        + "; fix the name or write jump = { address = \"...\" }")
                    continue
                }
                if direct(target) != nil {
                    report(at, "host '\(hosts[index].name)' jumps through '\(name)', which "
                        + "itself has a jump; a jump host must be reachable directly (give "
                        + "'\(name)' jump = \"\(name)\" or remove its jump)")
                    continue
                }
                let via = hosts[target]
                hosts[index].jump = JumpHost(name: via.name, address: via.address,
                                             port: via.port, user: via.user)
            }
        }
    }

    /// A reference that cannot be a section name (too long, or with characters names
    /// never have) may be a token or key pasted in by mistake: it is not repeated.
    static func mayBeSecret(_ reference: String) -> Bool {
        reference.count > 40 || reference.unicodeScalars.contains { scalar in
            !(("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar)
              || ("0"..."9").contains(scalar) || "-_.".unicodeScalars.contains(scalar))
        }
    }

    static func pastedSecret(_ owner: String, key: String, table: String) -> String {
        "\(owner): \(key) = must name a [\(table).NAME] section, and this value does not "
            + "look like a name (it is not shown, in case it is the secret itself); write "
            + "\(key) = \"NAME\" and give [\(table).NAME] a file, env or command"
    }
}
