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
    let key: SymmetricKey

    public init(key: SymmetricKey) {
        self.key = key
    }

    /// A sealing key derived from the server's private key (HKDF-SHA256, info
    /// "ath/0.1 secrets at rest"): nothing more to configure, and stable across restarts with the
    /// same key file. A new server key makes sealed sessions unreadable, which fails closed:
    /// agents run a new handshake.
    public init(derivedFrom privateKey: PrivateKey) {
        let material: Data =
            switch privateKey {
            case .p256(let k): k.rawRepresentation
            case .ed25519(let k): k.rawRepresentation
            }
        key = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: material), salt: Data("ath/0.1".utf8), info: Data("ath/0.1 secrets at rest".utf8),
            outputByteCount: 32)
    }

    /// nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes).
    public func seal(_ secret: SymmetricKey, for record: String) throws -> Data {
        try secret.withUnsafeBytes { try seal(bytes: $0, for: record) }
    }

    /// Seals bytes (a console session, a sign-in challenge) the same way.
    public func seal(bytes: some DataProtocol, for record: String) throws -> Data {
        guard let combined = try AES.GCM.seal(bytes, using: key, authenticating: Data(record.utf8)).combined else {
            throw ATHError(.internalError, "AES-GCM gave no combined form")
        }
        return combined
    }

    /// nil for bytes sealed under another key, for another record, or altered.
    public func openBytes(_ sealed: some DataProtocol, for record: String) -> Data? {
        guard let box = try? AES.GCM.SealedBox(combined: sealed) else { return nil }
        return try? AES.GCM.open(box, using: key, authenticating: Data(record.utf8))
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
