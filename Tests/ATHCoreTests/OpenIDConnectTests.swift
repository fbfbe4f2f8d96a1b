import Crypto
import Foundation
import JWTKit
import Testing

@testable import ATHCore

/// ID token verification, one refusal per check (OIDC Core §3.1.3.7), with tokens signed here
/// by a provider key of our own (the integration tests use a real provider).
@Suite struct OpenIDConnectTests {
    let providerKey = P256.Signing.PrivateKey()
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let issuer = "https://idp.example"
    let clientID = "ath-console"

    var jwks: JWKS {
        get throws {
            let jwk = PublicKey.p256(providerKey.publicKey).jwk
            let json = #"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","x":"\#(jwk.x)","y":"\#(jwk.y!)"}]}"#
            return try JSONDecoder().decode(JWKS.self, from: Data(json.utf8))
        }
    }

    func claims(
        iss: String? = nil, sub: String = "alice", aud: [String]? = nil, exp: Int64? = nil, iat: Int64? = nil, nonce: String? = "n-1",
        azp: String? = nil
    ) -> IDTokenClaims {
        let t = Int64(now.timeIntervalSince1970)
        return IDTokenClaims(
            iss: iss ?? issuer, sub: sub, aud: AudienceClaim(value: aud ?? [clientID]), exp: exp ?? t + 300, iat: iat ?? t - 5,
            nonce: nonce, azp: azp)
    }

    func sign(_ claims: IDTokenClaims, key: P256.Signing.PrivateKey? = nil, kid: String? = "k1") async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(ecdsa: try ES256PrivateKey(backing: key ?? providerKey), kid: kid.map { JWKIdentifier(string: $0) })
        var header = JWTHeader()
        if let kid { header.kid = kid }
        return try await keys.sign(claims, header: header)
    }

    func expect(nonce: String = "n-1") -> OpenIDConnect.Expectations {
        OpenIDConnect.Expectations(issuer: issuer, clientID: clientID, nonce: nonce, now: now)
    }

    func refusal(_ token: String, _ expectations: OpenIDConnect.Expectations? = nil) async throws -> String {
        do {
            _ = try await OpenIDConnect.verify(token, keys: try jwks, expect: expectations ?? expect())
            return "accepted"
        } catch let error as ATHError {
            #expect(error.code == .userAuthenticationFailed)
            return error.message
        }
    }

    @Test func aGoodTokenIsAccepted() async throws {
        let verified = try await OpenIDConnect.verify(try await sign(claims()), keys: try jwks, expect: expect())
        #expect(verified.sub == "alice")
        // Without a kid the provider's keys are tried in turn.
        #expect(try await OpenIDConnect.verify(try await sign(claims(), kid: nil), keys: try jwks, expect: expect()).sub == "alice")
    }

    @Test func eachFailedCheckIsRefusedWithItsReason() async throws {
        let t = Int64(now.timeIntervalSince1970)
        let cases: [(String, String)] = [
            (try await sign(claims(), key: P256.Signing.PrivateKey()), "signature"),
            (try await sign(claims(), kid: "rotated-away"), "signature"),
            (try await sign(claims(iss: "https://evil.example")), "issuer"),
            (try await sign(claims(aud: ["another-client"])), "audience"),
            (try await sign(claims(aud: [clientID, "another-client"], azp: "another-client")), "authorized party"),
            (try await sign(claims(exp: t - 61)), "expired"),
            (try await sign(claims(iat: t + 120)), "future"),
            (try await sign(claims(iat: t - 3600)), "too long ago"),
            (try await sign(claims(nonce: nil)), "nonce"),
            (try await sign(claims(nonce: "n-2")), "nonce"),
            (try await sign(claims(sub: "")), "subject"),
        ]
        for (token, reason) in cases {
            let message = try await refusal(token)
            #expect(message.contains(reason), "\(message) should name \(reason)")
        }
    }

    @Test func unsignedAndSymmetricTokensAreRefusedBeforeAnyKeyIsTried() async throws {
        let payload = Base64URL.encode(try JSONEncoder().encode(claims()))
        let none = Base64URL.encode(Data(#"{"alg":"none","typ":"JWT"}"#.utf8)) + "." + payload + "."
        #expect(try await refusal(none).contains("algorithm 'none'"))
        let hmac = JWTKeyCollection()
        await hmac.add(hmac: HMACKey(from: "a client secret of thirty-two bytes!"), digestAlgorithm: .sha256, kid: "k1")
        let hs256 = try await hmac.sign(claims(), kid: "k1")
        #expect(try await refusal(hs256).contains("algorithm 'HS256'"))
        #expect(try await refusal("not a token").contains("JWS"))
    }

    @Test func theExternalIDIsStableAndSeparatesIssuers() {
        let a = OpenIDConnect.externalID(issuer: "https://a.example", subject: "alice")
        #expect(a == OpenIDConnect.externalID(issuer: "https://a.example", subject: "alice"))
        #expect(a != OpenIDConnect.externalID(issuer: "https://b.example", subject: "alice"))
        #expect(a.hasPrefix("oidc_") && a.count == 48)
        #expect((try? Account.validateExternalID(a)) != nil)
    }
}
