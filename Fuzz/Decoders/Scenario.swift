import ATHCore
import Crypto
import Foundation

/// One handshake with fixed Ed25519 keys, time and random values (as the published vectors
/// make it), stopped before each step the server receives: the genuine messages are the fuzzer's
/// seeds and its oracle, the stopped server states what each input is given to. Ed25519
/// signatures are deterministic, so every process builds the same bytes and a seed written by
/// one run still verifies in the next.
struct Scenario: Sendable {
    static let now = Date(timeIntervalSince1970: 1_717_200_000)

    static func seed(_ label: String) -> Data { Data(SHA256.hash(data: Data("swift-ath fuzz: \(label)".utf8))) }
    static func key(_ label: String) -> PrivateKey { .ed25519(try! Curve25519.Signing.PrivateKey(rawRepresentation: seed(label))) }

    static let randomness = HandshakeRandomness(
        value: { Base64URL.encode(seed($0.rawValue)) },
        ephemeralKey: { side, _ in try! EphemeralKey(alg: .ecdhP256, raw: seed("\(side) ephemeral")) })

    static let policy = ServerPolicy(
        scopesSupported: ["goods:read", "order:create", "user:profile"], tokenMaxTTL: 7200,
        restrictions: Restrictions(rate_limit: "100/minute", order_amount_limit: 5000))

    let clientKey = Scenario.key("client")
    let serverKey = Scenario.key("server")
    let userKey = Scenario.key("user")
    let clientDID: DID
    let userDID: DID
    let serverDID = try! DID("did:ath:ecommerce_platform_001")
    let identity: ServerIdentity

    /// The genuine messages of steps 1, 3, 5 and 7, and the server as each one finds it.
    let m1: JSONValue, m3: JSONValue, m5: JSONValue, m7: JSONValue
    let beforeStep3: ServerHandshake, beforeStep5: ServerHandshake, beforeStep7: ServerHandshake
    let credential: String
    let credentialClaims: UserCredentialClaims
    let accessToken: String
    let accessClaims: AccessTokenClaims
    let proofKey: SymmetricKey

    static let shared: Scenario = blocking { try await Scenario() }

    init() async throws {
        clientDID = DID.key(clientKey.publicKey)
        userDID = DID.key(userKey.publicKey)
        identity = ServerIdentity(did: serverDID, keys: [serverKey])
        let (now, randomness, policy) = (Self.now, Self.randomness, Self.policy)
        var client = ClientHandshake(did: clientDID, key: clientKey, expectedServer: serverDID, randomness: randomness)
        m1 = try client.makeRequest(now: now)
        var (server, m2) = try ServerHandshake.begin(
            request: m1, id: Base64URL.encode(Self.seed("handshake_id")), identity: identity, policy: policy, registeredKey: nil, now: now,
            randomness: randomness)
        beforeStep3 = server
        m3 = try client.receiveResponse(m2, now: now)
        _ = try client.receiveIdentityResult(try server.receiveIdentityProof(m3, policy: policy, now: now), now: now)
        beforeStep5 = server
        credential = try await UserCredential.issue(
            user: userDID, key: userKey, client: clientDID, scopes: ["goods:read", "order:create"], validFor: 7200, now: now,
            jti: Base64URL.encode(Self.seed("credential")))
        m5 = try client.makeScopeRequest(scopes: ["goods:read", "order:create"], ttl: 7200, credential: credential, context: "shopping", now: now)
        let request = try server.receiveScopeRequest(m5, policy: policy, now: now)
        credentialClaims = try await UserCredential.verify(credential, userKey: userKey.publicKey, client: clientDID, server: serverDID, now: now)
        let m6 = try server.authorize(
            request, credential: credentialClaims, clientInfo: ClientInfo(name: "Assistant", developer: "Dev"), policy: policy, now: now,
            randomness: randomness)!
        beforeStep7 = server
        m7 = try UserConfirmation.answer(m6, approvedScopes: m6.requested_scopes, key: userKey, now: now)
        try server.receiveConfirmation(m7, userKey: userKey.publicKey, now: now)
        let completion = try await server.complete(
            policy: policy, tokenSigner: JWTCodec(key: identity.tokenKey), identity: identity, now: now, randomness: randomness)
        accessToken = completion.outcome.handshake_complete["access_token"]?.stringValue ?? ""
        accessClaims = completion.token
        proofKey = completion.session.proofKey
    }
}

/// Where a task leaves its result for the thread that waits on it.
final class ResultBox<T>: @unchecked Sendable {
    var value: Result<T, any Error>?
}

/// Runs async work to its end from the fuzzer's synchronous callback.
func blocking<T>(_ body: @escaping @Sendable () async throws -> T) -> T {
    switch wait(body) {
    case .success(let value): return value
    case .failure(let error): fatalError("the fuzz scenario could not be built: \(error)")
    }
}

/// The same for work that may throw: the error is the answer, not a failure.
func attempt<T>(_ body: @escaping @Sendable () async throws -> T) -> T? {
    try? wait(body).get()
}

private func wait<T>(_ body: @escaping @Sendable () async throws -> T) -> Result<T, any Error> {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        do { box.value = .success(try await body()) } catch { box.value = .failure(error) }
        done.signal()
    }
    done.wait()
    return box.value!
}
