import ATHCore
import Crypto
import Foundation

/// Runs one complete handshake with fixed keys, time and random values, and records every
/// message, signature input, derived key and proof: the published test vectors.
///
/// Two sets: Ed25519 keys (RFC 8032 signatures are deterministic, so every byte is reproducible)
/// and P-256 keys for ES256, the required algorithm, whose ECDSA signatures are randomized: that
/// file is checked by verifying everything in it, not by regenerating it byte for byte. The key
/// exchange is ECDH-P256 in both.
enum VectorGenerator {
    static let now = Date(timeIntervalSince1970: 1_717_200_000)

    static func seed(_ label: String) -> Data { Data(SHA256.hash(data: Data("swift-ath test vector: \(label)".utf8))) }

    /// The fixed key of one party for `alg` (a P-256 scalar or an Ed25519 seed, from its label).
    static func fixedKey(_ party: String, _ alg: SignatureAlgorithm) -> PrivateKey {
        switch alg {
        case .edDSA: .ed25519(try! Curve25519.Signing.PrivateKey(rawRepresentation: seed(party)))
        case .es256: .p256(try! P256.Signing.PrivateKey(rawRepresentation: seed("\(party) es256")))
        }
    }
    static let clientEphemeral = try! EphemeralKey(alg: .ecdhP256, raw: seed("client ephemeral"))
    static let serverEphemeral = try! EphemeralKey(alg: .ecdhP256, raw: seed("server ephemeral"))
    static let handshakeID = Base64URL.encode(seed("handshake_id"))
    static let credentialID = Base64URL.encode(seed("credential_jti"))
    static let proofNonce = Base64URL.encode(seed("proof nonce").prefix(16))
    static let orderBody = #"{"goods_id":"123","quantity":1}"#

    static func value(_ v: HandshakeRandomness.Value) -> String { Base64URL.encode(seed(v.rawValue)) }

    static let randomness = HandshakeRandomness(
        value: { value($0) }, ephemeralKey: { side, _ in side == .client ? clientEphemeral : serverEphemeral })

    static let policy = ServerPolicy(
        scopesSupported: ["goods:read", "order:create", "user:profile"], tokenMaxTTL: 7200,
        restrictions: Restrictions(rate_limit: "100/minute", order_amount_limit: 5000))

    static func generate(_ alg: SignatureAlgorithm = .edDSA) async throws -> JSONValue {
        let (clientKey, serverKey, userKey) = (fixedKey("client", alg), fixedKey("server", alg), fixedKey("user", alg))
        let clientDID = DID.key(clientKey.publicKey)
        let userDID = DID.key(userKey.publicKey)
        let serverDID = try DID("did:ath:ecommerce_platform_001")
        let identity = ServerIdentity(did: serverDID, keys: [serverKey])

        var client = ClientHandshake(did: clientDID, key: clientKey, expectedServer: serverDID, randomness: randomness)
        let m1 = try client.makeRequest(now: now)
        var (server, m2) = try ServerHandshake.begin(
            request: m1, id: handshakeID, identity: identity, policy: policy, registeredKey: nil, now: now, randomness: randomness)
        let m3 = try client.receiveResponse(m2, now: now)
        let m4 = try server.receiveIdentityProof(m3, policy: policy, now: now)
        _ = try client.receiveIdentityResult(m4, now: now)
        let credential = try await UserCredential.issue(
            user: userDID, key: userKey, client: clientDID, scopes: ["goods:read", "order:create"], validFor: 7200, now: now,
            jti: credentialID)
        let m5 = try client.makeScopeRequest(
            scopes: ["goods:read", "order:create"], ttl: 7200, credential: credential,
            context: "User needs to search products and place an order", now: now)
        let request = try server.receiveScopeRequest(m5, policy: policy, now: now)
        let claims = try await UserCredential.verify(credential, userKey: userKey.publicKey, client: clientDID, server: serverDID, now: now)
        let m6 = try server.authorize(
            request, credential: claims, clientInfo: ClientInfo(name: "AI Shopping Assistant", developer: "Example Agents Inc."),
            policy: policy, now: now, randomness: randomness)!
        let m7 = try UserConfirmation.answer(m6, approvedScopes: m6.requested_scopes, key: userKey, now: now)
        try server.receiveConfirmation(m7, userKey: userKey.publicKey, now: now)
        let completion = try await server.complete(
            policy: policy, tokenSigner: JWTCodec(key: identity.tokenKey), identity: identity, now: now, randomness: randomness)
        let grant = try client.receiveOutcome(completion.outcome, now: now)
        let proof = PossessionProof.make(
            key: grant.secrets.proofKey, method: "POST", target: "/api/order", body: Data(orderBody.utf8), token: grant.accessToken,
            now: now, nonce: proofNonce)

        func key(_ k: PrivateKey, did: DID?) -> JSONValue {
            var o: [String: JSONValue] = [
                "alg": .string(k.algorithm.rawValue), "public_pem": .string(k.publicKey.pem),
                "public_jwk": try! JSONValue.of(k.publicKey.jwk), "kid": .string(k.publicKey.thumbprint),
            ]
            switch k {
            case .ed25519(let raw): o["private_seed"] = .string(Base64URL.encode(raw.rawRepresentation))
            case .p256(let raw): o["private_scalar"] = .string(Base64URL.encode(raw.rawRepresentation))
            }
            if let did { o["did"] = .string(did.value) }
            return .object(o)
        }
        func ephemeral(_ e: EphemeralKey) -> JSONValue {
            ["alg": .string(e.algorithm.rawValue), "private": .string(Base64URL.encode(e.rawRepresentation)), "public": .string(e.publicKey)]
        }
        let secrets = grant.secrets
        return [
            "description": .string(
                alg == .edDSA
                    ? "One ATH 0.1 handshake (docs/PROTOCOL.md) with fixed Ed25519 keys, time and random values; every field is derived again by Tests/ATHCoreTests/VectorTests.swift."
                    : "One ATH 0.1 handshake (docs/PROTOCOL.md) with fixed P-256 keys (ES256), time and random values; ECDSA signatures are randomized, so Tests/ATHCoreTests/VectorTests.swift verifies every signature, hash, key and token in this file rather than regenerating it."),
            "signature_algorithm": .string(alg.rawValue),
            "now": .integer(Freshness.unix(now)),
            "keys": [
                "client": key(clientKey, did: clientDID), "server": key(serverKey, did: serverDID), "user": key(userKey, did: userDID),
                "client_ephemeral": ephemeral(clientEphemeral), "server_ephemeral": ephemeral(serverEphemeral),
            ],
            "random_values": .object(
                Dictionary(uniqueKeysWithValues: HandshakeRandomness.Value.allCases.map { ($0.rawValue, JSONValue.string(value($0))) })
                    .merging(["handshake_id": .string(handshakeID), "credential_jti": .string(credentialID)]) { a, _ in a }),
            "server_policy": try JSONValue.of(policy.metadata),
            "user_credential": .string(credential),
            "messages": [
                "1": m1, "2": m2, "3": m3, "4": m4, "5": m5, "6": try JSONValue.of(m6), "7": m7,
                "8": completion.outcome.scope_result, "9": completion.outcome.handshake_complete,
            ],
            "key_schedule": [
                "salt": .string(Base64URL.encode(try Transcript.of([m1, m2, m3, m4, m5, completion.outcome.scope_result]).hash())),
                "sid": .string(secrets.sessionID), "pop": .string(Base64URL.encode(secrets.proofKey.bytes)),
                "c2s": .string(Base64URL.encode(secrets.clientToServer.bytes)),
                "s2c": .string(Base64URL.encode(secrets.serverToClient.bytes)),
            ],
            "access_token_claims": try JSONValue.of(completion.token),
            "proof": [
                "method": "POST", "target": "/api/order", "body": .string(orderBody), "header": .string(proof.headerValue),
            ],
        ]
    }
}

extension Transcript {
    static func of(_ messages: [JSONValue]) -> Transcript {
        var t = Transcript()
        for m in messages { try! t.append(m) }
        return t
    }
}
