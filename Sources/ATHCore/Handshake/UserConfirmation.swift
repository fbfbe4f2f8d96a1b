import Foundation

/// The user's answer to a step-6 request, signed by the user's key (step 7).
///
/// The signature covers the step-6 request as received (which carries the hash of the agent's
/// transcript) and the answer, so an approval cannot be moved to another request or handshake.
public enum UserConfirmation {
    /// `expiresAt` caps the grant; by default the user approves the duration requested, so the
    /// cap is the latest end a grant from this request can have (approved at the request's
    /// deadline), and never shortens it.
    public static func answer(
        _ request: AuthorizationConfirmationRequest, approvedScopes: [String]?, expiresAt: Int64? = nil, key: PrivateKey,
        now: Date
    ) throws -> JSONValue {
        let approved = approvedScopes.map { !$0.isEmpty } ?? false
        let m7 = AuthorizationConfirmationResponse(
            request_id: request.request_id, approved: approved, approved_scopes: approvedScopes ?? [],
            expires_at: expiresAt ?? (request.expires_at + Int64(request.ttl)), signature: "", timestamp: Freshness.unix(now))
        var transcript = Transcript()
        try transcript.append(JSONValue.of(request))
        return try SigningInput.signedMessage(
            m7, .userConfirmation, client: request.client_did, server: request.server_did, user: request.user_did, after: transcript,
            key: key)
    }
}
