import Foundation

/// Rate counters every instance adds to, for limits that must hold across instances (a grant's
/// `rate_limit`, a v0.1 agent's calls). Instances send their counts in batches and learn the
/// totals back; a store that serves one instance (SQLite) does not offer this.
public protocol SharedRateCounters: Sendable {
    /// Adds each count to its (key, window) counter. For each, in order: the counter's total
    /// after the addition, and the total of the window before it (`windowStart - window`).
    func addRateCounts(_ counts: [RateCount]) async throws -> [RateTotals]
}

public struct RateCount: Sendable, Hashable {
    public var key: String
    /// Unix seconds, a multiple of `window`.
    public var windowStart: Int64
    /// The window's length in seconds.
    public var window: Int64
    /// May be 0: a read of the totals.
    public var add: Int64

    public init(key: String, windowStart: Int64, window: Int64, add: Int64) {
        (self.key, self.windowStart, self.window, self.add) = (key, windowStart, window, add)
    }
}

public struct RateTotals: Sendable, Equatable {
    public var current: Int64
    public var previous: Int64

    public init(current: Int64, previous: Int64) {
        (self.current, self.previous) = (current, previous)
    }
}
