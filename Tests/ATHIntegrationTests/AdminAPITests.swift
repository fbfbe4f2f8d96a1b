import ATHAgent
import ATHCore
import ATHServer
import ATHStore
import AsyncHTTPClient
import Foundation
import Hummingbird
import NIOCore
import NIOHTTP1
import Testing

/// The account registry's admin API over loopback HTTP.
@Suite struct AdminAPITests {
    static let token = "admin-\(UUID().uuidString)"

    struct Reply {
        var status: Int
        var headers: HTTPHeaders
        var json: JSONValue?
    }

    func call(
        _ base: String, _ method: HTTPMethod, _ path: String, _ body: JSONValue? = nil, token: String? = Self.token, scheme: String = "Bearer"
    ) async throws -> Reply {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        if let token { request.headers.add(name: "authorization", value: "\(scheme) \(token)") }
        if let body {
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try CanonicalJSON.bytes(body)))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        return Reply(status: Int(response.status.code), headers: response.headers, json: try? JSONValue.parse(bytes.readableBytesView))
    }

    func startAdmin(_ h: Harness) async throws -> RunningServer {
        let router = Router(context: ATHRequestContext.self)
        AdminRoutes<ATHRequestContext>(service: h.service, adminToken: Self.token).register(on: router)
        return try await RunningServer.start(router)
    }

    @Test(arguments: Backend.available) func refusesCallsWithoutTheAdminToken(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        let admin = try await startAdmin(h)
        for token in [nil, "wrong", Self.token + "x"] {
            let r = try await call(admin.baseURL, .POST, "/ath/admin/accounts", ["did": "did:ath:eve", "kind": "user", "name": "Eve"], token: token)
            #expect(r.status == 401 && r.json?["code"] == "ADMIN_AUTHENTICATION_REQUIRED")
            #expect(r.headers.first(name: "www-authenticate")?.hasPrefix("ATH realm=") == true)
        }
        #expect(try await h.store.account(did: "did:ath:eve") == nil)
        await admin.stop()
        await h.stop()
    }

    /// RFC 9110 §11.1: the scheme is case-insensitive. An unknown grant or token is 404, and
    /// each admin change is audited in its own transaction.
    @Test(arguments: Backend.available) func schemeCaseAndUnknownIDs(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        let admin = try await startAdmin(h)
        for scheme in ["bearer", "BEARER", "Bearer  "] {
            let r = try await call(admin.baseURL, .GET, "/ath/admin/accounts/did:ath:nobody", scheme: scheme)
            #expect(r.status == 404 && r.json?["code"] == "ACCOUNT_NOT_FOUND", "\(scheme)")
        }
        for scheme in ["Basic", "Bearer" + Self.token] {
            let r = try await call(admin.baseURL, .GET, "/ath/admin/accounts/did:ath:nobody", scheme: scheme)
            #expect(r.status == 401, "\(scheme)")
        }
        await h.service.refusals.flush()  // the 401s above are audited in a batch of their own
        let before = try await h.store.auditRecords(after: 0, limit: 1_000).count
        for path in ["/ath/admin/grants/no-such-grant/revoke", "/ath/admin/tokens/no-such-token/revoke"] {
            let r = try await call(admin.baseURL, .POST, path)
            #expect(r.status == 404 && r.json?["code"] == "NOT_FOUND", "\(path)")
        }
        #expect(try await h.store.auditRecords(after: 0, limit: 1_000).count == before)
        let r = try await call(admin.baseURL, .POST, "/ath/admin/accounts", ["did": "did:ath:zoe", "kind": "user", "name": "Zoe"])
        #expect(r.status == 201)
        let records = try await h.store.auditRecords(after: 0, limit: 1_000)
        #expect(records.count == before + 1 && records.last?.event.event == "account.register" && records.last?.event.subject == "did:ath:zoe")
        await admin.stop()
        await h.stop()
    }

    @Test(arguments: Backend.available) func registersLooksUpAndRefusesDuplicates(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        let admin = try await startAdmin(h)
        let base = admin.baseURL
        let key = PrivateKey.generate()
        var r = try await call(
            base, .POST, "/ath/admin/accounts",
            ["did": "did:ath:carol", "kind": "user", "name": "Carol", "aliases": ["carol@example.com"], "public_key": .string(key.publicKey.pem)])
        #expect(r.status == 201 && r.json?["did"] == "did:ath:carol" && r.json?["aliases"] == ["carol@example.com"])
        #expect(r.json?["internal_id"] == nil)
        r = try await call(base, .GET, "/ath/admin/aliases/CAROL@example.com")
        #expect(r.status == 200 && r.json?["name"] == "Carol")
        r = try await call(base, .POST, "/ath/admin/accounts/did:ath:carol/external-ids", ["external_id": "Y2Fyb2w"])
        #expect(r.status == 201 && r.json?["external_ids"] == ["Y2Fyb2w"])
        r = try await call(base, .GET, "/ath/admin/accounts/Y2Fyb2w")
        #expect(r.status == 200 && r.json?["did"] == "did:ath:carol")
        // A second account reusing Carol's alias: 409, and the new account does not exist.
        r = try await call(base, .POST, "/ath/admin/accounts", ["did": "did:ath:dave", "kind": "agent", "name": "Dave", "aliases": ["carol@example.com"]])
        #expect(r.status == 409 && r.json?["code"] == "ACCOUNT_CONFLICT")
        #expect(try await call(base, .GET, "/ath/admin/accounts/did:ath:dave").status == 404)
        r = try await call(base, .POST, "/ath/admin/accounts", ["did": "did:ath:carol", "kind": "user", "name": "Again"])
        #expect(r.status == 409)
        r = try await call(base, .POST, "/ath/admin/accounts", ["did": "did:ath:x", "kind": "robot", "name": "X"])
        #expect(r.status == 400 && r.json?["code"] == "MALFORMED_MESSAGE")
        r = try await call(base, .GET, "/ath/admin/accounts/did:ath:nobody")
        #expect(r.status == 404 && r.json?["code"] == "ACCOUNT_NOT_FOUND")
        await admin.stop()
        await h.stop()
    }

    /// A user's key revoked through the API: a credential it signed no longer opens a handshake;
    /// the rotated-in key works.
    @Test(arguments: Backend.available) func revokedKeysSignNothing(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        try await h.registerParties()
        let admin = try await startAdmin(h)
        let old = try await h.credential()
        let replacement = PrivateKey.generate()
        var r = try await call(
            admin.baseURL, .POST, "/ath/admin/accounts/\(h.user.value)/keys/\(h.userKey.publicKey.thumbprint)/rotate",
            ["public_key": .string(replacement.publicKey.pem)])
        #expect(r.status == 200 && r.json?["kid"] == .string(replacement.publicKey.thumbprint))
        await #expect { try await h.handshake(credential: old) } throws: { ATHError.code($0) == .invalidUserCredential }
        let fresh = try await h.credential(key: replacement)
        let session = try await h.handshake(credential: fresh, userKey: replacement)
        #expect(await session.grant.scopesGranted.isEmpty == false)
        r = try await call(admin.baseURL, .DELETE, "/ath/admin/accounts/\(h.user.value)/keys/\(replacement.publicKey.thumbprint)")
        #expect(r.status == 200)
        #expect(try await h.store.activeKeys(did: h.user.value).isEmpty)
        await admin.stop()
        await h.stop()
    }
    /// The same API through the agent SDK's admin client, as `ath account` uses it.
    @Test(arguments: Backend.available) func theAdminClientSurfacesTypedErrors(_ backend: Backend) async throws {
        let h = try await Harness.start(backend: backend)
        let server = try await startAdmin(h)
        let admin = ATHAdminClient(baseURL: server.baseURL, adminToken: Self.token)
        let key = PrivateKey.generate()
        let erin = try await admin.register(
            Account(did: "did:ath:erin", kind: .agent, name: "Erin", developer: "Dev", aliases: ["+1 555 0100".replacingOccurrences(of: " ", with: "")]),
            key: key.publicKey)
        #expect(erin.aliases == ["+15550100"])
        #expect(try await admin.account(alias: "+15550100") == erin)
        #expect(try await admin.addAlias("erin/bot@example.com", to: "did:ath:erin").aliases.contains("erin/bot@example.com"))
        #expect(try await admin.account(alias: "erin/bot@example.com").did == "did:ath:erin")
        let next = PrivateKey.generate(.edDSA)
        #expect(try await admin.rotateKey(of: "did:ath:erin", revoking: key.publicKey.thumbprint, to: next.publicKey) == next.publicKey.thumbprint)
        #expect(try await h.store.activeKeys(did: "did:ath:erin") == [next.publicKey])
        await #expect { try await admin.register(Account(did: "did:ath:erin", kind: .agent, name: "Again")) } throws: {
            ATHError.code($0) == .accountConflict
        }
        await #expect { try await admin.account("did:ath:nobody") } throws: { ATHError.code($0) == .accountNotFound }
        await #expect { try await ATHAdminClient(baseURL: server.baseURL, adminToken: "nope").account("did:ath:erin") } throws: {
            ATHError.code($0) == .adminAuthenticationRequired
        }
        await server.stop()
        await h.stop()
    }
}
