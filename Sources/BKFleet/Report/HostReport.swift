// The outcome of one host's run, as the report and the exit code see it. Carries
// fingerprints and states, never secret values.

/// The step a host was at when it stopped; also the steps shown in progress events.
public enum Step: String, Sendable, Codable {
    case connect, hostKey = "host-key", authenticate, probe, plan, push, rebuild,
         handover, verify, done
}

public struct AgentResult: Sendable {
    public var agent: String
    public var ok: Bool
    /// "running, confined, registered as \"builder-01-builder-1\"" or what failed.
    public var detail: String
    public var tokenFingerprint: String?
}

public enum HostOutcome: Sendable {
    /// Everything matched already.
    case unchanged
    /// Changes were made (or, in a dry run, are pending) and the agents verified.
    case changed
    case failed(step: Step, message: String)
    /// Never started, e.g. the `--max-fail` budget was spent before its turn. Not a
    /// failure of the host itself, but the run did not cover it (exit code 1).
    case notAttempted(reason: String)

    public var isFailure: Bool {
        if case .failed = self { return true }
        return false
    }

    public var wasAttempted: Bool {
        if case .notAttempted = self { return false }
        return true
    }
}

public struct HostReport: Sendable {
    public var host: String
    public var outcome: HostOutcome
    public var plan: HostPlan?
    /// The host's state when it was planned, for saved plans and drift checks.
    public var snapshot: HostSnapshot?
    /// The host's own name as its probe read it (agent names are built from it).
    public var hostname: String?
    public var agents: [AgentResult] = []
    public var rebuilt = false
    /// `plan --deep`: what `nixos-rebuild dry-activate` said about the staged modules.
    public var deepOutput: String?
    public var seconds: Double = 0
    /// The host's log file for this run, if anything was logged.
    public var logPath: String?
}
