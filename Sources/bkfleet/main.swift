// bkfleet's entry point: picks the command, turns every error into a message and an exit
// code (docs/exit-codes.md). The commands' work lives in the BKFleet library.
import BKFleet
import Foundation

/// Exit codes shared by every command; docs/exit-codes.md is the table users read.
enum ExitCode: Int32 {
    case success = 0
    case hostsFailed = 1
    case changesPending = 2
    case usage = 64
    case badInput = 65
    /// A tool the command needs is not installed here (`check --parse` without Nix).
    case unavailable = 69
    case internalError = 70
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data(("bkfleet: " + text + "\n").utf8))
}

let usage = """
    bkfleet \(BKFleetVersion.string): converge a fleet of NixOS Buildkite builders over SSH.

    Usage: bkfleet COMMAND [INVENTORY] [OPTIONS]

    Commands:
      apply       push secrets and modules, rebuild, and verify every agent
      plan        show what apply would change, changing nothing
      rotate      give agents a new token, restart them in batches, revoke the old
      check       validate the inventory offline and render every module
      render      print the module files one host would get
      status      report every host and agent as it is now, changing nothing
      retire      stop and remove a host's agents, modules and secrets
      hosts       print the inventory's host names, one per line
      completion  print a completion script for bash, zsh or fish
      help        show this text, or a command's help

    INVENTORY defaults to $BKFLEET_INVENTORY, then ./inventory.toml.
    Run 'bkfleet COMMAND --help' for a command's options and examples.
    """

var words = Array(CommandLine.arguments.dropFirst())
guard let command = words.first else {
    print(usage)
    exit(ExitCode.usage.rawValue)
}
words.removeFirst()

let code: ExitCode
do {
    switch command {
    case "apply":
        code = try ApplyCommand.run(words, mode: .apply)
    case "plan":
        code = try ApplyCommand.run(words, mode: .plan)
    case "rotate":
        code = try RotateCommand.run(words)
    case "check":
        code = try CheckCommand.run(words)
    case "render":
        code = try RenderCommand.run(words)
    case "hosts":
        code = try HostsCommand.run(words)
    case "status":
        code = try StatusCommand.run(words)
    case "retire":
        code = try RetireCommand.run(words)
    case "completion":
        code = try CompletionCommand.run(words)
    case "help", "--help", "-h":
        if let topic = words.first {
            if let text = Help.text(for: topic) {
                print(text)
                code = .success
            } else {
                printError("no help for '\(topic)'; see 'bkfleet help' for the commands")
                code = .usage
            }
        } else {
            print(usage)
            code = .success
        }
    case "--version", "version":
        print("bkfleet \(BKFleetVersion.string)")
        code = .success
    default:
        let known = ["apply", "plan", "rotate", "check", "render", "status", "retire", "hosts",
                     "completion", "help"]
        let hint = known.min { editDistance($0, command) < editDistance($1, command) }
            .flatMap { editDistance($0, command) <= 2 ? " (did you mean '\($0)'?)" : nil }
        printError("unknown command '\(command)'\(hint ?? ""); see 'bkfleet help'")
        code = .usage
    }
} catch let error as UsageError {
    printError(error.description)
    code = .usage
} catch let error as InventoryError {
    FileHandle.standardError.write(Data((error.description + "\n").utf8))
    code = .badInput
} catch let error as SetupError {
    printError(error.description)
    code = .badInput
} catch let error as UnavailableError {
    printError(error.description)
    code = .unavailable
} catch let error as RenderError {
    printError(error.description)
    code = .badInput
} catch {
    printError("\(error)")
    code = .internalError
}
exit(code.rawValue)
