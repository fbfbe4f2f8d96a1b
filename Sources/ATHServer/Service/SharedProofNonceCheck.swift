import ATHCore
import ATHStore
import Crypto
import Foundation
import Synchronization

/// The replay check across instances: each proof nonce this instance admits is also recorded in
/// the shared store, so that its reuse on any instance is refused. Requests are grouped: while a
/// batch is on its way to the database, the nonces of the requests arriving meanwhile wait for
/// the next one. At low load each request makes one round trip; under load a round trip serves
/// many requests, without a timer that would add latency to each.
final class SharedProofNonceCheck: Sendable {
    let store: any SharedProofNonces
    let clock: @Sendable () -> Date

    private struct Waiting {
        var nonce: ProofNonce
        var continuation: CheckedContinuation<Bool, any Error>
    }

    private struct State {
        var waiting: [Waiting] = []
        var flushing = false
    }

    private let state = Mutex(State())

    init(store: any SharedProofNonces, clock: @escaping @Sendable () -> Date) {
        self.store = store
        self.clock = clock
    }

    /// The store's key for a proof nonce of a session: a digest, so a key's size does not depend
    /// on what the client sent.
    static func key(session: String, nonce: some StringProtocol) -> String {
        var hash = SHA256()
        hash.update(data: Array(session.utf8))
        hash.update(data: [0x0A])
        hash.update(data: Array(nonce.utf8))
        return Base64URL.encode(Data(hash.finalize()))
    }

    /// True when no instance used this nonce before; STORE_UNAVAILABLE when the shared record
    /// cannot be made: the request is then refused, never admitted.
    func admit(session: String, nonce: some StringProtocol, expiresAt: Int64) async throws -> Bool {
        let entry = ProofNonce(key: Self.key(session: session, nonce: nonce), expiresAt: expiresAt)
        do {
            return try await enqueue(entry)
        } catch StoreError.unavailable {
            throw ATHError(.storeUnavailable, "the replay check could not reach the server's database; retry with a new proof")
        }
    }

    /// Waits for the batch that records `entry`.
    private func enqueue(_ entry: ProofNonce) async throws -> Bool {
        try await withCheckedThrowingContinuation { continuation in
            let start = state.withLock { s in
                s.waiting.append(Waiting(nonce: entry, continuation: continuation))
                guard !s.flushing else { return false }
                s.flushing = true
                return true
            }
            if start { Task { await self.flush() } }
        }
    }

    /// Sends what is waiting, again and again, until nothing is.
    private func flush() async {
        while true {
            let batch = state.withLock { s in
                let batch = s.waiting
                s.waiting = []
                if batch.isEmpty { s.flushing = false }
                return batch
            }
            guard !batch.isEmpty else { return }
            do {
                let fresh = try await store.recordProofNonces(batch.map(\.nonce), now: Freshness.unix(clock()))
                for (waiting, isFresh) in zip(batch, fresh) { waiting.continuation.resume(returning: isFresh) }
            } catch {
                for waiting in batch { waiting.continuation.resume(throwing: error) }
            }
        }
    }
}
