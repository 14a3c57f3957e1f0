// `apply --json`: one JSON object per line on standard output, for pipelines. Field names
// are a stable interface documented in docs/events.md; add fields, never rename them.
// It does not pretty-print, colour or buffer: each event is written when it happens.
import Foundation

public final class JsonEventSink: EventSink, @unchecked Sendable {
    private let lock = NSLock()
    private let write: (String) -> Void
    private let now: () -> Date

    /// `write` receives one complete line (with its newline) per event.
    public init(now: @escaping () -> Date = Date.init,
                write: @escaping (String) -> Void) {
        self.now = now
        self.write = write
    }

    public func event(host: String, step: Step, message: String) {
        emit(["event": .string("step"), "host": .string(host), "agent": .null,
              "step": .string(step.rawValue), "status": .string("started"),
              "duration": .null, "error": .null, "message": .string(message)])
    }

    /// One `agent` object per agent the host verified, then the host's own result.
    public func finished(_ report: HostReport) {
        for agent in report.agents {
            emit(["event": .string("agent"), "host": .string(report.host),
                  "agent": .string(agent.agent), "step": .string(Step.verify.rawValue),
                  "status": .string(agent.ok ? "ok" : "failed"), "duration": .null,
                  "error": agent.ok ? .null : .string(agent.detail),
                  "message": .string(agent.detail),
                  "token_fingerprint": agent.tokenFingerprint.map { .string($0) } ?? .null])
        }
        var fields: [String: JSONValue] = [
            "event": .string("host"), "host": .string(report.host), "agent": .null,
            "duration": .number(report.seconds),
            "log": report.logPath.map { .string($0) } ?? .null,
        ]
        switch report.outcome {
        case .unchanged:
            fields["step"] = .string(Step.done.rawValue)
            fields["status"] = .string("ok")
            fields["error"] = .null
            fields["message"] = .string("unchanged, \(report.agents.filter(\.ok).count) "
                                        + "agent(s) verified")
        case .changed:
            fields["step"] = .string(Step.done.rawValue)
            fields["status"] = .string("changed")
            fields["error"] = .null
            fields["message"] = .string(JsonEventSink.changeSummary(report))
        case .failed(let step, let message):
            fields["step"] = .string(step.rawValue)
            fields["status"] = .string("failed")
            fields["error"] = .string(message)
            fields["message"] = .string("failed at \(step.rawValue)")
        case .notAttempted(let reason):
            fields["step"] = .string("none")
            fields["status"] = .string("skipped")
            fields["error"] = .null
            fields["message"] = .string(reason)
            fields["duration"] = .null
        }
        emit(fields)
    }

    /// The last line of a run: counts, where the logs are, and the exit code.
    /// Hosts never started (the failure budget was spent) get no `finished` call from a
    /// host thread: the caller passes each to `finished` itself before this.
    public func summary(_ reports: [HostReport], seconds: Double, runDirectory: String,
                        exitCode: Int32) {
        let skipped = reports.filter { !$0.outcome.wasAttempted }.count
        let failed = reports.filter { $0.outcome.isFailure }.count
        let changed = reports.filter {
            if case .changed = $0.outcome { return true }
            return false
        }.count
        emit(["event": .string("summary"), "status": .string(exitCode == 0 ? "ok" : "failed"),
              "hosts": .number(Double(reports.count)),
              "changed": .number(Double(changed)),
              "unchanged": .number(Double(reports.count - changed - failed - skipped)),
              "failed": .number(Double(failed)), "skipped": .number(Double(skipped)),
              "duration": .number(seconds), "logs": .string(runDirectory),
              "exit_code": .number(Double(exitCode))])
    }

    static func changeSummary(_ report: HostReport) -> String {
        let plan = report.plan ?? HostPlan()
        var what: [String] = []
        if !plan.modules.isEmpty { what.append("\(plan.modules.count) module file(s)") }
        if !plan.secrets.isEmpty { what.append("\(plan.secrets.count) secret(s)") }
        if !plan.ownership.isEmpty { what.append("\(plan.ownership.count) owner fix(es)") }
        if report.rebuilt { what.append("rebuilt") }
        what.append("\(report.agents.filter(\.ok).count) agent(s) verified")
        return what.joined(separator: ", ")
    }

    /// Fields in a fixed order so lines are easy to read and diff; unknown ones follow
    /// alphabetically.
    private static let order = ["time", "event", "host", "agent", "step", "status",
                                "duration", "error", "message"]

    private func emit(_ fields: [String: JSONValue]) {
        lock.withLock {
            var all = fields
            all["time"] = .string(UTCStamp.iso8601(now(), fraction: true))
            let keys = JsonEventSink.order.filter { all[$0] != nil }
                + all.keys.filter { !JsonEventSink.order.contains($0) }.sorted()
            let body = keys.map { "\(JSONValue.quote($0)):\(all[$0]!.text)" }
            write("{" + body.joined(separator: ",") + "}\n")
        }
    }
}

/// The few JSON values an event needs, written by hand so the field order is fixed.
enum JSONValue {
    case string(String), number(Double), null

    var text: String {
        switch self {
        case .string(let value): return JSONValue.quote(value)
        case .null: return "null"
        case .number(let value):
            if value == value.rounded() && abs(value) < 1e15 { return String(Int64(value)) }
            return String(format: "%.3f", value)
        }
    }

    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
