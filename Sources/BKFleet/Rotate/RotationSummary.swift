// The lines a token rotation ends with: per token, which agents run on which token (by
// fingerprint) and what became of the old token: revoked, kept alive (and why), or left
// for a rerun. Pure text from facts the rotation gathered; it decides nothing and never
// sees a token's value.
import Foundation

/// What became of the token a rotation replaced.
public enum OldTokenFate: Sendable, Equatable {
    case revoked
    /// Agents outside the selection still use it (`host/agent`).
    case keptForOutsiders([String])
    /// bkfleet knows no API id for it (or it is not API-managed).
    case keptWithoutID
    /// The revocation itself failed; the text says why.
    case keptRevokeFailed(String)
    /// The rotation did not finish; the text says what is missing.
    case leftForRerun(String)
    /// No earlier value is known to bkfleet (the operator changed the source already).
    case unknown
}

/// One token's end state.
public struct TokenOutcome: Sendable, Equatable {
    public var name: String
    public var newFingerprint: String
    public var oldFingerprint: String?
    /// Fingerprint (or a phrase such as "sha256:… or sha256:…") → `host/agent` names.
    public var agentsByToken: [String: [String]]
    public var fate: OldTokenFate

    public init(name: String, newFingerprint: String, oldFingerprint: String?,
                agentsByToken: [String: [String]], fate: OldTokenFate) {
        self.name = name
        self.newFingerprint = newFingerprint
        self.oldFingerprint = oldFingerprint
        self.agentsByToken = agentsByToken
        self.fate = fate
    }
}

public enum RotationSummary {
    public static func lines(_ outcomes: [TokenOutcome]) -> [String] {
        var lines = ["summary:"]
        for outcome in outcomes {
            let old = outcome.oldFingerprint ?? "(previous token unknown)"
            lines.append("  token '\(outcome.name)': \(old) → \(outcome.newFingerprint)")
            // The new token first, then the rest in a stable order.
            let keys = outcome.agentsByToken.keys.sorted {
                ($0 == outcome.newFingerprint ? 0 : 1, $0) < ($1 == outcome.newFingerprint
                                                               ? 0 : 1, $1)
            }
            for key in keys {
                let agents = outcome.agentsByToken[key]!.sorted()
                lines.append("    on \(key): \(agents.joined(separator: ", "))")
            }
            lines.append("    old token: " + fateText(outcome))
        }
        return lines
    }

    static func fateText(_ outcome: TokenOutcome) -> String {
        let old = outcome.oldFingerprint ?? ""
        switch outcome.fate {
        case .revoked:
            return "\(old) revoked"
        case .keptForOutsiders(let agents):
            let shown = agents.sorted().prefix(5).joined(separator: ", ")
            let more = agents.count > 5 ? " and \(agents.count - 5) more" : ""
            return "\(old) kept alive: agents outside the selection use it (\(shown)\(more));"
                + " rotate them too to revoke it"
        case .keptWithoutID:
            return "\(old) kept alive: bkfleet does not know its API id; revoke it in "
                + "Buildkite, or give id = \"...\" in [tokens.\(outcome.name)]"
        case .keptRevokeFailed(let why):
            return "\(old) kept alive: revoking it failed (\(why)); rerun rotate to retry"
        case .leftForRerun(let why):
            return "\(old) not revoked, left for a rerun: \(why)"
        case .unknown:
            return "none known to bkfleet; if an earlier token is still valid in Buildkite, "
                + "revoke it there"
        }
    }
}
