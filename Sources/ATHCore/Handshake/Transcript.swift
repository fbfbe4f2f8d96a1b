import Crypto
import Foundation

/// The ordered messages of one handshake, and what each signature covers.
///
/// A signature over "nonce A" alone could be relayed into another session. Every ATH signature
/// instead covers a context label, both identities and the hash of every message exchanged so
/// far, the way TLS 1.3's CertificateVerify does (docs/PROTOCOL.md, "Signatures").
public struct Transcript: Codable, Sendable, Equatable {
    public private(set) var messages: [JSONValue] = []
    /// Each message's canonical bytes, computed when it was appended (to hash it): the stored
    /// handshake's document writes them again rather than canonicalizing every message anew
    /// (`ServerHandshake.storedJSON`).
    private var canonical: [[UInt8]] = []
    /// SHA-256 fed with the canonical array so far, without its closing bracket: a hash at
    /// step n then costs the pending message alone, not the whole transcript again (the server
    /// hashes it five times a handshake).
    private var running = Self.opened()

    public init() {}

    private static func opened() -> SHA256 {
        var hash = SHA256()
        withUnsafeBytes(of: UInt8(ascii: "[")) { hash.update(bufferPointer: $0) }
        return hash
    }

    public init(from decoder: any Decoder) throws {
        for message in try decoder.container(keyedBy: CodingKeys.self).decode([JSONValue].self, forKey: .messages) {
            try append(message)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(messages, forKey: .messages)
    }

    enum CodingKeys: String, CodingKey { case messages }

    public static func == (a: Self, b: Self) -> Bool { a.messages == b.messages }

    /// Appends a message; one that cannot be canonicalized (a number outside I-JSON) is refused.
    public mutating func append(_ message: JSONValue) throws {
        append(message, canonical: try CanonicalJSON.bytes(message))
    }

    /// Appends a signed message, whose canonical bytes are already known.
    mutating func append(_ message: SignedMessage) {
        append(message.value, canonical: message.canonical)
    }

    private mutating func append(_ message: JSONValue, canonical bytes: [UInt8]) {
        if !messages.isEmpty { withUnsafeBytes(of: UInt8(ascii: ",")) { running.update(bufferPointer: $0) } }
        running.update(data: bytes)
        messages.append(message)
        canonical.append(bytes)
    }

    /// The canonical bytes of this transcript as `encode(to:)` writes it (`{"messages":[...]}`),
    /// from the messages' kept canonical bytes.
    func canonicalEncoding() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(canonical.reduce(16) { $0 + $1.count + 1 })
        out += #"{"messages":["#.utf8
        for (i, message) in canonical.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out += message
        }
        out += "]}".utf8
        return out
    }

    /// SHA-256 of the canonical JSON array of the messages, plus `pending` (the message being
    /// signed, without its signature).
    public func hash(including pending: JSONValue? = nil) throws -> Data {
        hash(includingCanonical: try pending.map(CanonicalJSON.bytes))
    }

    /// What a signature on `message` covers: the messages so far and `message` without its
    /// signature.
    func hash(includingUnsigned message: SignedMessage) -> Data {
        hash(includingCanonical: message.unsigned)
    }

    fileprivate func hash(includingCanonical pending: [UInt8]?) -> Data {
        var hash = running
        if let pending {
            if !messages.isEmpty { withUnsafeBytes(of: UInt8(ascii: ",")) { hash.update(bufferPointer: $0) } }
            hash.update(data: pending)
        }
        withUnsafeBytes(of: UInt8(ascii: "]")) { hash.update(bufferPointer: $0) }
        return Data(hash.finalize())
    }
}

/// A signed message with its canonical bytes, and those of the same message without its
/// signature (what the signature covers, through the transcript hash), from one
/// canonicalization: each signed message was canonicalized twice before, once per form.
struct SignedMessage: Sendable {
    let value: JSONValue
    let canonical: [UInt8]
    let unsigned: [UInt8]

    /// The members `withoutSignature()` removes: `signature`, and for step 5
    /// `user_authorization.signature`.
    static func isSignature(parent: String?, key: String) -> Bool {
        key == "signature" && (parent == nil || parent == "user_authorization")
    }

    /// A received message, as it arrived.
    init(received value: JSONValue) throws {
        let marked = try CanonicalJSON.marked(value, mark: Self.isSignature)
        self.value = value
        canonical = marked.bytes
        unsigned = marked.removingMembers()
    }

    private init(value: JSONValue, canonical: [UInt8], unsigned: [UInt8]) {
        self.value = value
        self.canonical = canonical
        self.unsigned = unsigned
    }

    /// Signs `message` (whose signature field may be empty or absent) after `transcript`.
    static func sign(
        _ message: some Encodable, _ context: SignatureContext, client: DID, server: DID, user: DID?, after transcript: Transcript,
        key: PrivateKey
    ) throws -> SignedMessage {
        guard case .object(var members) = try JSONValue.of(message).withoutSignature() else {
            throw ATHError(.internalError, "a signed message must be a JSON object")
        }
        // The signature's place, held by an empty value while the rest is canonicalized.
        let nested = context == .scopeRequest
        func place(_ signature: String) {
            if nested, case .object(var auth)? = members["user_authorization"] {
                auth["signature"] = .string(signature)
                members["user_authorization"] = .object(auth)
            } else {
                members["signature"] = .string(signature)
            }
        }
        place("")
        let marked = try CanonicalJSON.marked(.object(members), mark: isSignature)
        let unsigned = marked.removingMembers()
        let signature = try SigningInput(
            context, client: client, server: server, user: user, transcriptHash: transcript.hash(includingCanonical: unsigned)
        ).sign(with: key)
        place(signature)
        // No single place noted (not an object where one was expected): canonicalized again.
        let canonical =
            try marked.replacingValue(size: signature.utf8.count + 2) { CanonicalJSON.string(signature, into: &$0) }
            ?? CanonicalJSON.bytes(.object(members))
        return SignedMessage(value: .object(members), canonical: canonical, unsigned: unsigned)
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
public struct SigningInput: Sendable {
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

    public func bytes() throws -> [UInt8] {
        var members: [String: JSONValue] = [
            "context": .string(context), "client_did": .string(client_did), "server_did": .string(server_did),
            "transcript_hash": .string(transcript_hash),
        ]
        if let user_did { members["user_did"] = .string(user_did) }
        return try CanonicalJSON.bytes(.object(members))
    }

    /// Signs a message after `transcript`: the message is converted once, signed without its
    /// signature, and returned with the signature in place (for step 5, inside
    /// `user_authorization`).
    public static func signedMessage(
        _ message: some Encodable, _ context: SignatureContext, client: DID, server: DID, user: DID? = nil, after transcript: Transcript,
        key: PrivateKey
    ) throws -> JSONValue {
        try SignedMessage.sign(message, context, client: client, server: server, user: user, after: transcript, key: key).value
    }

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
