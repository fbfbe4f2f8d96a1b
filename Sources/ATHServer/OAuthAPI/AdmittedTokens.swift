import ATHCore
import ATHStore
import Synchronization

/// The v0.1 tokens this process admitted lately, with their opened provider grants, so that an
/// agent's next request is checked without the store: reading the token and its sealed grant,
/// opening and decoding the grant took more CPU than all the rest of the proxy's check
/// (docs/PERFORMANCE.md, "The gateway against nginx").
///
/// Revocation stays the store's: a remembered token is used without reading it again for
/// `recheckInterval` at most, then its standing is read again (one indexed column) before the
/// request passes. A revocation made through this process is known at once; one made through
/// another instance, within that interval (the reference asks for a bounded time, 5 s
/// recommended; the default is 1 s). Expiry is checked on every request against the clock.
final class AdmittedTokens: Sendable {
    struct Entry: Sendable {
        var token: IssuedAccessToken
        var grant: ProviderGrant
        /// When the store last said the token stands (unix seconds).
        var checkedAt: Int64
    }

    let recheckInterval: Int64
    /// At most twice this many entries (`BoundedCache`).
    let capacity: Int
    private let entries: BoundedCache<String, Entry>
    private let listener = Mutex<Task<Void, Never>?>(nil)

    /// `recheckInterval` 0: nothing is remembered, every request reads the store. With a `feed`
    /// (a store several instances share), revocations made through any instance are forgotten
    /// here as they commit, not after the interval.
    init(recheckInterval: Int64, capacity: Int = 50_000, feed: (any RevocationFeed)? = nil) {
        self.recheckInterval = recheckInterval
        self.capacity = capacity
        entries = BoundedCache(capacity: capacity)
        guard let feed else { return }
        let revocations = feed.revocations()
        let task = Task { [weak self] in
            for await revocation in revocations {
                guard let self else { return }
                switch revocation {
                case .issuedToken(let digest): self.forget(digest)
                case .registration(let clientID): self.entries.removeAll { $0.token.clientID == clientID }
                case .grants, .token: break
                }
            }
        }
        listener.withLock { $0 = task }
    }

    deinit { listener.withLock { $0?.cancel() } }

    /// The entry for `digest` while it needs no new reading at `now`; nil: read the store.
    func fresh(_ digest: String, now: Int64) -> Entry? {
        guard recheckInterval > 0 else { return nil }
        guard let entry = entries.value(forKey: digest) else { return nil }
        return now - entry.checkedAt < recheckInterval ? entry : nil
    }

    /// The entry for `digest` whatever its age: what a standing re-check confirms.
    func remembered(_ digest: String) -> Entry? {
        entries.value(forKey: digest)
    }

    func remember(_ digest: String, _ entry: Entry) {
        guard recheckInterval > 0 else { return }
        entries.set(entry, forKey: digest)
    }

    /// The token stops being admitted from memory (revoked here, or found revoked or gone).
    func forget(_ digest: String) {
        entries.removeValue(forKey: digest)
    }
}
