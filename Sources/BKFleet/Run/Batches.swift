// Rolling work: `--batch N|P%` splits the selected hosts into groups run one after the
// other, and `--max-fail N|P%` is the failure budget after which nothing new starts (as
// Ansible's `serial` and `max_fail_percentage`). Planning only; FleetRunner runs it.
import Foundation

/// A number of hosts, given absolutely (`5`) or as a share of the selection (`20%`).
public enum HostCount: Sendable, Equatable, CustomStringConvertible {
    case hosts(Int)
    case percent(Int)

    /// Parses `N` or `P%` for the option `name`; `minimum` is the least whole number
    /// accepted (1 for a batch, 0 for a failure budget). Percentages go to 100.
    public init(parsing text: String, option name: String, minimum: Int) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.hasSuffix("%") {
            guard let value = Int(trimmed.dropLast()), value >= minimum, value <= 100 else {
                throw SelectionError(description: "--\(name) wants N or P% with P a whole "
                                     + "number \(minimum)...100, not '\(text)'")
            }
            self = .percent(value)
        } else {
            guard let value = Int(trimmed), value >= minimum else {
                throw SelectionError(description: "--\(name) wants a whole number ≥ "
                                     + "\(minimum) or a percentage like 20%, not '\(text)'")
            }
            self = .hosts(value)
        }
    }

    public var description: String {
        switch self {
        case .hosts(let n): return "\(n)"
        case .percent(let p): return "\(p)%"
        }
    }
}

/// How a run rolls over the selected hosts. The default (no batch, no budget) runs every
/// host as before.
public struct Rollout: Sendable, Equatable {
    public var batch: HostCount?
    public var maxFail: HostCount?

    public init(batch: HostCount? = nil, maxFail: HostCount? = nil) {
        self.batch = batch
        self.maxFail = maxFail
    }

    /// Hosts per batch out of `total`: a percentage rounds down but never below one
    /// host, so `--batch 10%` of 5 hosts still makes progress.
    public func batchSize(of total: Int) -> Int {
        switch batch {
        case nil: return max(1, total)
        case .hosts(let n): return max(1, n)
        case .percent(let p): return max(1, p * total / 100)
        }
    }

    /// The hosts in batches, in order; one batch holding everyone without `--batch`.
    public func batches<Item>(_ items: [Item]) -> [[Item]] {
        guard !items.isEmpty else { return [] }
        let size = batchSize(of: items.count)
        return stride(from: 0, to: items.count, by: size).map {
            Array(items[$0..<min($0 + size, items.count)])
        }
    }

    /// Failures tolerated out of `total`; nil means unlimited. Exceeding it stops new
    /// work: `--max-fail 0` stops at the first failure, `--max-fail 10%` of 20 hosts at
    /// the third (more than 10% failed).
    public func failureBudget(of total: Int) -> Int? {
        switch maxFail {
        case nil: return nil
        case .hosts(let n): return n
        case .percent(let p): return p * total / 100
        }
    }

    /// How the budget reads in a report line, e.g. `--max-fail 2` or
    /// `--max-fail 10% = 2 of 20`.
    public func budgetText(of total: Int) -> String {
        switch maxFail {
        case nil: return "no --max-fail"
        case .hosts(let n): return "--max-fail \(n)"
        case .percent(let p):
            return "--max-fail \(p)% = \(failureBudget(of: total) ?? 0) of \(total)"
        }
    }
}
