import ATHAgent
import ATHCore
import ATHServer
import ATHStore
import Foundation
import Synchronization

/// The whole seed-001 scenario in one process on loopback: what `ath demo` runs and what the
/// end-to-end test checks.
public struct ShoppingScenario: Sendable {
    public static let assistantDID = try! DID("did:ath:ai_shopping_assistant_001")
    public static let userDID = try! DID("did:ath:user_alice")

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
            Account(did: Self.assistantDID.value, kind: .agent, name: "AI Shopping Assistant", developer: "Example Agents Inc."),
            key: assistantKey.publicKey)
        say(Line(actor: "setup", step: "accounts", text: "registered user \(Self.userDID) and agent \(Self.assistantDID) with their public keys"))

        // The user's phone: it learns of a request by the platform's push and answers it.
        let baseURL = BaseURLBox()
        let channel = CallbackConfirmationChannel { request in
            say(Line(actor: "platform", step: "6", text: Self.prompt(request), message: try? JSONValue.of(request)))
            Task {
                let user = ATHUserClient(baseURL: baseURL.value, did: Self.userDID, key: userKey, server: ShoppingPlatform.did)
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
            channel: channel)
        let server = try await RunningServer.start(ShoppingPlatform.router(service: service))
        baseURL.value = server.baseURL
        say(Line(actor: "platform", step: "listen", text: "e-commerce platform \(ShoppingPlatform.did) on \(server.baseURL)"))
        do {
            let result = try await runAgent(baseURL: server.baseURL, assistantKey: assistantKey, userKey: userKey)
            await server.stop()
            return result
        } catch {
            await server.stop()
            throw error
        }
    }

    private func runAgent(baseURL: String, assistantKey: PrivateKey, userKey: PrivateKey) async throws -> Result {
        let say = self.say
        let credential = try await UserCredential.issue(
            user: Self.userDID, key: userKey, client: Self.assistantDID, scopes: ["goods:read", "order:create"], validFor: 7200)
        say(Line(actor: "user", step: "0", text: "pre-authorizes the assistant: goods:read, order:create for 2 hours (a JWT signed by the user)"))

        let client = ATHClient(baseURL: baseURL, did: Self.assistantDID, key: assistantKey, expectedServer: ShoppingPlatform.did)
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
            text: "session established: scopes \(grant.scopesGranted.joined(separator: ", ")), grant \(grant.ttlGranted) s, token until \(grant.tokenExpiresAt), restrictions rate_limit \(grant.restrictions.rate_limit ?? "-"), order_amount_limit \(grant.restrictions.order_amount_limit.map { String(Int($0)) } ?? "-")"))

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
        return Result(
            grant: grant, goodsStatus: goods.status, orderStatus: order.status, overLimitError: overLimit, ungrantedScopeError: ungranted)
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

/// The server's URL, known only once it listens, read by the user's phone later.
final class BaseURLBox: Sendable {
    private let url = Mutex("")
    var value: String {
        get { url.withLock { $0 } }
        set { url.withLock { $0 = newValue } }
    }
}
