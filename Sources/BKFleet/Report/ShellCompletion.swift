// Shell completion scripts for bash, zsh and fish, generated from one table of commands
// and options so the three shells agree. Host names come from `bkfleet hosts [INVENTORY]`
// at completion time. It does not parse command lines: Sources/bkfleet does.
// LIMITATION: the table is kept by hand beside the commands' parsers (Sources/bkfleet);
// a new option must be added in both places.

public enum ShellCompletion {
    public enum Value: Sendable {
        /// A host name from the inventory.
        case host
        case file
        /// Free text (a number, a pattern): nothing to offer.
        case text
    }

    public struct Option: Sendable {
        public var name: String
        public var help: String
        public var value: Value?
    }

    public struct Command: Sendable {
        public var name: String
        public var summary: String
        public var options: [Option]
        /// Fixed words the command takes instead of an inventory (e.g. shell names).
        public var words: [String] = []
        /// Whether the command takes an inventory (or plan) file.
        public var takesFile = true
    }

    static func option(_ name: String, _ help: String, _ value: Value? = nil) -> Option {
        Option(name: name, help: help, value: value)
    }

    /// Every command takes `--help`.
    private static let helpOption = option("help", "show the command's help and examples")

    private static let selection: [Option] = [
        option("on", "only these hosts (names, globs, @tag=value; comma-separated)", .host),
        option("shard", "only shard K of N of the selected hosts (K/N)", .text),
    ]

    private static let shared: [Option] = selection + [
        option("accept-new-host-keys", "record unknown host keys (trust on first use)"),
        option("parallel", "hosts in flight at once", .text),
        option("verbose", "print each step as it happens"),
        option("no-color", "plain output even on a terminal"),
        helpOption,
    ]

    public static let commands: [Command] = [
        Command(name: "apply", summary: "push secrets and modules, rebuild, verify",
                options: [option("dry-run", "show the plan and change nothing"),
                          option("json", "one JSON object per event on stdout"),
                          option("batch", "hosts per batch (N or P%)", .text),
                          option("max-fail", "failures tolerated (N or P%)", .text)]
                    + shared),
        Command(name: "plan", summary: "show what apply would change",
                options: [option("detailed-exitcode", "exit 2 when changes are pending"),
                          option("out", "save the plan for 'bkfleet apply FILE'", .file),
                          option("json", "print the plan as one JSON document"),
                          option("deep", "ask NixOS about the staged modules")] + shared),
        Command(name: "check", summary: "validate the inventory offline, render every module",
                options: [option("parse", "also parse each module with nix-instantiate"),
                          helpOption]
                    + selection),
        Command(name: "render", summary: "print the module files one host would get",
                options: [option("host", "the host whose modules to print", .host),
                          helpOption]),
        Command(name: "rotate", summary: "roll agent tokens or SSH keys across the fleet",
                options: [option("dry-run", "say what would be pushed, restarted, revoked"),
                          option("agent", "only this agent profile's token", .text),
                          option("batch", "hosts restarted at once", .text),
                          option("allow-queue-gap", "allow a queue to lose all its agents"),
                          option("ssh-key", "rotate the agents' SSH keys instead of tokens"),
                          option("finish", "with --ssh-key: delete the kept old keys"),
                          option("accept-new-host-keys",
                                 "record unknown host keys (trust on first use)"),
                          option("verbose", "print each step as it happens"),
                          helpOption]
                    + selection),
        Command(name: "status", summary: "report every host and agent, changing nothing",
                options: [option("json", "print the report as one JSON document"),
                          option("parallel", "hosts read at once", .text),
                          option("verbose", "print each step as it happens"),
                          option("no-color", "plain output even on a terminal"),
                          helpOption]
                    + selection),
        // LIMITATION: retire's HOST words are not completed; --inventory and options are.
        Command(name: "retire", summary: "stop and remove a host's agents, modules, secrets",
                options: [option("dry-run", "show what would be removed, change nothing"),
                          option("inventory", "the inventory file", .file),
                          option("address", "address of a host not in the inventory", .text),
                          option("port", "SSH port of that host", .text),
                          option("user", "SSH user of that host", .text),
                          option("accept-new-host-keys",
                                 "record unknown host keys (trust on first use)"),
                          option("verbose", "print each step as it happens"),
                          option("no-color", "plain output even on a terminal"),
                          helpOption]),
        Command(name: "hosts", summary: "print the inventory's host names",
                options: [helpOption]),
        Command(name: "completion", summary: "print a shell completion script",
                options: [helpOption],
                words: ["bash", "zsh", "fish"], takesFile: false),
        Command(name: "help", summary: "show help for bkfleet or a command", options: [],
                takesFile: false),
    ]

    public static func script(for shell: String) -> String? {
        switch shell {
        case "bash": return bash()
        case "zsh": return zsh()
        case "fish": return fish()
        default: return nil
        }
    }

    // MARK: - bash

    static func bash() -> String {
        let names = commands.map(\.name).joined(separator: " ")
        var cases = ""
        for command in commands {
            let options = command.options.map { "--" + $0.name }.joined(separator: " ")
            cases += "        \(command.name)) opts=\"\(options)\"; "
                + "words_=\"\(command.words.joined(separator: " "))\" ;;\n"
        }
        let all = Set(commands.flatMap(\.options))
        let hostOptions = options(all, .host).joined(separator: "|")
        let fileOptions = options(all, .file).joined(separator: "|")
        let textOptions = options(all, .text).joined(separator: "|")
        return """
            # bash completion for bkfleet. Load it with: source <(bkfleet completion bash)
            # or save it as /usr/share/bash-completion/completions/bkfleet.
            _bkfleet_inventory() {
                # The first word after the command that is not an option or its value.
                local i word skip=0
                for ((i = 2; i < COMP_CWORD; i++)); do
                    word="${COMP_WORDS[i]}"
                    if ((skip)); then skip=0; continue; fi
                    case "$word" in
                        \(valueTaking(all))) skip=1 ;;
                        -*) ;;
                        *) printf '%s' "$word"; return ;;
                    esac
                done
            }

            _bkfleet() {
                local cur="${COMP_WORDS[COMP_CWORD]}"
                local prev="${COMP_WORDS[COMP_CWORD-1]}"
                COMPREPLY=()
                if ((COMP_CWORD == 1)); then
                    COMPREPLY=($(compgen -W "\(names) --help --version" -- "$cur"))
                    return
                fi
                local opts="" words_=""
                case "${COMP_WORDS[1]}" in
            \(cases)        *) return ;;
                esac
                case "$prev" in
                    \(hostOptions))
                        local inventory
                        inventory="$(_bkfleet_inventory)"
                        COMPREPLY=($(compgen -W "$(bkfleet hosts $inventory 2>/dev/null)" \\
                            -- "$cur"))
                        return ;;
                    \(fileOptions)) COMPREPLY=($(compgen -f -- "$cur")); return ;;
                    \(textOptions)) return ;;
                esac
                if [[ "$cur" == -* ]]; then
                    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
                elif [[ "${COMP_WORDS[1]}" == help ]]; then
                    COMPREPLY=($(compgen -W "\(names)" -- "$cur"))
                elif [[ -n "$words_" ]]; then
                    COMPREPLY=($(compgen -W "$words_" -- "$cur"))
                else
                    COMPREPLY=($(compgen -f -- "$cur"))
                fi
            }
            complete -o filenames -F _bkfleet bkfleet

            """
    }

    private static func options(_ all: Set<Option>, _ kind: Value) -> [String] {
        all.filter { $0.value == kind }.map { "--" + $0.name }.sorted()
    }

    private static func valueTaking(_ all: Set<Option>) -> String {
        all.filter { $0.value != nil }.map { "--" + $0.name }.sorted().joined(separator: "|")
    }

    // MARK: - zsh

    static func zsh() -> String {
        let list = commands.map { "        '\($0.name):\(quoteZsh($0.summary))'" }
            .joined(separator: "\n")
        var cases = ""
        for command in commands {
            var specs = command.options.map { option -> String in
                let help = quoteZsh(option.help)
                switch option.value {
                case nil: return "'--\(option.name)[\(help)]'"
                case .host?: return "'--\(option.name)=[\(help)]:host:_bkfleet_hosts'"
                case .file?: return "'--\(option.name)=[\(help)]:file:_files'"
                case .text?: return "'--\(option.name)=[\(help)]:value:'"
                }
            }
            if !command.words.isEmpty {
                specs.append("'1:word:(\(command.words.joined(separator: " ")))'")
            } else if command.name == "help" {
                specs.append("'1:command:(\(commands.map(\.name).joined(separator: " ")))'")
            } else if command.takesFile {
                specs.append("'1:inventory:_files'")
            }
            cases += "        \(command.name))\n            _arguments \\\n"
                + specs.map { "                \($0)" }.joined(separator: " \\\n")
                + " ;;\n"
        }
        return """
            #compdef bkfleet
            # zsh completion for bkfleet. Load it with: source <(bkfleet completion zsh)
            # or save it as _bkfleet in a folder on $fpath.

            _bkfleet_hosts() {
                local inventory=${words[(r)*.toml]}
                local -a hosts
                hosts=(${(f)"$(bkfleet hosts $inventory 2>/dev/null)"})
                compadd -a hosts
            }

            _bkfleet() {
                local -a commands
                commands=(
            \(list)
                )
                if (( CURRENT == 2 )); then
                    _describe 'command' commands
                    return
                fi
                local command=$words[2]
                shift words
                (( CURRENT-- ))
                case $command in
            \(cases)    esac
            }

            if [[ "${funcstack[1]}" == _bkfleet ]]; then
                _bkfleet "$@"
            else
                compdef _bkfleet bkfleet
            fi

            """
    }

    private static func quoteZsh(_ text: String) -> String {
        text.replacingOccurrences(of: "'", with: "'\\''")
            .replacingOccurrences(of: "[", with: "\\[").replacingOccurrences(of: "]", with: "\\]")
            .replacingOccurrences(of: ":", with: "\\:")
    }

    // MARK: - fish

    static func fish() -> String {
        var lines = [
            "# fish completion for bkfleet. Load it with: bkfleet completion fish | source",
            "# or save it as ~/.config/fish/completions/bkfleet.fish.",
            "function __bkfleet_hosts",
            "    set -l inventory (string match -- '*.toml' (commandline -opc))[1]",
            "    bkfleet hosts $inventory 2>/dev/null",
            "end",
            "complete -c bkfleet -f",
            "complete -c bkfleet -n __fish_use_subcommand -l help -d 'show help'",
            "complete -c bkfleet -n __fish_use_subcommand -l version -d 'print the version'",
        ]
        let names = commands.map(\.name).joined(separator: " ")
        for command in commands {
            lines.append("complete -c bkfleet -n __fish_use_subcommand -a \(command.name) "
                         + "-d \(quoteFish(command.summary))")
            let when = "-n '__fish_seen_subcommand_from \(command.name)'"
            for option in command.options {
                var line = "complete -c bkfleet \(when) -l \(option.name)"
                switch option.value {
                case nil: break
                case .host?: line += " -x -a '(__bkfleet_hosts)'"
                case .file?: line += " -r -F"
                case .text?: line += " -x"
                }
                lines.append(line + " -d \(quoteFish(option.help))")
            }
            if !command.words.isEmpty {
                let words = command.words.joined(separator: " ")
                lines.append("complete -c bkfleet \(when) -a '\(words)'")
            } else if command.name == "help" {
                lines.append("complete -c bkfleet \(when) -a '\(names)'")
            } else if command.takesFile {
                lines.append("complete -c bkfleet \(when) -F")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private static func quoteFish(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "\\", with: "\\\\")
            .replacingOccurrences(of: "'", with: "\\'") + "'"
    }
}

extension ShellCompletion.Option: Hashable {
    public static func == (a: Self, b: Self) -> Bool { a.name == b.name }
    public func hash(into hasher: inout Hasher) { hasher.combine(name) }
}
