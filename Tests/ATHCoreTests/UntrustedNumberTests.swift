import Crypto
import Foundation
import JWTKit
import Testing

@testable import ATHCore

/// Numbers a peer chooses, at the edges of their types: each place that does arithmetic on one
/// answers with the documented refusal instead of trapping (a trap ends the whole server).
@Suite struct UntrustedNumberTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    static let edges: [Int64] = [.min, .min + 1, -1, 0, .max - 1, .max]

    @Test(arguments: edges)
    func freshnessAtTheEdges(_ timestamp: Int64) {
        #expect { try Freshness.check(timestamp, now: now, step: 1) } throws: { ATHError.code($0) == .timestampOutOfRange }
    }

    @Test func withinAndLifetime() {
        let t = Freshness.unix(now)
        #expect(Freshness.within(300, t - 300, of: t) && Freshness.within(300, t + 300, of: t))
        #expect(!Freshness.within(300, t - 301, of: t) && !Freshness.within(300, .min, of: t) && !Freshness.within(300, .max, of: t))
        #expect(!Freshness.within(300, .min, of: .max) && Freshness.within(0, .min, of: .min))
        #expect(Freshness.lifetime(issuedAt: 10, expiresAt: 310) == 300)
        #expect(Freshness.lifetime(issuedAt: .min, expiresAt: .max) == nil)
        #expect(Freshness.lifetime(issuedAt: 10, expiresAt: 9) == nil)
    }

    @Test func canonicalJSONRefusesIntegersBeyondIJSON() throws {
        for i in [Int64.min, -9_007_199_254_740_992, 9_007_199_254_740_992, .max] {
            #expect { try CanonicalJSON.bytes(.integer(i)) } throws: { ATHError.code($0) == .malformedMessage }
        }
        #expect(String(decoding: try CanonicalJSON.bytes(.integer(-9_007_199_254_740_991)), as: UTF8.self) == "-9007199254740991")
        #expect(String(decoding: try CanonicalJSON.bytes(.integer(9_007_199_254_740_991)), as: UTF8.self) == "9007199254740991")
    }

    /// Decoding into a message's integer field takes I-JSON's exact integers only, so no field
    /// reaches arithmetic with a magnitude beyond 2^53.
    @Test func integerFieldsTakeOnlyExactIntegers() throws {
        struct Message: Decodable { var timestamp: Int64; var ttl: Int }
        for text in ["-9223372036854775808", "9223372036854775807", "9007199254740992", "1e18", "-1e300"] {
            let json = try JSONValue.parse(Array(#"{"timestamp": \#(text), "ttl": 1}"#.utf8))
            #expect { try json.decode(Message.self) } throws: { ATHError.code($0) == .malformedMessage }
        }
        let ok = try JSONValue.parse(Array(#"{"timestamp": -9007199254740991, "ttl": 9007199254740991}"#.utf8)).decode(Message.self)
        #expect(ok.timestamp == -9_007_199_254_740_991 && ok.ttl == 9_007_199_254_740_991)
    }

    /// The step-1 message that used to end the process: refused as malformed, before any check.
    @Test func stepOneWithTheSmallestTimestamp() throws {
        let key = PrivateKey.generate()
        let text = #"""
            {"client_did":"did:ath:agent","client_pubkey":\#(String(decoding: try CanonicalJSON.bytes(.string(key.publicKey.pem)), as: UTF8.self)),"versions":["0.1"],"capabilities":["ES256"],"nonce":"\#(Nonce.generate())","timestamp":-9223372036854775808}
            """#
        let raw = try JSONValue.parse(Array(text.utf8))
        // The document itself keeps the value; canonicalizing it (the transcript) refuses it too.
        #expect { try CanonicalJSON.bytes(raw) } throws: { ATHError.code($0) == .malformedMessage }
        let server = ServerIdentity(did: try DID("did:ath:server"), keys: [PrivateKey.generate()])
        #expect {
            try ServerHandshake.begin(request: raw, id: "h", identity: server, policy: ServerPolicy(scopesSupported: ["a"]), registeredKey: nil, now: now)
        } throws: { ATHError.code($0) == .malformedMessage }
    }

    @Test func stepOneFromTheServersOwnDID() throws {
        let key = PrivateKey.generate()
        let server = ServerIdentity(did: try DID("did:ath:server"), keys: [key])
        var client = ClientHandshake(did: server.did, key: key)
        let m1 = try client.makeRequest(now: now)
        #expect {
            try ServerHandshake.begin(request: m1, id: "h", identity: server, policy: ServerPolicy(scopesSupported: ["a"]), registeredKey: nil, now: now)
        } throws: { (ATHError.code($0) == .malformedMessage) && (($0 as? ATHError)?.message.contains("own DID") == true) }
    }

    /// A token whose claims were signed with iat and exp at the ends of the 64-bit range, as a
    /// forger holding a user's key (or any key) could make: refused with the token's own error.
    @Test func userRequestTokenAtTheEdges() async throws {
        let key = PrivateKey.generate()
        let server = try DID("did:ath:server")
        let token = try Self.jws(
            header: #"{"alg":"ES256","kid":"\#(key.publicKey.thumbprint)","typ":"ath-user-request+jwt"}"#,
            claims: #"{"aud":"did:ath:server","exp":9223372036854775807,"iat":-9223372036854775808,"iss":"did:ath:u","jti":"x"}"#, key: key)
        await #expect {
            try await UserRequestToken.verify(token, key: key.publicKey, server: server, now: now)
        } throws: { ATHError.code($0) == .userAuthenticationFailed }
    }

    @Test func accessTokenClaimsAtTheEdges() throws {
        let server = try DID("did:ath:server")
        let claims = AccessTokenClaims(
            iss: server.value, aud: server.value, sub: "did:ath:u", client_did: "did:ath:a", scope: "x", iat: .min, exp: .max, jti: "j",
            gid: "g", sid: "s")
        #expect { try AccessToken.checkClaims(claims, server: server, now: now) } throws: { ATHError.code($0) == .tokenInvalid }
    }

    @Test func proofTimestampAtTheEdges() throws {
        let key = SymmetricKey(size: .bits256)
        // Negative timestamps are refused when the header is read; the largest one after the MAC.
        #expect { try PossessionProof(headerValue: "t=-9223372036854775808,n=\(Nonce.generate()),mac=AAAA") } throws: {
            ATHError.code($0) == .proofInvalid
        }
        // The grammar: digits only for t (no sign, at most 19), base64url only for n.
        let n = Nonce.generate(bytes: 16)
        for header in ["t=+5,n=\(n),mac=AAAA", "t=99999999999999999999,n=\(n),mac=AAAA", "t=1,n=\(n)!,mac=AAAA", "t=1,n=\(n),mac=AAAA,x=1"] {
            #expect(throws: ATHError.self, "\(header)") { try PossessionProof(headerValue: header) }
        }
        #expect(try PossessionProof(headerValue: "t=1, n=\(n), mac=AAAA").timestamp == 1)
        let proof = PossessionProof.make(
            key: key, method: "GET", target: "/x", body: Data(), token: "t", now: Date(timeIntervalSince1970: 9.2e18))
        #expect(proof.timestamp > 9_000_000_000_000_000_000)
        #expect { try proof.verify(key: key, method: "GET", target: "/x", body: Data(), token: "t", now: now) } throws: {
            ATHError.code($0) == .proofInvalid
        }
    }

    @Test func webhookTimestampAtTheEdges() throws {
        let secret = SymmetricKey(size: .bits256)
        let body = Data("{}".utf8)
        for t in [Int64.min, .max] {
            let mac = HMAC<SHA256>.authenticationCode(for: WebhookSignature.input(t, body), using: secret)
            let signature = try WebhookSignature(headerValue: "t=\(t),v1=\(Base64URL.encode(Data(mac)))")
            #expect { try signature.verify(body, secret: secret, now: now) } throws: { ATHError.code($0) == .timestampOutOfRange }
        }
    }

    /// An authentic frame (sealed with the session's key, as the agent itself could send it)
    /// numbered 2^64 − 1: the window has no number after it, so it is refused.
    @Test(arguments: [SessionOpener.Ordering.stream, .window(64)])
    func lastSequenceNumber(_ ordering: SessionOpener.Ordering) throws {
        let sessionID = Array(0..<16).map(UInt8.init)
        let keys = SessionTrafficKeys(secret: SymmetricKey(size: .bits256), suite: .aes256gcm)
        var sealer = SessionSealer(keys: keys, direction: .clientToServer, sessionID: sessionID, now: now)
        sealer.nextSequence = .max - 1
        let last = try sealer.seal(.call, Array(#"{"id":1,"method":"m"}"#.utf8), now: now)
        #expect(throws: SessionRefusal.closed) { try sealer.seal(.call, [], now: now) }
        var opener = SessionOpener(keys: keys, direction: .clientToServer, sessionID: sessionID, ordering: ordering)
        if ordering == .stream { opener.next = .max - 1 }
        guard case .success = opener.open(last) else { Issue.record("the frame before the last opens"); return }
        let header = SessionFrame.Header(kind: .call, direction: .clientToServer, epoch: 0, sessionID: sessionID, sequence: .max)
            .bytes(reservingCapacity: 64 + SessionFrame.tagSize)
        var plaintext = [UInt8](repeating: 0, count: 64)
        plaintext[3] = 2
        plaintext[4] = UInt8(ascii: "{")
        plaintext[5] = UInt8(ascii: "}")
        let frame = try keys.seal(plaintext, sequence: .max, header: header)
        guard case .failure(.malformed) = opener.open(frame) else {
            Issue.record("sequence 2^64 − 1 must be refused")
            return
        }
    }

    @Test func rpcIDsBeyondIJSON() throws {
        for id in ["9007199254740992", "9223372036854775807", "-1"] {
            #expect(throws: ATHError.self) { try SessionRPC.Message(kind: .call, payload: Array(#"{"id":\#(id),"method":"m"}"#.utf8)) }
        }
        let ok = try SessionRPC.Message(kind: .call, payload: Array(#"{"id":9007199254740991,"method":"m"}"#.utf8))
        #expect(ok.id == 9_007_199_254_740_991)
    }

    @Test func legacyCheckDigitsOfAnyText() {
        // Characters outside the alphabet are refused by the initializer; the helper must not trap on them.
        _ = LegacyAgentIdentityCode.checkDigits(of: "héllo wörld ✓")
        #expect(throws: ATHError.self) { try LegacyAgentIdentityCode(parsing: "1000100001-K912345E789ABCDEF2353") }
    }

    /// A compact JWS over exactly these bytes, signed with `key` (ES256: r || s).
    static func jws(header: String, claims: String, key: PrivateKey) throws -> String {
        let input = Base64URL.encode(Data(header.utf8)) + "." + Base64URL.encode(Data(claims.utf8))
        return input + "." + Base64URL.encode(try key.signature(for: Data(input.utf8)))
    }
}

extension ATHError {
    static func code(_ error: any Error) -> ATHError.Code? { (error as? ATHError)?.code }
}
