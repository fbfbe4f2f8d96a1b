import Crypto
import Foundation

/// The ordered messages of one handshake, and what each signature covers.
///
/// A signature over "nonce A" alone could be relayed into another session. Every ATH signature
/// instead covers a context label, both identities and the hash of every message exchanged so
/// far, the way TLS 1.3's CertificateVerify does (docs/PROTOCOL.md, "Signatures").
public struct Transcript: Codable, Sendable, Equatable {
    public private(set) var messages: [JSONValue] = []

    public init() {}

    public mutating func append(_ message: JSONValue) {
        messages.append(message)
    }

    /// SHA-256 of the canonical JSON array of the messages, plus `pending` (the message being
    /// signed, without its signature).
    public func hash(including pending: JSONValue? = nil) throws -> Data {
        var all = messages
        if let pending { all.append(pending) }
        return Data(SHA256.hash(data: try CanonicalJSON.bytes(.array(all))))
    }
}

/// The labels that keep a signature made for one purpose from being accepted for another.
public enum SignatureContext: String, Sendable, CaseIterable {
    case serverIdentity = "ATH/0.1 server identity"
    case clientIdentity = "ATH/0.1 client identity"
    case scopeRequest = "ATH/0.1 scope request"
    case userConfirmation = "ATH/0.1 user confirmation"
    case handshakeComplete = "ATH/0.1 handshake complete"
}

/// The exact bytes an ATH signature covers: the canonical JSON of
/// `{"client_did", "context", "server_did", "transcript_hash"}` (plus `user_did` for step 7).
public struct SigningInput: Codable, Sendable {
    public var context: String
    public var client_did: String
    public var server_did: String
    public var user_did: String?
    public var transcript_hash: String

    public init(_ context: SignatureContext, client: DID, server: DID, user: DID? = nil, transcriptHash: Data) {
        self.context = context.rawValue
        client_did = client.value
        server_did = server.value
        user_did = user?.value
        transcript_hash = Base64URL.encode(transcriptHash)
    }

    public func bytes() throws -> [UInt8] { try CanonicalJSON.bytes(of: self) }

    public func sign(with key: PrivateKey) throws -> String {
        Base64URL.encode(try key.signature(for: bytes()))
    }

    /// Fails closed: an undecodable signature is an invalid one.
    public func verify(_ signature: String, with key: PublicKey, step: Int) throws {
        guard let raw = Base64URL.decode(signature), try key.isValidSignature(raw, for: bytes()) else {
            throw ATHError(.invalidSignature, "\(context) signature does not verify", step: step)
        }
    }
}

/// Removes the signature from a message (or from its nested `user_authorization`) before hashing.
extension JSONValue {
    func withoutSignature() -> JSONValue {
        guard case .object(var members) = self else { return self }
        members.removeValue(forKey: "signature")
        if case .object(var auth)? = members["user_authorization"] {
            auth.removeValue(forKey: "signature")
            members["user_authorization"] = .object(auth)
        }
        return .object(members)
    }
}
