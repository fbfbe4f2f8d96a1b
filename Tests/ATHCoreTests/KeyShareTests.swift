import Crypto
import Foundation
import Testing

@testable import ATHCore

/// Step 5's key share is checked when it arrives: a share step 9 could not use is refused
/// before the user is asked to approve a handshake that cannot complete.
@Suite struct KeyShareTests {
    let now = Date()

    @Test func keyShares() throws {
        let p256 = EphemeralKey.generate(.ecdhP256).publicKey
        let x25519 = EphemeralKey.generate(.x25519).publicKey
        try KeyExchangeAlgorithm.ecdhP256.validate(publicKey: p256)
        try KeyExchangeAlgorithm.x25519.validate(publicKey: x25519)
        var offCurve = Array(Base64URL.decode(p256)!)
        offCurve[64] ^= 1
        let bad = [
            (KeyExchangeAlgorithm.ecdhP256, Base64URL.encode(Data(offCurve))), (.ecdhP256, x25519), (.ecdhP256, "not base64!"),
            (.x25519, Base64URL.encode(Data(count: 32))),  // the identity: small order, all-zero secret
            (.x25519, Base64URL.encode(Data([1] + [UInt8](repeating: 0, count: 31)))),  // order 1 as well
            (.x25519, Base64URL.encode(Data(count: 31))), (.x25519, p256),
        ]
        for (alg, share) in bad {
            #expect(throws: ATHError.self, "\(alg) \(share)") { try alg.validate(publicKey: share) }
        }
    }

    /// A correctly signed step 5 whose key share is the X25519 identity point: refused with
    /// MALFORMED_MESSAGE at step 5, and the handshake ends (no step 6 is ever made).
    @Test(arguments: [
        (KeyExchangeAlgorithm.x25519, Base64URL.encode(Data(count: 32))),
        (.ecdhP256, Base64URL.encode(Data([4] + [UInt8](repeating: 7, count: 64)))),
    ])
    func smallOrderOrOffCurveShareEndsTheHandshake(_ alg: KeyExchangeAlgorithm, _ share: String) async throws {
        let serverDID = try DID("did:ath:shop")
        let identity = ServerIdentity(did: serverDID, keys: [PrivateKey.generate()])
        let policy = ServerPolicy(scopesSupported: ["goods:read"])
        let agentKey = PrivateKey.generate()
        let agent = DID.key(agentKey.publicKey)
        var client = ClientHandshake(did: agent, key: agentKey, keyExchange: alg, expectedServer: serverDID)
        var (server, m2) = try ServerHandshake.begin(
            request: try client.makeRequest(now: now), id: "h1", identity: identity, policy: policy, registeredKey: nil, now: now)
        _ = try client.receiveIdentityResult(
            try server.receiveIdentityProof(try client.receiveResponse(m2, now: now), policy: policy, now: now), now: now)
        let m5 = ScopeRequest(
            handshake_id: "h1", scopes: ["goods:read"], ttl: 600, user_authorization: UserAuthorization(credential: "c", signature: nil),
            context: "x", key_exchange: KeyShare(alg: alg.rawValue, public_key: share), timestamp: Freshness.unix(now))
        let signed = try SignedMessage.sign(
            m5, .scopeRequest, client: agent, server: serverDID, user: nil, after: client.transcript, key: agentKey)
        #expect { try server.receiveScopeRequest(signed.value, policy: policy, now: now) } throws: {
            ATHError.code($0) == .malformedMessage && ($0 as? ATHError)?.step == 5
        }
        #expect(server.state == .failed)
    }
}
