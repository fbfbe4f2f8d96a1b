/// The messages of the 9-step handshake, with the field names of the ATH text (snake_case).
///
/// Fields marked "extension" are ours: the public text has no handshake id, no client key
/// share for step 9 and no signatures on steps 7-9 that bind them to the handshake. They are
/// defined in docs/PROTOCOL.md.
public enum MessageType: String, Codable, Sendable {
    case handshakeRequest = "handshake_request"
    case handshakeResponse = "handshake_response"
    case identityProof = "identity_proof"
    case identityResult = "identity_result"
    case scopeRequest = "scope_request"
    case authorizationConfirmationRequest = "authorization_confirmation_request"
    case authorizationConfirmationResponse = "authorization_confirmation_response"
    case scopeResult = "scope_result"
    case handshakeComplete = "handshake_complete"
}

/// Step 1, client -> server.
public struct HandshakeRequest: Codable, Sendable, Equatable {
    public var type: MessageType = .handshakeRequest
    public var client_did: DID
    public var client_pubkey: String
    public var versions: [String]
    public var capabilities: [String]
    public var nonce: String
    public var timestamp: Int64

    public init(client_did: DID, client_pubkey: String, versions: [String], capabilities: [String], nonce: String, timestamp: Int64) {
        self.client_did = client_did
        self.client_pubkey = client_pubkey
        self.versions = versions
        self.capabilities = capabilities
        self.nonce = nonce
        self.timestamp = timestamp
    }
}

/// Step 2, server -> client.
public struct HandshakeResponse: Codable, Sendable, Equatable {
    public var type: MessageType = .handshakeResponse
    /// Extension: names this handshake in every later request.
    public var handshake_id: String
    public var server_did: DID
    public var server_pubkey: String
    public var version: String
    public var capabilities: [String]
    public var nonce: String
    public var signature: String
    public var timestamp: Int64
}

/// Step 3, client -> server.
public struct IdentityProof: Codable, Sendable, Equatable {
    public var type: MessageType = .identityProof
    public var handshake_id: String
    public var signature: String
    public var credentials: [String]?
    public var timestamp: Int64
}

public struct IdentityMetadata: Codable, Sendable, Equatable {
    public var scopes_supported: [String]
    public var token_max_ttl: Int
    public var require_user_confirmation: Bool
}

/// Step 4, server -> client.
public struct IdentityResult: Codable, Sendable, Equatable {
    public var type: MessageType = .identityResult
    public var handshake_id: String
    public var success: Bool
    public var metadata: IdentityMetadata?
    public var error: ATHErrorBody?
    public var timestamp: Int64
}

/// The user's pre-authorization as carried in step 5.
public struct UserAuthorization: Codable, Sendable, Equatable {
    /// The user-signed JWT (typ `ath-user-auth+jwt`).
    public var credential: String
    /// The client's signature over the transcript including this credential.
    public var signature: String?
}

/// Extension: the client's ephemeral key share for the step-9 key exchange.
public struct KeyShare: Codable, Sendable, Equatable {
    public var alg: String
    /// base64url of the uncompressed point (P-256, 65 bytes) or the raw key (X25519, 32 bytes).
    public var public_key: String
}

/// Step 5, client -> server.
public struct ScopeRequest: Codable, Sendable, Equatable {
    public var type: MessageType = .scopeRequest
    public var handshake_id: String
    public var scopes: [String]
    public var ttl: Int
    public var user_authorization: UserAuthorization
    public var context: String
    public var key_exchange: KeyShare
    public var timestamp: Int64
}

public struct ClientInfo: Codable, Sendable, Equatable {
    public var name: String
    public var developer: String

    public init(name: String, developer: String) {
        self.name = name
        self.developer = developer
    }
}

/// Step 6, server -> user, over the confirmation channel (never through the client).
public struct AuthorizationConfirmationRequest: Codable, Sendable, Equatable {
    public var type: MessageType = .authorizationConfirmationRequest
    public var request_id: String
    public var handshake_id: String
    public var server_did: DID
    public var user_did: DID
    public var client_did: DID
    public var client_info: ClientInfo
    public var requested_scopes: [String]
    public var context: String
    public var ttl: Int
    public var restrictions: Restrictions?
    public var expires_at: Int64
    /// Hash of the client's transcript (steps 1-5): the user's signature in step 7 covers it.
    public var transcript_hash: String
    public var timestamp: Int64
}

/// Step 7, user -> server.
public struct AuthorizationConfirmationResponse: Codable, Sendable, Equatable {
    public var type: MessageType = .authorizationConfirmationResponse
    public var request_id: String
    public var approved: Bool
    public var approved_scopes: [String]
    /// The latest moment the user lets the grant last (at most the credential's expiry).
    public var expires_at: Int64
    public var signature: String
    public var timestamp: Int64
}

public struct DeniedScope: Codable, Sendable, Equatable {
    public var scope: String
    public var reason: String

    public init(scope: String, reason: String) {
        self.scope = scope
        self.reason = reason
    }
}

/// Step 8, server -> client.
public struct ScopeResult: Codable, Sendable, Equatable {
    public var type: MessageType = .scopeResult
    public var handshake_id: String
    public var scopes_granted: [String]
    public var scopes_denied: [DeniedScope]
    public var ttl_granted: Int
    public var restrictions: Restrictions
    public var timestamp: Int64
}

/// Step 9, server -> client.
public struct HandshakeComplete: Codable, Sendable, Equatable {
    public var type: MessageType = .handshakeComplete
    public var handshake_id: String
    public var key_exchange_alg: String
    public var key_exchange_params: String
    public var cipher_suite: String
    public var access_token: String
    /// Extension: when this access token expires (it is renewed within the grant).
    public var token_expires_at: Int64
    /// Extension: the grant this handshake created.
    public var grant_id: String
    /// Extension: the server's signature over the client's whole transcript.
    public var signature: String
    public var timestamp: Int64
}

/// The HTTP answer to steps 5 and the result poll: steps 8 and 9 together.
public struct HandshakeOutcome: Codable, Sendable, Equatable {
    public var scope_result: JSONValue
    public var handshake_complete: JSONValue

    public init(scope_result: JSONValue, handshake_complete: JSONValue) {
        self.scope_result = scope_result
        self.handshake_complete = handshake_complete
    }
}

/// The HTTP answer while the user has not answered yet.
public struct ConfirmationPending: Codable, Sendable, Equatable {
    public var status: String = "pending_user_confirmation"
    public var handshake_id: String
    public var request_id: String
    public var expires_at: Int64
    public var poll_interval: Int

    public init(handshake_id: String, request_id: String, expires_at: Int64, poll_interval: Int) {
        self.handshake_id = handshake_id
        self.request_id = request_id
        self.expires_at = expires_at
        self.poll_interval = poll_interval
    }
}

/// A handshake message whose `type` field must name it: decoding a step-2 body as a step-1
/// message would otherwise succeed wherever the fields happen to overlap.
public protocol TypedMessage: Codable, Sendable {
    static var messageType: MessageType { get }
    var type: MessageType { get }
}

extension HandshakeRequest: TypedMessage { public static let messageType = MessageType.handshakeRequest }
extension HandshakeResponse: TypedMessage { public static let messageType = MessageType.handshakeResponse }
extension IdentityProof: TypedMessage { public static let messageType = MessageType.identityProof }
extension IdentityResult: TypedMessage { public static let messageType = MessageType.identityResult }
extension ScopeRequest: TypedMessage { public static let messageType = MessageType.scopeRequest }
extension AuthorizationConfirmationRequest: TypedMessage {
    public static let messageType = MessageType.authorizationConfirmationRequest
}
extension AuthorizationConfirmationResponse: TypedMessage {
    public static let messageType = MessageType.authorizationConfirmationResponse
}
extension ScopeResult: TypedMessage { public static let messageType = MessageType.scopeResult }
extension HandshakeComplete: TypedMessage { public static let messageType = MessageType.handshakeComplete }

extension JSONValue {
    /// Decodes a handshake message, checking its `type` and tagging a failure with the step.
    public func message<T: TypedMessage>(_ type: T.Type, step: Int) throws -> T {
        do {
            let m = try decode(T.self)
            guard m.type == T.messageType else {
                throw ATHError(.malformedMessage, "expected a \(T.messageType.rawValue) message, got \(m.type.rawValue)")
            }
            return m
        } catch var e as ATHError {
            e.step = step
            throw e
        }
    }
}
