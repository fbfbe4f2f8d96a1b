import ATHCore
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// A client of the account registry's admin API (`AdminRoutes`): what `ath account` is built on.
/// Refusals arrive as typed `ATHError`s (ACCOUNT_CONFLICT, ACCOUNT_NOT_FOUND, ...).
public struct ATHAdminClient: Sendable {
    let transport: HTTPTransport
    let token: String

    public init(baseURL: String, adminToken: String, httpClient: HTTPClient = .shared) {
        transport = HTTPTransport(baseURL: baseURL, client: httpClient, timeout: .seconds(30))
        token = adminToken
    }

    var auth: [(String, String)] { [("authorization", "Bearer \(token)")] }

    /// Path segments are percent-encoded: DIDs and aliases carry ':' and '@'.
    static func segment(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~:@"))) ?? s
    }

    func account(_ method: HTTPMethod, _ path: String, _ body: JSONValue? = nil) async throws -> Account {
        try await transport.json(method, "/ath/admin/" + path, body, headers: auth).1.decode(Account.self)
    }

    func kid(_ method: HTTPMethod, _ path: String, _ body: JSONValue? = nil) async throws -> String {
        guard let kid = try await transport.json(method, "/ath/admin/" + path, body, headers: auth).1["kid"]?.stringValue else {
            throw ATHError(.malformedMessage, "the answer has no kid")
        }
        return kid
    }

    public func register(_ account: Account, key: PublicKey? = nil) async throws -> Account {
        guard case .object(var document) = try JSONValue.of(account) else { throw ATHError(.internalError, "account is not an object") }
        if let key { document["public_key"] = .string(key.pem) }
        return try await self.account(.POST, "accounts", .object(document))
    }

    /// By any external id (the DID or another).
    public func account(_ externalID: String) async throws -> Account {
        try await account(.GET, "accounts/\(Self.segment(externalID))")
    }

    public func account(alias: String) async throws -> Account {
        try await account(.GET, "aliases/\(Self.segment(alias))")
    }

    public func addAlias(_ alias: String, to id: String) async throws -> Account {
        try await account(.POST, "accounts/\(Self.segment(id))/aliases", ["alias": .string(alias)])
    }

    public func addExternalID(_ externalID: String, to id: String) async throws -> Account {
        try await account(.POST, "accounts/\(Self.segment(id))/external-ids", ["external_id": .string(externalID)])
    }

    /// Returns the new key's kid.
    public func addKey(_ key: PublicKey, to id: String) async throws -> String {
        try await kid(.POST, "accounts/\(Self.segment(id))/keys", ["public_key": .string(key.pem)])
    }

    public func rotateKey(of id: String, revoking kid: String, to key: PublicKey) async throws -> String {
        try await self.kid(.POST, "accounts/\(Self.segment(id))/keys/\(Self.segment(kid))/rotate", ["public_key": .string(key.pem)])
    }

    public func revokeKey(of id: String, kid: String) async throws {
        _ = try await self.kid(.DELETE, "accounts/\(Self.segment(id))/keys/\(Self.segment(kid))")
    }

    /// Suspends an account: it opens no handshake, and its grants in force end. Returns the
    /// account and the ids of the grants that ended.
    public func suspend(_ id: String) async throws -> (account: Account, endedGrants: [String]) {
        try Self.withEndedGrants(try await transport.json(.POST, "/ath/admin/accounts/\(Self.segment(id))/suspend", nil, headers: auth).1)
    }

    /// Sets the account's type on the service (nil clears it); grants holding scopes the type
    /// does not allow end. Returns the account and the ended grants.
    public func setAccountType(of id: String, to type: String?) async throws -> (account: Account, endedGrants: [String]) {
        let body: JSONValue = ["account_type": type.map(JSONValue.string) ?? .null]
        return try Self.withEndedGrants(try await transport.json(.PUT, "/ath/admin/accounts/\(Self.segment(id))/type", body, headers: auth).1)
    }

    static func withEndedGrants(_ answer: JSONValue) throws -> (account: Account, endedGrants: [String]) {
        guard let account = answer["account"], case .array(let ended)? = answer["ended_grants"] else {
            throw ATHError(.malformedMessage, "the answer has no account or ended_grants")
        }
        return (try account.decode(Account.self), ended.compactMap(\.stringValue))
    }

    /// Revokes a grant and its tokens: the agent is refused from now on (TOKEN_REVOKED).
    public func revokeGrant(_ id: String) async throws {
        _ = try await transport.json(.POST, "/ath/admin/grants/\(Self.segment(id))/revoke", nil, headers: auth)
    }

    /// Revokes one access token (TOKEN_REVOKED from now on); its grant stays.
    public func revokeToken(_ jti: String) async throws {
        _ = try await transport.json(.POST, "/ath/admin/tokens/\(Self.segment(jti))/revoke", nil, headers: auth)
    }

    /// Lifts a suspension; the grants it ended stay ended.
    /// Ends a v0.1 agent's registration on a gateway, with its sessions and tokens; returns how
    /// many tokens were revoked.
    public func revokeRegistration(_ clientID: String) async throws -> Int {
        let answer = try await transport.json(.POST, "/ath/admin/oauth/agents/\(Self.segment(clientID))/revoke", nil, headers: auth).1
        guard case .integer(let count)? = answer["revoked_tokens"] else { throw ATHError(.malformedMessage, "the answer has no revoked_tokens") }
        return Int(count)
    }

    public func reinstate(_ id: String) async throws -> Account {
        try await account(.POST, "accounts/\(Self.segment(id))/reinstate")
    }
}
