import ATHAgent
import ATHCore
import ATHIdentity
import ATHServer
import ATHStore
import ATHStoreSQLite
import AsyncHTTPClient
import Crypto
import Foundation
import NIOSSL
import Synchronization
import X509

/// The whole seed-001 scenario in one process on loopback: what `ath demo` runs and what the
/// end-to-end test checks. Everything travels over TLS 1.3; the assistant connects with its
/// agent certificate (ACPs CAI) from a CA made for the run, and the platform requires it.
public struct ShoppingScenario: Sendable {
    public static let assistantDID = try! DID("did:ath:ai_shopping_assistant_001")
    public static let userDID = try! DID("did:ath:user_alice")
    /// The assistant's agent identity code (its ARSP's salt is 0x12 0x34).
    public static let assistantAIC = try! AgentIdentityCode(parsing: "1.2.156.3088.1.1.34C2.478BDF.3GF546.0JU4")

    /// One line of the demo's story.
    public struct Line: Sendable, Codable {
        public var actor: String
        public var step: String
        public var text: String
        public var message: JSONValue?
    }

    public struct Result: Sendable {
        public var grant: EstablishedGrant
        public var goodsStatus: Int
        public var orderStatus: Int
        public var overLimitError: ATHError?
        public var ungrantedScopeError: ATHError?
        /// Over the encrypted session (a WebSocket channel): the goods found, and the over-limit order's refusal.
        public var sessionGoodsFound: Int
        public var sessionOverLimitError: ATHError?
    }

    let storePath: String
    let say: @Sendable (Line) -> Void

    public init(storePath: String, say: @escaping @Sendable (Line) -> Void) {
        self.storePath = storePath
        self.say = say
    }

    public func run() async throws -> Result {
        let say = self.say
        let store = try SQLiteStore(path: storePath)
        let serverKey = PrivateKey.generate(.es256)
        let assistantKey = PrivateKey.generate(.es256)
        let userKey = PrivateKey.generate(.es256)
        try await store.registerAccount(
            Account(did: Self.userDID.value, kind: .user, name: "Alice"), key: userKey.publicKey)
        try await store.registerAccount(
            Account(
                did: Self.assistantDID.value, kind: .agent, name: "AI Shopping Assistant", developer: "Example Agents Inc.",
                externalIDs: [Self.assistantAIC.description]),
            key: assistantKey.publicKey)
        say(Line(actor: "setup", step: "accounts", text: "registered user \(Self.userDID) and agent \(Self.assistantDID) (AIC \(Self.assistantAIC)) with their public keys"))
        let pki = try DemoPKI(assistantKey: assistantKey, now: Date())
        say(Line(actor: "setup", step: "tls", text: "a CA for the run issued the platform's TLS certificate (127.0.0.1) and the assistant's agent certificate (CN \(Self.assistantAIC), clientAuth)"))
        let userHTTP = try AgentTLS(serverRoots: [pki.ca.root]).makeHTTPClient()
        let agentTLS = AgentTLS(serverRoots: [pki.ca.root], certificateChain: pki.assistantChain, key: assistantKey)
        let agentHTTP = try agentTLS.makeHTTPClient()
        do {
            let result = try await serve(
                store: store, serverKey: serverKey, assistantKey: assistantKey, userKey: userKey, pki: pki, userHTTP: userHTTP,
                agentHTTP: agentHTTP, agentTLS: try agentTLS.configuration())
            try await userHTTP.shutdown()
            try await agentHTTP.shutdown()
            return result
        } catch {
            try? await userHTTP.shutdown()
            try? await agentHTTP.shutdown()
            throw error
        }
    }

    private func serve(
        store: SQLiteStore, serverKey: PrivateKey, assistantKey: PrivateKey, userKey: PrivateKey, pki: DemoPKI, userHTTP: HTTPClient,
        agentHTTP: HTTPClient, agentTLS: TLSConfiguration
    ) async throws -> Result {
        let say = self.say
        // The user's phone: it learns of a request by the platform's push and answers it.
        let baseURL = BaseURLBox()
        let channel = CallbackConfirmationChannel { request in
            say(Line(actor: "platform", step: "6", text: Self.prompt(request), message: try? JSONValue.of(request)))
            Task {
                let user = ATHUserClient(
                    baseURL: baseURL.value, did: Self.userDID, key: userKey, server: ShoppingPlatform.did, httpClient: userHTTP)
                do {
                    let receipt = try await user.answer(request, approve: request.requested_scopes)
                    say(Line(actor: "user", step: "7", text: "taps Approve; the approval is signed with the user's key", message: receipt))
                } catch {
                    say(Line(actor: "user", step: "7", text: "could not answer: \(error)"))
                }
            }
        }
        let service = try await ATHService(
            identity: ServerIdentity(did: ShoppingPlatform.did, keys: [serverKey]), policy: ShoppingPlatform.policy, store: store,
            channel: channel, agentCertificates: AgentCertificatePolicy(trust: pki.trust, required: true))
        let sessions = SessionChannels(service: service, methods: ShoppingPlatform.sessionMethods)
        let server = try await RunningServer.start(
            ShoppingPlatform.router(service: service, channels: sessions), tls: pki.serverTLS, sessionChannels: sessions)
        baseURL.value = server.baseURL
        say(Line(actor: "platform", step: "listen", text: "e-commerce platform \(ShoppingPlatform.did) on \(server.baseURL) (TLS 1.3 only; agent certificates required)"))
        do {
            let result = try await runAgent(
                baseURL: server.baseURL, assistantKey: assistantKey, userKey: userKey, http: agentHTTP, tls: agentTLS)
            await sessions.shutdown()
            await server.stop()
            return result
        } catch {
            await sessions.shutdown()
            await server.stop()
            throw error
        }
    }

    private func runAgent(baseURL: String, assistantKey: PrivateKey, userKey: PrivateKey, http: HTTPClient, tls: TLSConfiguration) async throws
        -> Result
    {
        let say = self.say
        let credential = try await UserCredential.issue(
            user: Self.userDID, key: userKey, client: Self.assistantDID, scopes: ["goods:read", "order:create"], validFor: 7200)
        say(Line(actor: "user", step: "0", text: "pre-authorizes the assistant: goods:read, order:create for 2 hours (a JWT signed by the user)"))

        let client = ATHClient(
            baseURL: baseURL, did: Self.assistantDID, key: assistantKey, expectedServer: ShoppingPlatform.did, httpClient: http)
        let session = try await client.handshake(
            credential: credential, scopes: ["goods:read", "order:create"], ttl: 7200,
            context: "User needs to search products and place an order"
        ) { event in
            switch event {
            case .sent(let step, let m):
                say(Line(actor: "assistant", step: "\(step)", text: Self.describe(step), message: m))
            case .received(let step, let m):
                say(Line(actor: "platform", step: "\(step)", text: Self.describe(step), message: m))
            case .waitingForUser:
                break
            }
        }
        let grant = await session.grant
        say(Line(
            actor: "assistant", step: "done",
            text: "session established: scopes \(grant.scopesGranted.joined(separator: ", ")), grant \(grant.ttlGranted) s, token until \(grant.tokenExpiresAt), restrictions rate_limit \(grant.restrictions.rate_limit ?? "-"), order_amount_limit \(grant.restrictions.order_amount_limit.map { (try? CanonicalJSON.number($0)) ?? "-" } ?? "-")"))

        let goods = try await session.get("/api/goods?keyword=phone")
        say(Line(actor: "assistant", step: "api", text: "GET /api/goods?keyword=phone -> \(goods.status)", message: try? goods.json()))
        let order = try await session.post("/api/order", json: ["goods_id": "123", "quantity": 1])
        say(Line(actor: "assistant", step: "api", text: "POST /api/order {goods_id 123, quantity 1} -> \(order.status)", message: try? order.json()))

        var overLimit: ATHError?
        do {
            _ = try await session.post("/api/order", json: ["goods_id": "124", "quantity": 1])
        } catch let e as ATHError {
            overLimit = e
            say(Line(actor: "assistant", step: "api", text: "POST /api/order {goods_id 124 at 5999} -> refused \(e.code.rawValue) (\(e.httpStatus)): \(e.message)"))
        }
        var ungranted: ATHError?
        do {
            _ = try await session.get("/api/profile")
        } catch let e as ATHError {
            ungranted = e
            say(Line(actor: "assistant", step: "api", text: "GET /api/profile -> refused \(e.code.rawValue) (\(e.httpStatus)): \(e.message)"))
        }

        // The same grant over the encrypted session layer: a WebSocket channel (wss://, the same
        // mutual TLS) with keys of its own, RPC calls checked like the HTTP requests above.
        let channel = try await session.openChannel(.webSocket(tls: tls, serverName: "localhost"))
        say(Line(actor: "assistant", step: "session", text: "opens an encrypted session channel over WebSocket (ATTN/1, AES-256-GCM, keys of its own)"))
        let found = try await channel.call("goods.search", ["keyword": "phone"])
        let count: Int
        if case .array(let list)? = found["goods"] { count = list.count } else { count = 0 }
        say(Line(actor: "assistant", step: "session", text: "call goods.search {keyword phone} -> \(count) goods", message: found))
        var sessionOverLimit: ATHError?
        do {
            _ = try await channel.call("order.create", ["goods_id": "124", "quantity": 1])
        } catch let e as ATHError {
            sessionOverLimit = e
            say(Line(actor: "assistant", step: "session", text: "call order.create {goods_id 124 at 5999} -> refused \(e.code.rawValue): \(e.message)"))
        }
        await channel.close()
        return Result(
            grant: grant, goodsStatus: goods.status, orderStatus: order.status, overLimitError: overLimit, ungrantedScopeError: ungranted,
            sessionGoodsFound: count, sessionOverLimitError: sessionOverLimit)
    }

    static func prompt(_ r: AuthorizationConfirmationRequest) -> String {
        let words = r.requested_scopes.map { ScopeDescriptions.text[$0] ?? $0 }.joined(separator: ", ")
        return "push to the user: [Authorization Confirmation] \(r.client_info.name) (by \(r.client_info.developer)) is requesting access to your account. Permissions: \(words). Purpose: \"\(r.context)\". Approve or Deny?"
    }

    static func describe(_ step: Int) -> String {
        switch step {
        case 1: "handshake_request: identity, key, versions, algorithms, nonce A"
        case 2: "handshake_response: platform identity, chosen version/algorithm, nonce B, signature over the transcript"
        case 3: "identity_proof: the assistant's signature over the transcript"
        case 4: "identity_result: verified; scopes_supported and token_max_ttl"
        case 5: "scope_request: scopes, ttl, the user's credential, the assistant's signature, key share"
        case 8: "scope_result: scopes granted, ttl and restrictions"
        case 9: "handshake_complete: key exchange, AES-256-GCM, access token, signature over the whole transcript"
        default: "step \(step)"
        }
    }
}

/// Plain words for scopes, as the user sees them.
public enum ScopeDescriptions {
    public static let text = [
        "goods:read": "query products", "order:create": "create orders", "user:profile": "read your profile",
    ]
}

/// The run's certificate authority: the platform's TLS certificate and the assistant's CAI,
/// whose key is the assistant's signing key.
struct DemoPKI {
    let ca: CertificateAuthority
    let assistantChain: [Certificate]
    let serverTLS: ServerTLS
    let crl: CertificateRevocationList

    init(assistantKey: PrivateKey, now: Date) throws {
        ca = try CertificateAuthority.create(name: "Demo ACPs CASP", now: now)
        let tlsKey = P256.Signing.PrivateKey()
        let serverCertificate = try ca.issue(
            .init(aic: nil, role: .server, publicKey: .init(tlsKey.publicKey), dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"]),
            crlURL: nil, now: now)
        assistantChain =
            [
                try ca.issue(
                    .init(aic: ShoppingScenario.assistantAIC, role: .client, publicKey: Certificate.PublicKey(assistantKey.publicKey)),
                    crlURL: nil, now: now)
            ] + ca.issuingChain
        crl = try ca.revocationList(entries: [], number: 1, now: now)
        serverTLS = ServerTLS(
            certificateChain: [serverCertificate] + ca.issuingChain, privateKey: .init(tlsKey),
            clientCertificates: .optional(AgentTrust(roots: [ca.root], revocation: .lists([crl]))))
    }

    var trust: AgentTrust { AgentTrust(roots: [ca.root], revocation: .lists([crl])) }
}

/// The server's URL, known only once it listens, read by the user's phone later.
final class BaseURLBox: Sendable {
    private let url = Mutex("")
    var value: String {
        get { url.withLock { $0 } }
        set { url.withLock { $0 = newValue } }
    }
}
