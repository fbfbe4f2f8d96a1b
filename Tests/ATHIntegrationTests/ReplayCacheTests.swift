import ATHServer
import Testing

@Suite struct ReplayCacheTests {
    @Test func refusesASecondUseUntilExpiry() {
        let cache = ReplayCache()
        #expect(cache.insert("s:n1", expiresAt: 1_300, now: 1_000))
        #expect(!cache.insert("s:n1", expiresAt: 1_300, now: 1_000))
        #expect(!cache.insert("s:n1", expiresAt: 1_305, now: 1_300))
        #expect(cache.insert("s:n2", expiresAt: 1_300, now: 1_000))
        // Past its expiry the nonce cannot pass the timestamp check anyway; it is forgotten.
        #expect(cache.insert("s:n1", expiresAt: 1_601, now: 1_301))
    }

    /// Memory follows the recent request rate: expired seconds are dropped as time passes,
    /// also after a quiet spell longer than the sweep's step-by-step range.
    @Test func forgetsExpiredKeys() {
        let cache = ReplayCache()
        for i in 0..<1_000 { #expect(cache.insert("s:\(i)", expiresAt: 1_000 + Int64(i % 10), now: 1_000)) }
        #expect(cache.count == 1_000)
        #expect(cache.insert("later", expiresAt: 1_305, now: 1_005))
        #expect(cache.count == 1 + 500)  // seconds 1000-1004 expired, 1005-1009 remain
        #expect(cache.insert("much later", expiresAt: 9_300, now: 9_000))
        #expect(cache.count == 1)
    }
}
