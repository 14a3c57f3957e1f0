// The commands: each parses its words, loads the inventory, calls the library and
// prints. No fleet logic here beyond choosing what to print and which exit code.
import BKFleet
import Foundation

/// INVENTORY argument, else $BKFLEET_INVENTORY, else ./inventory.toml.
func inventoryPath(_ arguments: Arguments) throws -> String {
    if arguments.positional.count > 1 {
        throw UsageError(description: "expected one inventory, got "
                         + arguments.positional.joined(separator: " "))
    }
    if let given = arguments.positional.first { return given }
    if let fromEnv = ProcessInfo.processInfo.environment["BKFLEET_INVENTORY"],
       !fromEnv.isEmpty { return fromEnv }
    guard FileManager.default.fileExists(atPath: "inventory.toml") else {
        // Name the command that was run, so the hint can be pasted as it is.
        let command = CommandLine.arguments.dropFirst().first ?? "plan"
        throw UsageError(description: "no inventory given, BKFLEET_INVENTORY is not set, and "
                         + "there is no ./inventory.toml; pass a path, e.g. "
                         + "'bkfleet \(command) inventory/demo.toml', or export "
                         + "BKFLEET_INVENTORY=inventory/demo.toml")
    }
    return "inventory.toml"
}

func useColor(_ arguments: Arguments) -> Bool {
    !arguments.flags.contains("no-color")
        && ProcessInfo.processInfo.environment["NO_COLOR"] == nil
        && isatty(STDOUT_FILENO) == 1
}

/// The hosts a command works on: `--on SELECTION` (docs/fleet-scale.md), then this
/// process's shard (`--shard K/N`, else Buildkite's parallel-job variables).
func selectHosts(_ inventory: Inventory, _ arguments: Arguments,
                 environment: [String: String]) throws -> [BKFleet.Host] {
    do {
        var hosts = inventory.hosts
        if let on = arguments.options["on"] {
            hosts = try HostSelection(parsing: on).select(from: inventory)
        }
        if let shard = try Shard.resolve(option: arguments.options["shard"],
                                         environment: environment) {
            hosts = shard.select(hosts)
        }
        return hosts
    } catch let error as SelectionError {
        throw UsageError(description: error.description)
    }
}

/// A read-only run (plan, status) logs only what went wrong: its folder is removed when
/// it stayed empty. Returns whether it was kept.
func keepRunFolderIfLogged(_ runDirectory: String) -> Bool {
    let logs = (try? FileManager.default.contentsOfDirectory(atPath: runDirectory)) ?? []
    if logs.isEmpty { try? FileManager.default.removeItem(atPath: runDirectory) }
    return !logs.isEmpty
}

/// `--batch` and `--max-fail`, which only a real apply takes.
func rollout(_ arguments: Arguments) throws -> Rollout {
    do {
        return Rollout(
            batch: try arguments.options["batch"].map {
                try HostCount(parsing: $0, option: "batch", minimum: 1) },
            maxFail: try arguments.options["max-fail"].map {
                try HostCount(parsing: $0, option: "max-fail", minimum: 0) })
    } catch let error as SelectionError {
        throw UsageError(description: error.description)
    }
}

enum ApplyCommand {
    enum Mode { case apply, plan }

    static func run(_ words: [String], mode: Mode) throws -> ExitCode {
        let name = mode == .apply ? "apply" : "plan"
        let arguments = try Arguments.parse(
            words, command: name,
            flags: ["dry-run", "accept-new-host-keys", "no-rollback", "verbose", "no-color",
                    "detailed-exitcode", "json", "deep"],
            options: ["parallel", "on", "out", "shard", "batch", "max-fail"])
        if arguments.flags.contains("help") {
            print(mode == .apply ? Help.apply : Help.plan)
            return .success
        }
        let environment = ProcessInfo.processInfo.environment
        var options = RunOptions()
        let given = try inventoryPath(arguments)
        // An apply of a saved plan: the file holds the plan, which names its inventory.
        let saved = mode == .apply ? FileManager.default.contents(atPath: given)
            .flatMap(SavedPlan.decode) : nil
        let inventory = try InventoryLoader.load(path: saved?.inventoryPath ?? given,
                                                 environment: environment)
        var hosts = try selectHosts(inventory, arguments, environment: environment)
        if let saved {
            guard saved.inventorySHA256 == inventory.contentHash else {
                // The inventory is the wrong input here: exit 65 like any inventory error.
                throw InventoryError(diagnostics: [InventoryDiagnostic(
                    location: SourceLocation(file: inventory.path, line: 0, column: 0),
                    message: "changed since the plan \(given) was made (\(saved.createdAt); "
                        + "the plan records the file's SHA-256, so any edit, even a comment, "
                        + "voids it); nothing was changed. Make a new plan and review it.")])
            }
            options.approved = Dictionary(saved.hosts.map { ($0.name, $0) },
                                          uniquingKeysWith: { first, _ in first })
            let selected = hosts
            hosts = hosts.filter { options.approved?[$0.name] != nil }
            if hosts.isEmpty && !selected.isEmpty {
                throw UsageError(description: "none of the selected hosts ("
                                 + selected.map(\.name).prefix(5).joined(separator: ", ")
                                 + (selected.count > 5 ? ", ..." : "") + ") is in the plan "
                                 + "\(given), which covers "
                                 + saved.hosts.map(\.name).prefix(5).joined(separator: ", ")
                                 + (saved.hosts.count > 5 ? ", ..." : "")
                                 + "; nothing was changed")
            }
            let note = (options.dryRun ? "Checking the plan" : "Applying the plan")
                + " \(given) made \(saved.createdAt): \(saved.summary)"
            // With --json, stdout carries only JSON lines.
            if arguments.flags.contains("json") {
                FileHandle.standardError.write(Data((note + "\n").utf8))
            } else {
                print(note)
            }
        }
        options.dryRun = mode == .plan || arguments.flags.contains("dry-run")
        options.acceptNewHostKeys = arguments.flags.contains("accept-new-host-keys")
        options.noRollback = arguments.flags.contains("no-rollback")
        options.deep = arguments.flags.contains("deep")
        if options.deep && !options.dryRun {
            throw UsageError(description: "--deep goes with plan or apply --dry-run")
        }
        options.parallel = try arguments.int("parallel", atLeast: 1)
        let rolling = try rollout(arguments)
        if options.dryRun && rolling != Rollout() {
            throw UsageError(description: "--batch and --max-fail go with apply; a plan "
                             + "changes nothing, so it reads every selected host at once")
        }

        let renderer = ModuleRenderer(templates: try Templates.locate(environment: environment))
        let secrets = try RunSetup.readSecrets(for: hosts, inventory: inventory)
        let identity = try RunSetup.identity(for: inventory)
        let apiToken = try RunSetup.apiToken(for: inventory)
        // Before any connection: a secret pasted into a tag, hook or extra_config would
        // reach the host's world-readable Nix store (and a plan's diff).
        try BoundSecretCheck.refuse(
            hosts: hosts, inventory: inventory,
            known: BoundSecretCheck.known(secrets, apiToken: apiToken, identity: identity))
        // apply --json streams events; plan --json prints one document, so its events
        // stay off stdout.
        let view = EventView.choose(arguments, hosts: hosts.count,
                                    json: !options.dryRun && arguments.flags.contains("json"),
                                    quiet: options.dryRun && arguments.flags.contains("json"))
        let context = RunContext(
            inventory: inventory, renderer: renderer, secrets: secrets,
            identity: identity, options: options,
            registrations: RunSetup.registrations(for: inventory, apiToken: apiToken),
            events: view.sink,
            runDirectory: try RunSetup.runDirectory(for: inventory))

        let began = Date()
        view.start()
        let run = FleetRunner.run(hosts: hosts, context: context, rollout: rolling)
        view.stop()
        let reports = run.reports
        let color = useColor(arguments)
        if options.dryRun {
            let addresses = Dictionary(hosts.map { ($0.name, $0.address) },
                                       uniquingKeysWith: { first, _ in first })
            let document = SavedPlan(inventory: inventory, reports: reports,
                                     addresses: addresses)
            if let out = arguments.options["out"] {
                let data = try document.encoded()
                guard FileManager.default.createFile(atPath: out, contents: data,
                                                     attributes: [.posixPermissions: 0o600])
                else { throw UsageError(description: "cannot write the plan to \(out)") }
            }
            if arguments.flags.contains("json") {
                print(String(decoding: try document.encoded(), as: UTF8.self))
                return planExitCode(reports, detailed: arguments.flags.contains("detailed-exitcode"))
            }
            let code = printPlan(reports, hosts: hosts, inventory: inventory, color: color,
                                 detailed: arguments.flags.contains("detailed-exitcode"),
                                 scrub: context.scrub)
            if keepRunFolderIfLogged(context.runDirectory) {
                print("Logs: \(context.runDirectory)")
            }
            if let out = arguments.options["out"] {
                print("Saved the plan to \(out); apply exactly it with: bkfleet apply \(out)")
            }
            return code
        }
        if case .json(let sink) = view {
            for report in reports where !report.outcome.wasAttempted { sink.finished(report) }
            let failed = reports.contains { $0.outcome.isFailure || !$0.outcome.wasAttempted }
            let code: ExitCode = failed ? .hostsFailed : .success
            sink.summary(reports, seconds: Date().timeIntervalSince(began),
                         runDirectory: context.runDirectory, exitCode: code.rawValue)
            return code
        }
        return printApply(reports, hosts: hosts, context: context, color: color,
                          batches: rolling.batch == nil ? nil : run)
    }

    static func printPlan(_ reports: [HostReport], hosts: [BKFleet.Host], inventory: Inventory,
                          color: Bool, detailed: Bool,
                          scrub: @escaping (String) -> String = { $0 }) -> ExitCode {
        let printer = PlanPrinter(color: color, moduleDir: inventory.defaults.moduleDir,
                                  scrub: scrub)
        let addresses = Dictionary(uniqueKeysWithValues: hosts.map { ($0.name, $0.address) })
        for report in reports {
            let lines = printer.lines(for: report, address: addresses[report.host] ?? "")
            if !lines.isEmpty { print(lines.joined(separator: "\n") + "\n") }
            if case .failed(let step, let message) = report.outcome {
                print("FAILED \(report.host): cannot plan (at \(step.rawValue)): \(message)\n")
            }
        }
        print(PlanPrinter.summary(reports))
        return planExitCode(reports, detailed: detailed)
    }

    static func planExitCode(_ reports: [HostReport], detailed: Bool) -> ExitCode {
        if reports.contains(where: { $0.outcome.isFailure }) { return .hostsFailed }
        let pending = reports.contains { $0.plan.map { !$0.isEmpty } ?? false }
        return detailed && pending ? .changesPending : .success
    }

    static func printApply(_ reports: [HostReport], hosts: [BKFleet.Host], context: RunContext,
                           color: Bool, batches: FleetRun? = nil) -> ExitCode {
        func paint(_ text: String, _ code: String) -> String {
            color ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text
        }
        let width = reports.map(\.host.count).max() ?? 0
        for report in reports {
            let name = report.host.padding(toLength: width, withPad: " ", startingAt: 0)
            let time = String(format: "%.1fs", report.seconds)
            switch report.outcome {
            case .unchanged:
                print("\(paint("ok", "32"))      \(name)  unchanged, "
                      + "\(report.agents.filter(\.ok).count) agent(s) verified  (\(time))")
            case .changed:
                let plan = report.plan ?? HostPlan()
                var what: [String] = []
                if !plan.modules.isEmpty { what.append("\(plan.modules.count) module file(s)") }
                if !plan.secrets.isEmpty { what.append("\(plan.secrets.count) secret(s)") }
                if !plan.ownership.isEmpty { what.append("\(plan.ownership.count) owner fix(es)") }
                if report.rebuilt { what.append("rebuilt") }
                if what.isEmpty && !plan.units.isEmpty {
                    what.append("\(plan.units.count) unit(s) started or restarted")
                }
                print("\(paint("changed", "33")) \(name)  \(what.joined(separator: ", ")); "
                      + "\(report.agents.filter(\.ok).count) agent(s) verified  (\(time))")
            case .failed(let step, let message):
                print("\(paint("FAILED", "31"))  \(name)  at \(step.rawValue): "
                      + message.replacingOccurrences(of: "\n", with: "\n" + String(
                        repeating: " ", count: width + 10)))
            case .notAttempted(let reason):
                print("\(paint("skipped", "90")) \(name)  not attempted: \(reason)")
            }
            for agent in report.agents {
                print("        \(String(repeating: " ", count: width))  "
                      + "\(agent.ok ? "✓" : "✗") \(agent.agent): \(agent.detail)")
            }
            if case .changed = report.outcome {
                for agent in report.plan?.removedAgents ?? [] {
                    print("        \(String(repeating: " ", count: width))  "
                          + "- \(agent): stopped; module and secrets removed")
                }
            }
        }
        let failed = reports.filter { $0.outcome.isFailure }.count
        let changed = reports.filter { if case .changed = $0.outcome { return true }; return false }
        let skipped = reports.filter { !$0.outcome.wasAttempted }.count
        print("\nApply: \(reports.count) host(s), \(changed.count) changed, "
              + "\(reports.count - changed.count - failed - skipped) unchanged, \(failed) failed"
              + (skipped > 0 ? ", \(skipped) not attempted" : "")
              + ". Logs: \(context.runDirectory)")
        if let batches {
            print("Batches: \(batches.batchesRun) of \(batches.batches.count) ran"
                  + " (up to \(batches.batches.map(\.count).max() ?? 0) host(s) each)")
        }
        return failed > 0 || skipped > 0 ? .hostsFailed : .success
    }
}

enum CheckCommand {
    static func run(_ words: [String]) throws -> ExitCode {
        let arguments = try Arguments.parse(words, command: "check", flags: ["parse"],
                                            options: ["on", "shard"])
        if arguments.flags.contains("help") {
            print(Help.check)
            return .success
        }
        let environment = ProcessInfo.processInfo.environment
        let inventory = try InventoryLoader.load(path: try inventoryPath(arguments),
                                                 environment: environment)
        let renderer = ModuleRenderer(templates: try Templates.locate(environment: environment))
        let hosts = try selectHosts(inventory, arguments, environment: environment)
        var files = 0
        var modules: [String: [String: String]] = [:]
        for host in hosts {
            modules[host.name] = try renderer.render(host: host, inventory: inventory).files
            files += modules[host.name]!.count
        }
        let problems = RunSetup.sourceProblems(for: hosts, inventory: inventory,
                                               environment: environment)
        if !problems.isEmpty {
            FileHandle.standardError.write(Data((problems.joined(separator: "\n") + "\n").utf8))
            return .badInput
        }
        let selected = arguments.options["on"] == nil && hosts.count == inventory.hosts.count
            ? "" : "; selected \(hosts.count) ("
                + (hosts.isEmpty ? "none" : hosts.map(\.name).joined(separator: ", ")) + ")"
        print("\(inventory.path): OK: \(inventory.hosts.count) host(s), "
              + "\(inventory.agents.count) agent profile(s)\(selected), "
              + "\(files) module file(s) rendered.")
        if arguments.flags.contains("parse") {
            let parsed = try ParseCheckCommand.run(modules: modules, inventory: inventory,
                                                   environment: environment)
            return parsed ? .success : .badInput
        }
        return .success
    }
}

enum RenderCommand {
    static func run(_ words: [String]) throws -> ExitCode {
        let arguments = try Arguments.parse(words, command: "render", flags: [],
                                            options: ["host"])
        if arguments.flags.contains("help") {
            print(Help.render)
            return .success
        }
        guard let name = arguments.options["host"] else {
            throw UsageError(description: "render needs --host NAME")
        }
        let environment = ProcessInfo.processInfo.environment
        let inventory = try InventoryLoader.load(path: try inventoryPath(arguments),
                                                 environment: environment)
        guard let host = inventory.hosts.first(where: { $0.name == name }) else {
            let names = inventory.hosts.map(\.name)
            let near = names.min { editDistance($0, name) < editDistance($1, name) }
                .flatMap { editDistance($0, name) <= 3 ? " (did you mean '\($0)'?)" : nil }
            throw UsageError(description: "no host '\(name)' in \(inventory.path)\(near ?? ""); "
                             + "hosts: \(names.prefix(20).joined(separator: ", "))"
                             + (names.count > 20 ? ", …" : ""))
        }
        let renderer = ModuleRenderer(templates: try Templates.locate(environment: environment))
        let modules = try renderer.render(host: host, inventory: inventory)
        for file in modules.files.keys.sorted() {
            print("# \(inventory.defaults.moduleDir)/\(file)")
            print(modules.files[file]!)
        }
        return .success
    }
}
