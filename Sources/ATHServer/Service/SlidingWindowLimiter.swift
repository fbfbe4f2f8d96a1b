import ATHCore
import Foundation
import Synchronization

/// rate_limit enforcement: a sliding-window counter per grant (the current window's count plus
/// the previous window's, weighted by how much of it still overlaps), kept in this process.
public final class SlidingWindowLimiter: Sendable {
    private struct Counter {
        var windowStart: Int64
        var current: Int
        var previous: Int
    }

    private let counters = Mutex<[String: Counter]>([:])

    public init() {}

    /// Counts one request for `key`; throws RATE_LIMITED when it would exceed `limit`.
    public func admit(_ key: String, limit: RateLimit, now: Date) throws {
        let nowMs = Int64(now.timeIntervalSince1970 * 1000)
        let windowMs = Int64(limit.window) * 1000
        let start = nowMs - nowMs % windowMs
        try counters.withLock { counters in
            var c = counters[key] ?? Counter(windowStart: start, current: 0, previous: 0)
            if c.windowStart != start {
                c.previous = (start - c.windowStart == windowMs) ? c.current : 0
                c.current = 0
                c.windowStart = start
            }
            let overlap = Double(windowMs - (nowMs - start)) / Double(windowMs)
            let estimate = Double(c.previous) * overlap + Double(c.current)
            guard estimate + 1 <= Double(limit.count) else {
                counters[key] = c
                throw ATHError(.rateLimited, "rate limit \(limit.count) per \(limit.window) s exceeded")
            }
            c.current += 1
            counters[key] = c
            if counters.count > 100_000 { counters = counters.filter { $0.value.windowStart >= start - windowMs } }
        }
    }
}
