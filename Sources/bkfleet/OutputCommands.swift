// The commands and helpers about output rather than hosts: which event view a run gets
// (JSON, live terminal view, plain lines), `check --parse`, `hosts` (names for shell
// completion) and `completion`. Nothing here connects to a host.
import BKFleet
import Foundation

/// How a run reports its events, chosen from the flags and whether stdout is a terminal.
enum EventView {
    case json(JsonEventSink)
    case live(LiveEventSink)
    case lines(LineEventSink)

    var sink: EventSink {
        switch self {
        case .json(let sink): return sink
        case .live(let sink): return sink
        case .lines(let sink): return sink
        }
    }

    /// `json`: JSON lines. `quiet` (stdout is kept for a document): -v lines go to
    /// stderr. Otherwise the live view on a terminal (not TERM=dumb), else plain lines,
    /// printed only with -v.
    static func choose(_ arguments: Arguments, hosts: Int, json: Bool,
                       quiet: Bool = false) -> EventView {
        let verbose = arguments.flags.contains("verbose")
        if json { return .json(JsonEventSink { LiveEventSink.writeStdout($0) }) }
        if quiet {
            return .lines(LineEventSink(verbose: verbose) {
                FileHandle.standardError.write(Data(($0 + "\n").utf8))
            })
        }
        let environment = ProcessInfo.processInfo.environment
        if isatty(STDOUT_FILENO) == 1 && environment["TERM"] != "dumb" {
            return .live(LiveEventSink(total: hosts, color: useColor(arguments),
                                       verbose: verbose))
        }
        return .lines(LineEventSink(verbose: verbose) { print($0) })
    }

    func start() {
        if case .live(let sink) = self { sink.start() }
    }

    func stop() {
        if case .live(let sink) = self { sink.stop() }
    }
}

/// `bkfleet check --parse`: every distinct module through `nix-instantiate --parse`.
enum ParseCheckCommand {
    /// Prints the problems; returns false when a module does not parse.
    static func run(modules: [String: [String: String]], inventory: Inventory,
                    environment: [String: String]) throws -> Bool {
        guard let tool = NixParseCheck.findTool(environment: environment) else {
            throw UnavailableError(description: """
                check --parse needs nix-instantiate, which is not on PATH. Install Nix \
                (Debian: apt-get install nix-bin), or run 'bkfleet check' without --parse: \
                the inventory and rendering checks above do not need it.
                """)
        }
        let result = try NixParseCheck.check(modules: modules,
                                             moduleDir: inventory.defaults.moduleDir,
                                             tool: tool)
        for problem in result.problems {
            FileHandle.standardError.write(Data((problem.description + "\n").utf8))
        }
        print("Parsed \(result.distinctModules) distinct module file(s) with \(tool): "
              + (result.problems.isEmpty ? "all parse."
                 : "\(result.problems.count) error(s)."))
        return result.problems.isEmpty
    }
}

/// A tool the command needs is missing on this machine (exit code 69).
struct UnavailableError: Error, CustomStringConvertible {
    var description: String
}

/// `bkfleet hosts [INVENTORY]`: host names, one per line, for scripts and completion.
enum HostsCommand {
    static func run(_ words: [String]) throws -> ExitCode {
        let arguments = try Arguments.parse(words, command: "hosts", flags: [], options: [])
        if arguments.flags.contains("help") {
            print(Help.hosts)
            return .success
        }
        let inventory = try InventoryLoader.load(path: try inventoryPath(arguments),
                                                 environment: ProcessInfo.processInfo.environment)
        for host in inventory.hosts { print(host.name) }
        return .success
    }
}

/// `bkfleet completion bash|zsh|fish`: prints the completion script for that shell.
enum CompletionCommand {
    static func run(_ words: [String]) throws -> ExitCode {
        let arguments = try Arguments.parse(words, command: "completion", flags: [],
                                            options: [])
        if arguments.flags.contains("help") {
            print(Help.completion)
            return .success
        }
        guard arguments.positional.count == 1, let shell = arguments.positional.first,
              let script = ShellCompletion.script(for: shell) else {
            throw UsageError(description: "completion wants one shell: bash, zsh or fish; "
                             + "see 'bkfleet completion --help'")
        }
        print(script, terminator: "")
        return .success
    }
}
