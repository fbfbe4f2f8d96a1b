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
///
/// A duplicate external id or alias is ACCOUNT_CONFLICT (409) and writes nothing.
public struct AdminRoutes<Context: ATHRequestContextProtocol>: Sendable {
    let store: any ATHStore
    /// SHA-256 of the admin token: compared digest to digest, in constant time.
    let tokenDigest: SHA256Digest

    public init(store: any ATHStore, adminToken: String) {
        self.store = store
        tokenDigest = SHA256.hash(data: Data(adminToken.utf8))
    }

    struct KeyBody: Codable, Sendable { var public_key: String }
    struct AliasBody: Codable, Sendable { var alias: String }
    struct ExternalIDBody: Codable, Sendable { var external_id: String }
    struct KidBody: Codable, Sendable { var kid: String }

    public func register(on router: Router<Context>) {
        let store = self.store
        let group = router.group("ath/admin").add(middleware: ErrorShapeMiddleware<Context>())
        let limit = 64 * 1024
        group.post("accounts") { request, _ in
            try self.authenticate(request)
            var request = request
            let document = try await request.json(limit: limit)
            let account = try document.decode(Account.self)
            let key: PublicKey?
            switch document["public_key"] {
            case nil: key = nil
            case .string(let pem)?: key = try PublicKey(pem: pem)
            default: throw ATHError(.malformedMessage, "public_key must be a PEM string")
            }
            try await Self.mapped { try await store.registerAccount(account, key: key) }
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
        func addName<Body: Decodable & Sendable>(_ path: String, _ type: Body.Type, _ add: @escaping @Sendable (Body, String) async throws -> Void) {
            group.post("accounts/:id/\(path)") { request, context in
                try self.authenticate(request)
                var request = request
                let id = try Self.parameter("id", context)
                let body = try await request.json(limit: limit).decode(Body.self)
                try await Self.mapped { try await add(body, id) }
                return try JSONResponse.make(try await self.account(id), status: .created)
            }
        }
        addName("aliases", AliasBody.self) { try await store.addAlias($0.alias, to: $1) }
        addName("external-ids", ExternalIDBody.self) { try await store.addExternalID($0.external_id, to: $1) }
        group.post("accounts/:id/keys") { request, context in
            try self.authenticate(request)
            var request = request
            let id = try Self.parameter("id", context)
            let key = try PublicKey(pem: try await request.json(limit: limit).decode(KeyBody.self).public_key)
            try await Self.mapped { try await store.addKey(did: id, key: key) }
            return try JSONResponse.make(KidBody(kid: key.thumbprint), status: .created)
        }
        group.post("accounts/:id/keys/:kid/rotate") { request, context in
            try self.authenticate(request)
            var request = request
            let (id, kid) = (try Self.parameter("id", context), try Self.parameter("kid", context))
            let key = try PublicKey(pem: try await request.json(limit: limit).decode(KeyBody.self).public_key)
            try await Self.mapped { try await store.rotateKey(did: id, revoking: kid, to: key) }
            return try JSONResponse.make(KidBody(kid: key.thumbprint))
        }
        group.delete("accounts/:id/keys/:kid") { request, context in
            try self.authenticate(request)
            let (id, kid) = (try Self.parameter("id", context), try Self.parameter("kid", context))
            try await Self.mapped { try await store.revokeKey(did: id, kid: kid) }
            return try JSONResponse.make(KidBody(kid: kid))
        }
    }

    /// A path parameter, percent-decoded: identifiers carry characters ('+', '/', ' ') that a
    /// client must encode, and the router hands segments over as sent.
    static func parameter(_ name: String, _ context: Context) throws -> String {
        let raw = try context.parameters.require(name)
        guard let decoded = raw.removingPercentEncoding else { throw ATHError(.malformedMessage, "bad percent-encoding in \(name)") }
        return decoded
    }

    func authenticate(_ request: Request) throws {
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer "),
            SHA256.hash(data: Data(header.utf8.dropFirst("Bearer ".utf8.count))) == tokenDigest
        else { throw ATHError(.adminAuthenticationRequired, "the admin API needs Authorization: Bearer <admin token>") }
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
            }
        }
    }
}
