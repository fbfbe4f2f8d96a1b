import ATHCore
import ATHStore
import Crypto
import Foundation
import Hummingbird

/// The account registry's admin API (Act Auth): accounts with their type, external ids, aliases
/// and public keys. Every call needs `Authorization: Bearer <admin token>`; anything else is
/// ADMIN_AUTHENTICATION_REQUIRED (401 with a challenge). Internal ids never appear here.
///
///     POST   /ath/admin/accounts                        {did, kind, name, developer?, aliases?, external_ids?, public_key?}
///     GET    /ath/admin/accounts/{external id}
///     GET    /ath/admin/aliases/{alias}
///     POST   /ath/admin/accounts/{external id}/aliases       {alias}
///     POST   /ath/admin/accounts/{external id}/external-ids  {external_id}
///     POST   /ath/admin/accounts/{external id}/keys          {public_key}        -> {kid}
///     POST   /ath/admin/accounts/{external id}/keys/{kid}/rotate {public_key}    -> {kid}
///     DELETE /ath/admin/accounts/{external id}/keys/{kid}    (revoke)
///     POST   /ath/admin/accounts/{external id}/suspend       -> {account, ended_grants}
///     POST   /ath/admin/accounts/{external id}/reinstate     -> account
///     PUT    /ath/admin/accounts/{external id}/type          {account_type | null} -> {account, ended_grants}
///     POST   /ath/admin/grants/{grant id}/revoke             -> {grant_id}   (and every token of it)
///     POST   /ath/admin/tokens/{jti}/revoke                  -> {jti}
///     POST   /ath/admin/oauth/agents/{client_id}/revoke      -> {client_id, revoked_tokens}
///            (a v0.1 agent's registration ended with its sessions and tokens; gateway only)
///
/// A duplicate external id or alias is ACCOUNT_CONFLICT (409) and writes nothing. Every change
/// is audited with the actor "admin"; refused calls are audited as refusals.
public struct AdminRoutes<Context: ATHRequestContextProtocol>: Sendable {
    let service: ATHService
    /// The v0.1 API's service, when the server has one (the gateway).
    let oauth: OAuthAPIService?
    var store: any ATHStore { service.store }
    /// SHA-256 of the admin token: compared digest to digest, in constant time.
    let tokenDigest: SHA256Digest

    public init(service: ATHService, adminToken: String, oauth: OAuthAPIService? = nil) {
        self.service = service
        self.oauth = oauth
        tokenDigest = SHA256.hash(data: Data(adminToken.utf8))
    }

    struct TypeBody: Codable, Sendable { var account_type: String? }

    /// An account after a change that can end grants (suspension, a new type), with those it ended.
    struct AccountChange: Codable, Sendable {
        var account: Account
        var ended_grants: [String]
    }

    struct KeyBody: Codable, Sendable { var public_key: String }
    struct AliasBody: Codable, Sendable { var alias: String }
    struct ExternalIDBody: Codable, Sendable { var external_id: String }
    struct KidBody: Codable, Sendable { var kid: String }
    struct RevokedRegistration: Codable, Sendable {
        var client_id: String
        var revoked_tokens: Int
    }

    public func register(on router: Router<Context>) {
        let store = self.store
        let group = router.group("ath/admin").add(middleware: ErrorShapeMiddleware<Context>())
        let limit = 64 * 1024
        group.post("accounts") { request, _ in
            try self.authenticate(request)
            var request = request
            let document = try await request.json(limit: limit)
            let account = try document.decode(Account.self)
            try service.policy.validateAccountType(account.accountType)
            let key: PublicKey?
            switch document["public_key"] {
            case nil: key = nil
            case .string(let pem)?: key = try PublicKey(pem: pem)
            default: throw ATHError(.malformedMessage, "public_key must be a PEM string")
            }
            try await Self.mapped {
                try await store.registerAccount(account, key: key, audit: self.record("account.register", account.did, "kind=\(account.kind.rawValue)"))
            }
            return try JSONResponse.make(try await self.account(account.did), status: .created)
        }
        group.get("accounts/:id") { request, context in
            try self.authenticate(request)
            return try JSONResponse.make(try await self.account(try Self.parameter("id", context)))
        }
        group.get("aliases/:alias") { request, context in
            try self.authenticate(request)
            guard let account = try await store.account(alias: try Self.parameter("alias", context)) else {
                throw ATHError(.accountNotFound, "no account has this alias")
            }
            return try JSONResponse.make(account)
        }
        // An alias or an external id: both name the account; both answer with the account.
        func addName<Body: Decodable & Sendable>(
            _ path: String, _ type: Body.Type, _ add: @escaping @Sendable (Body, String, [AuditEvent]) async throws -> Void,
            _ name: @escaping @Sendable (Body) -> String
        ) {
            group.post("accounts/:id/\(path)") { request, context in
                try self.authenticate(request)
                var request = request
                let id = try Self.parameter("id", context)
                let body = try await request.json(limit: limit).decode(Body.self)
                let event = "account.add_\(path == "aliases" ? "alias" : "external_id")"
                try await Self.mapped { try await add(body, id, self.record(event, id, name(body))) }
                return try JSONResponse.make(try await self.account(id), status: .created)
            }
        }
        addName("aliases", AliasBody.self, { try await store.addAlias($0.alias, to: $1, audit: $2) }, \.alias)
        addName("external-ids", ExternalIDBody.self, { try await store.addExternalID($0.external_id, to: $1, audit: $2) }, \.external_id)
        group.post("accounts/:id/keys") { request, context in
            try self.authenticate(request)
            var request = request
            let id = try Self.parameter("id", context)
            let key = try PublicKey(pem: try await request.json(limit: limit).decode(KeyBody.self).public_key)
            try await Self.mapped { try await store.addKey(did: id, key: key, audit: self.record("key.add", id, "kid=\(key.thumbprint)")) }
            return try JSONResponse.make(KidBody(kid: key.thumbprint), status: .created)
        }
        group.post("accounts/:id/keys/:kid/rotate") { request, context in
            try self.authenticate(request)
            var request = request
            let (id, kid) = (try Self.parameter("id", context), try Self.parameter("kid", context))
            let key = try PublicKey(pem: try await request.json(limit: limit).decode(KeyBody.self).public_key)
            try await Self.mapped {
                try await store.rotateKey(
                    did: id, revoking: kid, to: key, audit: self.record("key.rotate", id, "revoked=\(kid) kid=\(key.thumbprint)"))
            }
            return try JSONResponse.make(KidBody(kid: key.thumbprint))
        }
        group.delete("accounts/:id/keys/:kid") { request, context in
            try self.authenticate(request)
            let (id, kid) = (try Self.parameter("id", context), try Self.parameter("kid", context))
            try await Self.mapped { try await store.revokeKey(did: id, kid: kid, audit: self.record("key.revoke", id, "kid=\(kid)")) }
            return try JSONResponse.make(KidBody(kid: kid))
        }
        group.post("accounts/:id/suspend") { request, context in
            try self.authenticate(request)
            let id = try Self.parameter("id", context)
            var ended: [String] = []
            try await Self.mapped { ended = try await self.service.suspendAccount(id, by: "admin") }
            return try JSONResponse.make(AccountChange(account: try await self.account(id), ended_grants: ended))
        }
        group.put("accounts/:id/type") { request, context in
            try self.authenticate(request)
            var request = request
            let id = try Self.parameter("id", context)
            let type = try await request.json(limit: limit).decode(TypeBody.self).account_type
            var ended: [String] = []
            try await Self.mapped { ended = try await self.service.setAccountType(id, to: type, by: "admin") }
            return try JSONResponse.make(AccountChange(account: try await self.account(id), ended_grants: ended))
        }
        group.post("grants/:id/revoke") { request, context in
            try self.authenticate(request)
            let id = try Self.parameter("id", context)
            try await self.service.revokeGrant(id, by: "admin")
            return try JSONResponse.make(["grant_id": id])
        }
        group.post("tokens/:jti/revoke") { request, context in
            try self.authenticate(request)
            let jti = try Self.parameter("jti", context)
            try await self.service.revokeToken(jti, by: "admin")
            return try JSONResponse.make(["jti": jti])
        }
        if let oauth {
            group.post("oauth/agents/:client_id/revoke") { request, context in
                try self.authenticate(request)
                let clientID = try Self.parameter("client_id", context)
                let revoked = try await oauth.revokeRegistration(clientID: clientID, by: "admin")
                return try JSONResponse.make(RevokedRegistration(client_id: clientID, revoked_tokens: revoked))
            }
        }
        group.post("accounts/:id/reinstate") { request, context in
            try self.authenticate(request)
            let id = try Self.parameter("id", context)
            try await Self.mapped { try await self.service.reinstateAccount(id, by: "admin") }
            return try JSONResponse.make(try await self.account(id))
        }
    }

    /// The audit record of an admin change, written by the store in the change's transaction.
    func record(_ event: String, _ subject: String, _ detail: String) -> [AuditEvent] {
        [AuditEvent(at: Freshness.unix(service.clock()), event: event, actor: "admin", subject: subject, outcome: "ok", detail: detail)]
    }

    /// A path parameter, percent-decoded: identifiers carry characters ('+', '/', ' ') that a
    /// client must encode, and the router hands segments over as sent.
    static func parameter(_ name: String, _ context: Context) throws -> String {
        let raw = try context.parameters.require(name)
        guard let decoded = raw.removingPercentEncoding else { throw ATHError(.malformedMessage, "bad percent-encoding in \(name)") }
        return decoded
    }

    func authenticate(_ request: Request) throws {
        guard let header = request.headers[.authorization], let token = Self.bearerToken(header),
            SHA256.hash(data: Data(token.utf8)) == tokenDigest
        else {
            service.refusals.record(
                AuditEvent(
                    at: Freshness.unix(service.clock()), event: "admin.refused", actor: "-",
                    subject: "\(request.method.rawValue) \(request.uri.path.prefix(512))", outcome: ATHError.Code.adminAuthenticationRequired.rawValue))
            throw ATHError(.adminAuthenticationRequired, "the admin API needs Authorization: Bearer <admin token>")
        }
    }

    /// The credentials of `Bearer <token>`: the scheme is case-insensitive (RFC 9110 section
    /// 11.1), and one or more spaces may follow it.
    static func bearerToken(_ header: String) -> Substring? {
        guard let space = header.firstIndex(of: " "), header[..<space].lowercased() == "bearer" else { return nil }
        let token = header[space...].drop { $0 == " " }
        return token.isEmpty ? nil : token
    }

    func account(_ id: String) async throws -> Account {
        guard let account = try await store.account(did: id) else { throw ATHError(.accountNotFound, "no account \(id.prefix(256))") }
        return account
    }

    /// The store's refusals as the API's documented errors.
    static func mapped(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as StoreError {
            switch error {
            case .duplicate(let what): throw ATHError(.accountConflict, what)
            case .notFound(let what): throw ATHError(.accountNotFound, "no \(what)")
            case .corrupt, .unavailable: throw error
            }
        }
    }
}
