import Crypto
import Foundation

/// The server's side of a handshake between steps 2 and 3, carried by the agent instead of
/// stored, as a TLS session ticket or a TCP SYN cookie carries a server's state.
///
/// Step 1 is unauthenticated: anyone can send one from a did:key made for the purpose. Stored,
/// each cost the server a durable write and left an audit record for good, so a flood of them
/// grew the store without end. With a ticket, step 1 writes nothing; the handshake is first
/// written at step 3, once the agent has signed the transcript with the key it announced, and
/// a handshake that completes at once costs two writes instead of three.
///
/// A ticket needs integrity, not secrecy: all of it is what the agent sent at step 1 and was
/// answered at step 2. It is the handshake's stored document and an HMAC-SHA256 of it under a
/// key derived from the server's key, so that any instance holding the server's key takes the
/// ticket another made, and a key rotated out of the ring voids what it made (the agent starts
/// again). A MAC has no nonce to repeat, so no number of tickets wears the key out. Single use
/// comes from the store: step 3 writes the step-1 nonce with the handshake, in one transaction.
public struct HandshakeTicket: Sendable {
    /// Makes with the first; takes what any of them made (a key being rotated out).
    let keys: [SymmetricKey]

    /// The header that carries it: in the answer to step 1, and back with step 3.
    public static let header = "ATH-Handshake-Ticket"
    /// A ticket must fit one header field (8 KiB at the server, docs/PROTOCOL.md): a step 1
    /// whose ticket would be longer is refused (PAYLOAD_TOO_LARGE) rather than answered with
    /// one that step 3 could not bring back.
    public static let maxLength = 7 * 1024
    static let prefix = "v1."

    public init(keys: [SymmetricKey]) {
        precondition(!keys.isEmpty, "a handshake ticket needs a key")
        self.keys = keys
    }

    /// Keys derived from each key of the server's ring.
    public init(derivedFrom identity: ServerIdentity) {
        self.init(keys: identity.keyRing.map { SecretSealer.derivedKey($0, purpose: "ath/0.1 handshake ticket") })
    }

    /// "v1." ‖ base64url(the handshake's stored JSON) ‖ "." ‖ base64url(HMAC-SHA256 of that JSON).
    public func make(_ handshake: ServerHandshake) throws -> String {
        let document = try handshake.storedJSON()
        let mac = HMAC<SHA256>.authenticationCode(for: document, using: keys[0])
        let ticket = Self.prefix + Base64URL.encode(Data(document)) + "." + Base64URL.encode(Data(mac))
        guard ticket.utf8.count <= Self.maxLength else {
            throw ATHError(.payloadTooLarge, "this handshake_request is too large for the server to answer", step: 1)
        }
        return ticket
    }

    /// The handshake `id` as step 2 left it. HANDSHAKE_NOT_FOUND for a ticket this server did
    /// not make, one altered, or one made for another handshake: whatever is wrong with it, the
    /// answer is the same, and nothing in it is read before its MAC is checked.
    public func open(_ ticket: String, handshakeID id: String) throws -> ServerHandshake {
        let refused = ATHError(.handshakeNotFound, "no handshake with this id and ticket", step: 3)
        guard ticket.utf8.count <= Self.maxLength, ticket.hasPrefix(Self.prefix) else { throw refused }
        // base64url has no ".": whatever comes before the last one is the document, or fails to decode.
        let body = ticket.utf8.dropFirst(Self.prefix.utf8.count)
        guard let dot = body.lastIndex(of: UInt8(ascii: ".")),
            let document = Base64URL.decode(String(Substring(body[..<dot]))),
            let mac = Base64URL.decode(String(Substring(body[body.index(after: dot)...]))),
            keys.contains(where: { HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: document, using: $0) })
        else { throw refused }
        // Made by this server, so it decodes; a document from a release that wrote it otherwise
        // would not, and is refused the same way.
        guard let handshake = try? JSONValue.parse(document).decode(ServerHandshake.self), handshake.id == id,
            handshake.state == .awaitingIdentityProof
        else { throw refused }
        return handshake
    }
}
