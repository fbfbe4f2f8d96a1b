import Crypto
import Foundation

/// Seals the secrets a server must keep between requests (a session's proof key) before they
/// reach the store.
///
/// A copy of the database alone must not let anyone prove possession of a session: with the
/// proof key in the clear, a leaked backup plus one intercepted token would be enough. Sealed with
/// AES-256-GCM under a key the store never holds, and bound to the record it belongs to (the
/// session id as associated data) so that a sealed key cannot be moved to another row.
public struct SecretSealer: Sendable {
    /// Seals; the first of `ring`.
    let key: Ring.Key
    /// Every key that opens, by key id: the sealing key and the keys of a server key being
    /// rotated, so that what was sealed before a rotation still opens after it.
    let ring: Ring

    struct Ring: Sendable {
        struct Key: Sendable {
            let id: [UInt8]
            let key: SymmetricKey
        }
        let keys: [Key]

        func key(id: some Collection<UInt8>) -> Key? { keys.first { $0.id.elementsEqual(id) } }
    }

    /// Marks the sealed form with a key id: 0xA7 ‖ key id (8 bytes) ‖ nonce ‖ ciphertext ‖ tag.
    /// Blobs sealed before key ids (nonce ‖ ciphertext ‖ tag) are still opened, by trying each
    /// key: authentication decides, so a blob that happens to begin like a marked one is safe.
    static let marker: UInt8 = 0xA7
    static let keyIDCount = 8

    public init(key: SymmetricKey) {
        self.init(keys: [key])
    }

    /// Seals with the first key; opens with any.
    public init(keys: [SymmetricKey]) {
        precondition(!keys.isEmpty, "a sealer needs a key")
        let ring = keys.map { key in
            Ring.Key(id: Array(key.withUnsafeBytes { SHA256.hash(data: Data("ath/0.1 sealing key id".utf8) + Data($0)) }.prefix(Self.keyIDCount)), key: key)
        }
        self.key = ring[0]
        self.ring = Ring(keys: ring)
    }

    /// A sealing key derived from the server's private key (HKDF-SHA256, info
    /// "ath/0.1 secrets at rest"): nothing more to configure, and stable across restarts with the
    /// same key file. A server key no longer in the ring makes what it sealed unreadable, which
    /// fails closed: agents run a new handshake.
    public init(derivedFrom privateKey: PrivateKey) {
        self.init(keys: [Self.derivedKey(privateKey)])
    }

    /// Seals under the identity's token key; opens what any key of its ring sealed.
    public init(derivedFrom identity: ServerIdentity) {
        self.init(keys: identity.keyRing.map(Self.derivedKey))
    }

    static func derivedKey(_ privateKey: PrivateKey) -> SymmetricKey {
        derivedKey(privateKey, purpose: "ath/0.1 secrets at rest")
    }

    /// A key of the server's own for `purpose` (HKDF-SHA256 from its private key, the purpose as
    /// info): one key per use, none of them the signing key.
    static func derivedKey(_ privateKey: PrivateKey, purpose: String) -> SymmetricKey {
        let material: Data =
            switch privateKey {
            case .p256(let k): k.rawRepresentation
            case .ed25519(let k): k.rawRepresentation
            }
        return HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: material), salt: Data("ath/0.1".utf8), info: Data(purpose.utf8), outputByteCount: 32)
    }

    /// 0xA7 ‖ key id ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes).
    public func seal(_ secret: SymmetricKey, for record: String) throws -> Data {
        try secret.withUnsafeBytes { try seal(bytes: $0, for: record) }
    }

    /// Seals bytes (a console session, a sign-in challenge) the same way.
    public func seal(bytes: some DataProtocol, for record: String) throws -> Data {
        guard let combined = try AES.GCM.seal(bytes, using: key.key, authenticating: Data(record.utf8)).combined else {
            throw ATHError(.internalError, "AES-GCM gave no combined form")
        }
        var sealed = Data([Self.marker])
        sealed.append(contentsOf: key.id)
        sealed.append(combined)
        return sealed
    }

    /// nil for bytes sealed under a key outside the ring, for another record, or altered.
    public func openBytes(_ sealed: some DataProtocol, for record: String) -> Data? {
        let sealed = Data(sealed)
        let associated = Data(record.utf8)
        if sealed.count > 1 + Self.keyIDCount, sealed.first == Self.marker,
            let key = ring.key(id: sealed.dropFirst().prefix(Self.keyIDCount)),
            let box = try? AES.GCM.SealedBox(combined: sealed.dropFirst(1 + Self.keyIDCount)),
            let opened = try? AES.GCM.open(box, using: key.key, authenticating: associated)
        {
            return opened
        }
        guard let box = try? AES.GCM.SealedBox(combined: sealed) else { return nil }
        for key in ring.keys {
            if let opened = try? AES.GCM.open(box, using: key.key, authenticating: associated) { return opened }
        }
        return nil
    }

    /// A short-lived token only this server can make and read (a sign-in challenge, an OpenID
    /// login state, a nonce): `fields` plus `exp` as canonical JSON, sealed for `purpose`, base64url.
    public func token(_ fields: [String: JSONValue], for purpose: String, expiresAt: Int64) throws -> String {
        var fields = fields
        fields["exp"] = .integer(expiresAt)
        return Base64URL.encode(try seal(bytes: try CanonicalJSON.bytes(.object(fields)), for: purpose))
    }

    /// The fields of a `token` made for `purpose` (`exp` among them), or nil when it is not ours,
    /// made for something else, altered, or expired at `now`.
    public func openToken(_ token: String, for purpose: String, now: Int64) -> [String: JSONValue]? {
        guard let sealed = Base64URL.decode(token), let opened = openBytes(sealed, for: purpose),
            case .object(let fields)? = try? JSONValue.parse(opened), case .integer(let expiry)? = fields["exp"], expiry > now
        else { return nil }
        return fields
    }

    /// Fails (closed) for a blob sealed under another key, for another record, or altered.
    public func open(_ sealed: Data, for record: String) throws -> SymmetricKey {
        guard let opened = openBytes(sealed, for: record) else {
            throw ATHError(.internalError, "a stored secret does not open with this server's key")
        }
        return SymmetricKey(data: opened)
    }
}
