import ATHCore
import ATHServer
import Testing

@Suite struct ReplayCacheTests {
    @Test func refusesASecondUseUntilExpiry() {
        let cache = ReplayCache()
        #expect(cache.insert(scope: "s", nonce: "n1", expiresAt: 1_300, now: 1_000))
        #expect(!cache.insert(scope: "s", nonce: "n1", expiresAt: 1_300, now: 1_000))
        #expect(!cache.insert(scope: "s", nonce: "n1", expiresAt: 1_305, now: 1_300))
        #expect(cache.insert(scope: "s", nonce: "n2", expiresAt: 1_300, now: 1_000))
        // Past its expiry the nonce cannot pass the timestamp check anyway; it is forgotten.
        #expect(cache.insert(scope: "s", nonce: "n1", expiresAt: 1_601, now: 1_301))
    }

    /// Memory follows the recent request rate: expired seconds are dropped as time passes,
    /// also after a quiet spell longer than the sweep's step-by-step range.
    @Test func forgetsExpiredKeys() {
        let cache = ReplayCache()
        for i in 0..<1_000 { #expect(cache.insert(scope: "s", nonce: "\(i)", expiresAt: 1_000 + Int64(i % 10), now: 1_000)) }
        #expect(cache.count == 1_000)
        #expect(cache.insert(scope: "s", nonce: "later", expiresAt: 1_305, now: 1_005))
        cache.sweep(now: 1_005)
        #expect(cache.count == 1 + 500)  // seconds 1000-1004 expired, 1005-1009 remain
        #expect(cache.insert(scope: "s", nonce: "much later", expiresAt: 9_300, now: 9_000))
        cache.sweep(now: 9_000)
        #expect(cache.count == 1)
    }

    /// A nonce is remembered per scope (session): the same nonce in another session is new, and
    /// no split of the same characters between scope and nonce is taken for another.
    @Test func keepsScopesApart() {
        let cache = ReplayCache()
        #expect(cache.insert(scope: "s1", nonce: "n", expiresAt: 1_300, now: 1_000))
        #expect(cache.insert(scope: "s2", nonce: "n", expiresAt: 1_300, now: 1_000))
        #expect(!cache.insert(scope: "s1", nonce: "n", expiresAt: 1_300, now: 1_000))
        #expect(cache.insert(scope: "a:b", nonce: "c", expiresAt: 1_300, now: 1_000))
        #expect(cache.insert(scope: "a", nonce: "b:c", expiresAt: 1_300, now: 1_000))
        #expect(!cache.insert(scope: "a", nonce: "b:c", expiresAt: 1_300, now: 1_000))
        // The server inserts slices of the proof header: a slice is the same nonce as the string.
        let header = "n=abcdef, mac=x"
        #expect(cache.insert(scope: "s1", nonce: "abcdef", expiresAt: 1_300, now: 1_000))
        #expect(!cache.insert(scope: "s1", nonce: header.dropFirst(2).prefix(6), expiresAt: 1_300, now: 1_000))
    }

    /// Many keys spread over the shards: every one refused while it lives, all forgotten after.
    @Test func refusesEveryRepeatAcrossShards() {
        let cache = ReplayCache()
        let nonces = (0..<5_000).map { _ in Nonce.generate(bytes: 16) }
        for n in nonces { #expect(cache.insert(scope: "s", nonce: n, expiresAt: 1_300, now: 1_000)) }
        #expect(cache.count == 5_000)
        #expect(nonces.allSatisfy { !cache.insert(scope: "s", nonce: $0, expiresAt: 1_300, now: 1_299) })
        cache.sweep(now: 1_301)
        #expect(cache.count == 0)
        #expect(nonces.allSatisfy { cache.insert(scope: "s", nonce: $0, expiresAt: 1_601, now: 1_301) })
    }
}
