import ATHCore
import AsyncHTTPClient
import Foundation
import NIOCore

/// The user's side of steps 6-7: list the pending requests and answer them with a signature of
/// the user's key. `ath user watch` and the demo's user are built on it.
public struct ATHUserClient: Sendable {
    public let did: DID
    let key: PrivateKey
    let server: DID
    let transport: HTTPTransport
    let clock: @Sendable () -> Date

    public init(
        baseURL: String, did: DID, key: PrivateKey, server: DID, httpClient: HTTPClient = .shared,
        clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.did = did
        self.key = key
        self.server = server
        self.clock = clock
        transport = HTTPTransport(baseURL: baseURL, client: httpClient, timeout: .seconds(30))
    }

    public func pending() async throws -> [AuthorizationConfirmationRequest] {
        let auth = try await UserRequestToken.make(user: did, key: key, server: server, now: clock())
        let (_, body) = try await transport.json(.GET, "/ath/confirmations", headers: [("authorization", "\(UserRequestToken.scheme) \(auth)")])
        guard case .array(let items)? = body["requests"] else { throw ATHError(.malformedMessage, "no requests list") }
        return try items.map { try $0.decode(AuthorizationConfirmationRequest.self) }
    }

    /// Approves `scopes` (all requested when nil) or, with an empty list, denies.
    public func answer(_ request: AuthorizationConfirmationRequest, approve scopes: [String]?) async throws -> JSONValue {
        let m7 = try UserConfirmation.answer(request, approvedScopes: scopes ?? request.requested_scopes, key: key, now: clock())
        return try await transport.json(.POST, "/ath/confirmations/\(request.request_id)", m7).1
    }

    /// The credentials this user issued that the server has seen (or that were revoked).
    public func credentials() async throws -> [CredentialUse] {
        let auth = try await UserRequestToken.make(user: did, key: key, server: server, now: clock())
        let (_, body) = try await transport.json(.GET, "/ath/credentials", headers: [("authorization", "\(UserRequestToken.scheme) \(auth)")])
        guard case .array(let items)? = body["credentials"] else { throw ATHError(.malformedMessage, "no credentials list") }
        return try items.map { try $0.decode(CredentialUse.self) }
    }

    /// Revokes a credential by its `jti`; returns the ids of the grants that ended with it.
    public func revokeCredential(_ jti: String) async throws -> [String] {
        let auth = try await UserRequestToken.make(user: did, key: key, server: server, now: clock())
        let path = "/ath/credentials/\(jti.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(["-", "_"])) ?? jti)/revoke"
        let (_, body) = try await transport.json(.POST, path, headers: [("authorization", "\(UserRequestToken.scheme) \(auth)")])
        guard case .array(let grants)? = body["grants_revoked"] else { throw ATHError(.malformedMessage, "no grants_revoked list") }
        return grants.compactMap(\.stringValue)
    }

    public func deny(_ request: AuthorizationConfirmationRequest) async throws -> JSONValue {
        try await answer(request, approve: [])
    }
}
