import Foundation
import Synchronization

/// What the user-credential check derives from a did:key identifier, kept per identifier.
///
/// A did:key fixes its key, so the key, its RFC 7638 thumbprint (the credential's `kid`) and a
/// jwt-kit verifier for it never change. Derived at each handshake they cost the point's
/// decompression (18 µs), the thumbprint (6 µs) and the verifier (8 µs) for every handshake of
/// the same user. Bounded: past `limit` identifiers it starts again empty.
public final class DIDKeyVerifiers: Sendable {
    public struct Entry: Sendable {
        public let key: PublicKey
        public let thumbprint: String
        public let verifier: JWTCodec
    }

    private let entries = Mutex<[String: Entry]>([:])
    private let limit: Int

    public init(limit: Int = 4096) {
        self.limit = limit
    }

    /// The entry of a did:key; nil for any other method (its keys live in a registry that can
    /// change, and are looked up there each time).
    public func entry(for did: DID) async throws -> Entry? {
        guard did.method == .key else { return nil }
        if let hit = entries.withLock({ $0[did.value] }) { return hit }
        guard let key = try did.embeddedKey() else { return nil }
        let entry = Entry(key: key, thumbprint: key.thumbprint, verifier: try await JWTCodec(verifying: key))
        entries.withLock {
            if $0.count >= limit { $0.removeAll(keepingCapacity: true) }
            $0[did.value] = entry
        }
        return entry
    }

    /// Verifies `credential` with its issuer's did:key when the credential names that key (or
    /// no key); nil when the issuer is not a did:key, or the credential names another key (one
    /// registered for the same identifier, which the caller looks up in the registry).
    public func verify(
        _ credential: UserCredential.Unverified, client: DID, server: DID, now: Date
    ) async throws -> UserCredentialClaims? {
        guard let entry = try await entry(for: credential.user), credential.header.kid.map({ $0 == entry.thumbprint }) ?? true else {
            return nil
        }
        return try await UserCredential.verify(credential, verifier: entry.verifier, client: client, server: server, now: now)
    }

    var count: Int { entries.withLock { $0.count } }
}
