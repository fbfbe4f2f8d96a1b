import ATHStore
import PostgresNIO

/// One statement a batch: each (key, window) counter is added to (created at its first count)
/// and read back with the window before it (as this statement left it, when the batch added to
/// it too: the table's own rows show the statement's start). Counters are sent sorted and once each, so two
/// instances' batches lock rows in one order and never deadlock.
extension PostgresStore: SharedRateCounters {
    public func addRateCounts(_ counts: [RateCount]) async throws -> [RateTotals] {
        guard !counts.isEmpty else { return [] }
        struct Counter: Hashable, Comparable {
            var key: String
            var windowStart: Int64
            static func < (a: Counter, b: Counter) -> Bool { (a.key, a.windowStart) < (b.key, b.windowStart) }
        }
        var sums: [Counter: (add: Int64, previous: Int64)] = [:]
        for count in counts {
            let counter = Counter(key: count.key, windowStart: count.windowStart)
            sums[counter, default: (0, count.windowStart - count.window)].add += count.add
        }
        let counters = sums.keys.sorted()
        let keys = counters.map(\.key)
        let starts = counters.map(\.windowStart)
        let previous = counters.map { sums[$0]!.previous }
        let adds = counters.map { sums[$0]!.add }
        let rows = try await read { c in
            try await c.rows(
                """
                WITH input AS (
                    SELECT * FROM unnest(\(keys)::text[], \(starts)::bigint[], \(previous)::bigint[], \(adds)::bigint[])
                    AS t(key, window_start, previous_start, add)),
                added AS (
                    INSERT INTO rate_counter (key, window_start, count) SELECT key, window_start, add FROM input ORDER BY key, window_start
                    ON CONFLICT (key, window_start) DO UPDATE SET count = rate_counter.count + EXCLUDED.count
                    RETURNING key, window_start, count)
                SELECT a.key, a.window_start, a.count AS current, COALESCE(ap.count, p.count, 0) AS previous
                FROM input i JOIN added a ON a.key = i.key AND a.window_start = i.window_start
                LEFT JOIN added ap ON ap.key = i.key AND ap.window_start = i.previous_start
                LEFT JOIN rate_counter p ON p.key = i.key AND p.window_start = i.previous_start
                """, self.logger)
        }
        var totals: [Counter: RateTotals] = [:]
        for row in rows {
            let counter = Counter(key: try row["key"].decode(String.self), windowStart: try row["window_start"].decode(Int64.self))
            totals[counter] = RateTotals(current: try row["current"].decode(Int64.self), previous: try row["previous"].decode(Int64.self))
        }
        return try counts.map { count in
            guard let found = totals[Counter(key: count.key, windowStart: count.windowStart)] else {
                throw StoreError.corrupt("the rate counter \(count.key) was not returned")
            }
            return found
        }
    }
}
