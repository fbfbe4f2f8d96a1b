/// Every refusal the protocol can produce, with its HTTP status and whether a retry can help.
///
/// One catalogue serves the server (which renders it as `{code, message, ...}`), the agent SDK
/// (which maps the JSON back to this type) and docs/PROTOCOL.md (which lists it), so a code
/// never means two things.
public struct ATHError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Codable, CaseIterable {
        // Message level, any step.
        case malformedMessage = "MALFORMED_MESSAGE"
        case payloadTooLarge = "PAYLOAD_TOO_LARGE"
        /// A request head over the server's header size or count limits (answered before routing).
        case headersTooLarge = "HEADERS_TOO_LARGE"
        /// A body that is not `application/json` where JSON is expected (or the frames' type).
        case unsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE"
        case unsupportedVersion = "UNSUPPORTED_VERSION"
        case unsupportedAlgorithm = "UNSUPPORTED_ALGORITHM"
        case timestampOutOfRange = "TIMESTAMP_OUT_OF_RANGE"
        case nonceReplayed = "NONCE_REPLAYED"
        // Handshake identity, steps 1-4.
        case invalidSignature = "INVALID_SIGNATURE"
        case unknownIdentity = "UNKNOWN_IDENTITY"
        case keyMismatch = "KEY_MISMATCH"
        case downgradeDetected = "DOWNGRADE_DETECTED"
        // Handshake flow.
        case handshakeNotFound = "HANDSHAKE_NOT_FOUND"
        case unexpectedMessage = "UNEXPECTED_MESSAGE"
        case handshakeExpired = "HANDSHAKE_EXPIRED"
        case handshakeFailed = "HANDSHAKE_FAILED"
        // Scope request and the user, steps 5-8.
        case invalidUserCredential = "INVALID_USER_CREDENTIAL"
        case userCredentialExpired = "USER_CREDENTIAL_EXPIRED"
        case credentialClientMismatch = "CREDENTIAL_CLIENT_MISMATCH"
        case scopeNotSupported = "SCOPE_NOT_SUPPORTED"
        case scopeExceedsCredential = "SCOPE_EXCEEDS_CREDENTIAL"
        case confirmationTimeout = "CONFIRMATION_TIMEOUT"
        case userDenied = "USER_DENIED"
        case noScopesGranted = "NO_SCOPES_GRANTED"
        case confirmationNotFound = "CONFIRMATION_NOT_FOUND"
        case userAuthenticationFailed = "USER_AUTHENTICATION_FAILED"
        case credentialRevoked = "CREDENTIAL_REVOKED"
        // Access to the protected API.
        case tokenMissing = "TOKEN_MISSING"
        case tokenInvalid = "TOKEN_INVALID"
        case tokenExpired = "TOKEN_EXPIRED"
        case tokenRevoked = "TOKEN_REVOKED"
        case grantExpired = "GRANT_EXPIRED"
        case proofMissing = "PROOF_MISSING"
        case proofInvalid = "PROOF_INVALID"
        case proofReplayed = "PROOF_REPLAYED"
        case scopeInsufficient = "SCOPE_INSUFFICIENT"
        case rateLimited = "RATE_LIMITED"
        case amountLimitExceeded = "AMOUNT_LIMIT_EXCEEDED"
        case ipNotAllowed = "IP_NOT_ALLOWED"
        case outsideAccessTime = "OUTSIDE_ACCESS_TIME"
        // The account registry's admin API.
        case adminAuthenticationRequired = "ADMIN_AUTHENTICATION_REQUIRED"
        case accountNotFound = "ACCOUNT_NOT_FOUND"
        case accountConflict = "ACCOUNT_CONFLICT"
        /// The admin API's grant or token does not exist.
        case notFound = "NOT_FOUND"
        /// The agent's or user's account is suspended by the platform: no handshake, no access.
        case accountSuspended = "ACCOUNT_SUSPENDED"
        /// A console request that changes something came without the session's CSRF token or from another origin.
        case csrfCheckFailed = "CSRF_CHECK_FAILED"
        // Agent certificates (ACPs CAI)
        case agentCertificateInvalid = "AGENT_CERTIFICATE_INVALID"
        case agentIdentityMismatch = "AGENT_IDENTITY_MISMATCH"
        // Session layer
        /// No open session channel has this id (never attached, or ended: grant over, revoked,
        /// closed, idle, connection gone); attach a new one.
        case channelNotFound = "CHANNEL_NOT_FOUND"
        // The v0.1 HTTP API (OAuth-based; docs/GATEWAY.md), spelled as its reference spells them.
        case invalidAttestation = "INVALID_ATTESTATION"
        /// A client id no registration has.
        case agentNotRegistered = "AGENT_NOT_REGISTERED"
        /// A known client id with the wrong client secret.
        case invalidClient = "INVALID_CLIENT"
        case agentAlreadyRegistered = "AGENT_ALREADY_REGISTERED"
        case agentUnapproved = "AGENT_UNAPPROVED"
        case providerNotApproved = "PROVIDER_NOT_APPROVED"
        case scopeNotApproved = "SCOPE_NOT_APPROVED"
        case redirectURIMismatch = "REDIRECT_URI_MISMATCH"
        case sessionNotFound = "SESSION_NOT_FOUND"
        case sessionExpired = "SESSION_EXPIRED"
        /// An authorization session the user has not finished (or already redeemed).
        case sessionNotCompleted = "SESSION_NOT_COMPLETED"
        case stateMismatch = "STATE_MISMATCH"
        case providerMismatch = "PROVIDER_MISMATCH"
        /// The upstream OAuth provider refused or failed the code exchange.
        case oauthError = "OAUTH_ERROR"
        // The gateway's forwarding.
        /// No route of the service's operation map covers this method and path.
        case operationNotMapped = "OPERATION_NOT_MAPPED"
        case upstreamUnavailable = "UPSTREAM_UNAVAILABLE"
        case upstreamTimeout = "UPSTREAM_TIMEOUT"
        /// The server's database could not be reached or did not answer in time: nothing was
        /// changed, the same request may succeed shortly.
        case storeUnavailable = "STORE_UNAVAILABLE"
        case internalError = "INTERNAL_ERROR"
    }

    public var code: Code
    public var message: String
    /// The handshake step that failed, when the error is a handshake refusal.
    public var step: Int?

    public init(_ code: Code, _ message: String, step: Int? = nil) {
        self.code = code
        self.message = message
        self.step = step
    }

    public var description: String { "\(code.rawValue): \(message)" }

    public var httpStatus: Int { code.httpStatus }
    public var retryable: Bool { code.retryable }
}

extension ATHError.Code {
    public var httpStatus: Int {
        switch self {
        case .malformedMessage, .unsupportedVersion, .unsupportedAlgorithm, .scopeNotSupported, .redirectURIMismatch, .sessionNotFound,
            .sessionExpired, .sessionNotCompleted, .stateMismatch:
            400
        case .payloadTooLarge: 413
        case .headersTooLarge: 431
        case .unsupportedMediaType: 415
        case .timestampOutOfRange, .nonceReplayed, .invalidSignature, .unknownIdentity, .keyMismatch,
            .invalidUserCredential, .userCredentialExpired, .userAuthenticationFailed, .tokenMissing,
            .tokenInvalid, .tokenExpired, .tokenRevoked, .grantExpired, .proofMissing, .proofInvalid,
            .proofReplayed, .adminAuthenticationRequired, .credentialRevoked, .agentCertificateInvalid, .invalidAttestation, .invalidClient:
            401
        case .downgradeDetected, .credentialClientMismatch, .scopeExceedsCredential, .userDenied,
            .noScopesGranted, .scopeInsufficient, .amountLimitExceeded, .ipNotAllowed, .outsideAccessTime, .accountSuspended, .csrfCheckFailed,
            .agentIdentityMismatch, .agentNotRegistered, .agentUnapproved, .providerNotApproved, .scopeNotApproved, .providerMismatch,
            .operationNotMapped:
            403
        case .handshakeNotFound, .confirmationNotFound, .accountNotFound, .channelNotFound, .notFound: 404
        case .confirmationTimeout: 408
        case .unexpectedMessage, .accountConflict, .agentAlreadyRegistered: 409
        case .handshakeExpired, .handshakeFailed: 410
        case .rateLimited: 429
        case .internalError: 500
        case .oauthError, .upstreamUnavailable: 502
        case .upstreamTimeout: 504
        case .storeUnavailable: 503
        }
    }

    /// Whether repeating the same request later can succeed without changing it.
    public var retryable: Bool {
        switch self {
        case .rateLimited, .internalError, .confirmationTimeout, .outsideAccessTime, .upstreamUnavailable, .upstreamTimeout,
            .storeUnavailable:
            true
        default: false
        }
    }
}

/// The JSON body of every error response: `{code, message, step?, retryable}`.
public struct ATHErrorBody: Codable, Sendable, Equatable {
    public var code: String
    public var message: String
    public var step: Int?
    public var retryable: Bool

    public init(_ error: ATHError) {
        code = error.code.rawValue
        message = error.message
        step = error.step
        retryable = error.retryable
    }

    /// The typed error; an unknown code from a newer peer maps to INTERNAL_ERROR, keeping its text.
    public var error: ATHError {
        let known = ATHError.Code(rawValue: code)
        return ATHError(known ?? .internalError, known == nil ? "\(code): \(message)" : message, step: step)
    }
}
