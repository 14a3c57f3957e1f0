// Runs one of bkfleet's remote scripts under a local shell, as a host runs it:
// `shell -c SCRIPT NAME ARGUMENTS...` with the given standard input. Shared by the tests
// of the push, probe, lock and restore scripts; it checks nothing itself.
import Foundation

struct ScriptResult {
    var status: Int32
    var out: String
    var err: String
    /// Standard output, then standard error, for messages and `contains` checks.
    var all: String { out + err }
}

func runScript(_ script: String, _ arguments: [String], stdin: [UInt8] = [],
               shell: String = "/bin/sh") throws -> ScriptResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: shell)
    process.arguments = ["-c", script, "bkfleet-test"] + arguments
    let input = Pipe(), output = Pipe(), errors = Pipe()
    process.standardInput = input
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    // Standard error is drained alongside, so neither pipe can fill up and stall the script.
    final class Box: @unchecked Sendable { var data = Data() }
    let errData = Box()
    let drained = DispatchSemaphore(value: 0)
    DispatchQueue.global().async {
        errData.data = errors.fileHandleForReading.readDataToEndOfFile()
        drained.signal()
    }
    input.fileHandleForWriting.write(Data(stdin))
    try input.fileHandleForWriting.close()
    let outData = output.fileHandleForReading.readDataToEndOfFile()
    drained.wait()
    process.waitUntilExit()
    return ScriptResult(status: process.terminationStatus,
                        out: String(decoding: outData, as: UTF8.self),
                        err: String(decoding: errData.data, as: UTF8.self))
}
