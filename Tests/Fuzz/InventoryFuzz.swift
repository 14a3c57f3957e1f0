// libFuzzer target for the inventory loader and the module renderer: any bytes go in;
// the loader must either accept them or reject them with located, printable messages,
// and every accepted inventory must render modules whose strings decode back to the
// inventory's values. It checks for crashes, hangs (libFuzzer's -timeout) and those
// properties; it does not evaluate modules with Nix (ModuleEscapingTests does).
import Foundation

let fuzzPath = "/fuzz/inventory.toml"

/// Templates come from $BKFLEET_TEMPLATES, which run.sh points at the project's folder.
let fuzzTemplates: Templates = {
    guard let dir = ProcessInfo.processInfo.environment["BKFLEET_TEMPLATES"],
          let templates = try? Templates.load(directory: dir) else {
        fatalError("set BKFLEET_TEMPLATES to the project's templates folder")
    }
    return templates
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func bkfleetFuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    checkOne(bytes)
    return 0
}

func checkOne(_ bytes: [UInt8]) {
    let inventory: Inventory
    do {
        inventory = try InventoryLoader.load(bytes: bytes, path: fuzzPath,
                                             environment: ["HOME": "/home/fuzz"])
    } catch let error as InventoryError {
        checkRejection(error)
        return
    } catch {
        fatalError("the loader threw something other than InventoryError: \(error)")
    }
    let renderer = ModuleRenderer(templates: fuzzTemplates)
    for host in inventory.hosts {
        let modules: RenderedModules
        do {
            modules = try renderer.render(host: host, inventory: inventory)
        } catch {
            fatalError("an accepted inventory failed to render for \(host.name): \(error)")
        }
        precondition(modules.files.count == Set(host.agents).count + 1,
                     "one module per agent plus the index")
    }
    for agent in inventory.agents.values {
        var strings = Array(agent.tags.keys) + Array(agent.tags.values)
        strings += [agent.extraConfig] + Array(agent.hooks.values) + agent.allowedURIs
        if let name = agent.displayName { strings.append(name) }
        for text in strings { checkLiteral(text) }
    }
}

/// Every rejection: at least one diagnostic, each naming the file, with a line and
/// column that are not negative, a message, and no raw control character.
func checkRejection(_ error: InventoryError) {
    precondition(!error.diagnostics.isEmpty, "a rejection without a message")
    for diagnostic in error.diagnostics {
        precondition(diagnostic.location.file == fuzzPath, "diagnostic without the file")
        precondition(diagnostic.location.line >= 0 && diagnostic.location.column >= 0,
                     "negative position: \(diagnostic)")
        precondition(!diagnostic.message.isEmpty, "empty message at \(diagnostic.location)")
        precondition(!diagnostic.description.unicodeScalars.contains {
            $0.value < 0x20 || $0.value == 0x7F }, "raw control character in \(diagnostic)")
    }
}

/// The Nix literal for `text` must be one string whose decoding is `text`, with no
/// unescaped `"` or `${` inside.
func checkLiteral(_ text: String) {
    let literal = Array(NixLiteral.string(text).unicodeScalars)
    precondition(literal.first == "\"" && literal.last == "\"" && literal.count >= 2)
    var decoded = String.UnicodeScalarView()
    var index = 1
    while index < literal.count - 1 {
        let scalar = literal[index]
        precondition(scalar != "\"", "unescaped quote in the literal for \(text.debugDescription)")
        if scalar == "$" && literal[index + 1] == "{" {
            preconditionFailure("interpolation in the literal for \(text.debugDescription)")
        }
        if scalar == "\\" {
            index += 1
            precondition(index < literal.count - 1, "dangling backslash")
            switch literal[index] {
            case "n": decoded.append("\n")
            case "r": decoded.append("\r")
            case "t": decoded.append("\t")
            default: decoded.append(literal[index])
            }
        } else {
            decoded.append(scalar)
        }
        index += 1
    }
    precondition(String(decoded) == text, "literal does not decode to \(text.debugDescription)")
}
