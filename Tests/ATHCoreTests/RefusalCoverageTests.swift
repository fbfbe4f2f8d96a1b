import ATHCore
import Foundation
import Testing

/// Refusals the negative matrix (docs/RELIABILITY.md) lacked a test for, each on the smallest
/// path that produces it.
@Suite struct RefusalCoverageTests {
    let now = Date()
    let serverDID = try! DID("did:ath:shop")
    let policy = ServerPolicy(scopesSupported: ["goods:read"], handshakeTimeout: 600)

    func identity(_ algs: [SignatureAlgorithm] = [.es256]) -> ServerIdentity {
        ServerIdentity(did: serverDID, keys: algs.map { PrivateKey.generate($0) })
    }

    @Test func anUnregisteredAgentWhereRegistrationIsRequired() throws {
        let key = PrivateKey.generate()
        var client = ClientHandshake(did: try DID("did:ath:stranger"), key: key)
        let strict = ServerPolicy(scopesSupported: ["goods:read"], requireRegisteredClients: true)
        #expect {
            try ServerHandshake.begin(request: client.makeRequest(now: now), id: "h", identity: identity(), policy: strict, registeredKey: nil, now: now)
        } throws: { ($0 as? ATHError)?.code == .unknownIdentity && ($0 as? ATHError)?.step == 1 }
    }

    /// A step 2 choosing an algorithm or version the client did not offer is a downgrade,
    /// refused before its signature is even looked at.
    @Test func aServerChoiceTheClientDidNotOffer() throws {
        let key = PrivateKey.generate(.es256)
        var both = ClientHandshake(did: DID.key(key.publicKey), key: key, capabilities: ["EdDSA", "ES256"])
        let (_, m2) = try ServerHandshake.begin(
            request: both.makeRequest(now: now), id: "h", identity: identity([.edDSA]), policy: policy, registeredKey: nil, now: now)
        var esOnly = ClientHandshake(did: DID.key(key.publicKey), key: key, capabilities: ["ES256"])
        _ = try esOnly.makeRequest(now: now)
        #expect { try esOnly.receiveResponse(m2, now: now) } throws: { ($0 as? ATHError)?.code == .downgradeDetected }
        var oldVersion = ClientHandshake(did: DID.key(key.publicKey), key: key, versions: ["0.0"])
        _ = try oldVersion.makeRequest(now: now)
        #expect { try oldVersion.receiveResponse(m2, now: now) } throws: { ($0 as? ATHError)?.code == .downgradeDetected }
    }

    /// A step that comes after the handshake's deadline ends it (HANDSHAKE_EXPIRED, 410), and
    /// the handshake stays ended.
    @Test func aStepAfterTheDeadline() throws {
        let key = PrivateKey.generate()
        var client = ClientHandshake(did: DID.key(key.publicKey), key: key)
        var (server, m2) = try ServerHandshake.begin(
            request: client.makeRequest(now: now), id: "h", identity: identity(), policy: policy, registeredKey: nil, now: now)
        let late = now.addingTimeInterval(601)
        let m3 = try client.receiveResponse(m2, now: now)
        #expect { try server.receiveIdentityProof(m3, policy: policy, now: late) } throws: {
            ($0 as? ATHError)?.code == .handshakeExpired && ATHError.Code.handshakeExpired.httpStatus == 410
        }
        #expect(server.state == .failed)
        #expect { try server.receiveIdentityProof(m3, policy: policy, now: now) } throws: { ($0 as? ATHError)?.code == .handshakeExpired }
    }

    /// A step 4 that says the identity proof failed without saying why: HANDSHAKE_FAILED.
    @Test func aRefusalWithoutAReason() throws {
        let key = PrivateKey.generate()
        var client = ClientHandshake(did: DID.key(key.publicKey), key: key)
        var (server, m2) = try ServerHandshake.begin(
            request: client.makeRequest(now: now), id: "h", identity: identity(), policy: policy, registeredKey: nil, now: now)
        _ = try server.receiveIdentityProof(try client.receiveResponse(m2, now: now), policy: policy, now: now)
        let m4: JSONValue = [
            "type": "identity_result", "handshake_id": "h", "success": false, "timestamp": .integer(Freshness.unix(now)),
        ]
        #expect { try client.receiveIdentityResult(m4, now: now) } throws: { ($0 as? ATHError)?.code == .handshakeFailed }
    }

    @Test func anAccessTokenPastItsExpiry() throws {
        let t = Freshness.unix(now)
        let claims = AccessTokenClaims(
            iss: serverDID.value, aud: serverDID.value, sub: "did:ath:u", client_did: "did:ath:a", scope: "goods:read", iat: t - 3600,
            exp: t - 1, jti: "j", gid: "g", sid: "s")
        #expect { try AccessToken.checkClaims(claims, server: serverDID, now: now) } throws: { ($0 as? ATHError)?.code == .tokenExpired }
        #expect(throws: Never.self) { try AccessToken.checkExpiry(claims, now: now.addingTimeInterval(-2)) }
    }
}
