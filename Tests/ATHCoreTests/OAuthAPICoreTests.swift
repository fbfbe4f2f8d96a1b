import ATHCore
import Crypto
import Foundation
import Testing

/// The v0.1 API's pure parts: attestations, PKCE, the scope rule, operation maps.
@Suite struct OAuthAPICoreTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let audience = "https://gw.example"
    let key = P256.Signing.PrivateKey()
    let agentID = "https://agent.example/.well-known/agent.json"

    func attestation(
        header: String = #"{"typ":"JWT","alg":"ES256","kid":"default"}"#, claims: [String: JSONValue]? = nil, change: (inout [String: JSONValue]) -> Void = { _ in }
    ) -> String {
        let t = Int64(now.timeIntervalSince1970)
        var c: [String: JSONValue] =
            claims ?? [
                "iss": .string(agentID), "sub": .string(agentID), "aud": .string(audience), "iat": .integer(t), "exp": .integer(t + 3600),
                "jti": "j-1", "capabilities": [],
            ]
        change(&c)
        let input = Base64URL.encode(Data(header.utf8)) + "." + Base64URL.encode(Data(Self.text(.object(c)).utf8))
        return input + "." + Base64URL.encode(try! key.signature(for: Data(input.utf8)).rawRepresentation)
    }

    var publicKey: PublicKey { .p256(key.publicKey) }

    /// JSON text of any value, integers at the 64-bit edges included (which canonical JSON refuses).
    static func text(_ value: JSONValue) -> String {
        switch value {
        case .integer(let i): String(i)
        case .object(let members): "{" + members.map { "\(text(.string($0))):\(text($1))" }.joined(separator: ",") + "}"
        case .array(let items): "[" + items.map(text).joined(separator: ",") + "]"
        default: String(decoding: try! CanonicalJSON.bytes(value), as: UTF8.self)
        }
    }

    @Test func anAttestationAsTheOfficialSDKsSignIt() throws {
        let read = try AgentAttestation.read(attestation(), audience: audience, now: now)
        #expect(read.agentID == agentID && read.kid == "default" && read.algorithm == .es256)
        try read.verifySignature(with: publicKey)
        #expect(read.replayKey == "attestation:\(agentID):j-1")
        // The TypeScript client sends no typ; an audience list naming this server is accepted.
        _ = try AgentAttestation.read(attestation(header: #"{"alg":"ES256","kid":"k"}"#), audience: audience, now: now)
        _ = try AgentAttestation.read(attestation { $0["aud"] = ["https://other", .string(audience)] }, audience: audience, now: now)
    }

    @Test func aSignatureByAnotherKeyOrOverOtherClaimsFails() throws {
        let read = try AgentAttestation.read(attestation(), audience: audience, now: now)
        #expect(throws: ATHError.self) { try read.verifySignature(with: .p256(P256.Signing.PrivateKey().publicKey)) }
        #expect(throws: ATHError.self) { try read.verifySignature(with: PrivateKey.generate(.edDSA).publicKey) }
        // Claims swapped under a valid signature.
        let parts = attestation().split(separator: ".")
        let other = attestation { $0["sub"] = "https://mallory.example" }.split(separator: ".")
        let spliced = try AgentAttestation.read([parts[0], other[1], parts[2]].joined(separator: "."), audience: audience, now: now)
        #expect(throws: ATHError.self) { try spliced.verifySignature(with: publicKey) }
    }

    @Test(arguments: [
        #"{"alg":"none"}"#, #"{"alg":"HS256"}"#, #"{"alg":"RS256"}"#, #"{"typ":"at+jwt","alg":"ES256"}"#, #"{"typ":"JWT"}"#,
    ])
    func algorithmsAndTypesThatAreRefused(_ header: String) {
        #expect(throws: ATHError.self) { try AgentAttestation.read(attestation(header: header), audience: audience, now: now) }
    }

    @Test func claimsThatAreRefused() {
        let t = Int64(now.timeIntervalSince1970)
        let cases: [(String, (inout [String: JSONValue]) -> Void)] = [
            ("wrong aud", { $0["aud"] = "https://other" }),
            ("no sub", { $0["sub"] = nil }),
            ("empty jti", { $0["jti"] = "" }),
            ("no jti", { $0["jti"] = nil }),
            ("iat 301 s ahead", { $0["iat"] = .integer(t + 301); $0["exp"] = .integer(t + 600) }),
            ("expired", { $0["iat"] = .integer(t - 200); $0["exp"] = .integer(t - 1) }),
            ("over an hour", { $0["exp"] = .integer(t + 3601) }),
            ("exp before iat", { $0["iat"] = .integer(t); $0["exp"] = .integer(t - 10) }),
            ("iat as text", { $0["iat"] = .string(String(t)) }),
            ("iat at Int64.min", { $0["iat"] = .integer(.min) }),
            ("exp at Int64.max", { $0["exp"] = .integer(.max) }),
            ("fractional exp", { $0["exp"] = .number(Double(t) + 10.5) }),
        ]
        for (name, change) in cases {
            #expect(throws: ATHError.self, "\(name)") { try AgentAttestation.read(attestation(change: change), audience: audience, now: now) }
        }
        #expect(throws: ATHError.self) { try AgentAttestation.read(String(repeating: "a", count: 9000), audience: audience, now: now) }
        #expect(throws: ATHError.self) { try AgentAttestation.read("a.b", audience: audience, now: now) }
    }

    /// RFC 7636 Appendix B.
    @Test func pkceS256() {
        #expect(PKCE.challenge(for: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
        let verifier = PKCE.verifier()
        #expect(verifier.count == 43 && verifier != PKCE.verifier())
    }

    @Test func effectiveScopesAreTheIntersectionInRequestedOrder() {
        let s = ScopeIntersection(requested: ["b", "a", "c", "a"], agentApproved: ["a", "b"], userConsented: ["a", "b", "c"])
        #expect(s.effective == ["b", "a"])
        #expect(ScopeIntersection(requested: ["a"], agentApproved: ["a"], userConsented: ["b"]).effective.isEmpty)
    }

    @Test func secretsAreStoredAsDigestsAndComparedWhole() {
        let secret = OpaqueSecret.generate(prefix: "ath_cs_")
        #expect(secret.hasPrefix("ath_cs_") && secret.count == 7 + 43)
        let digest = OpaqueSecret.digest(secret)
        #expect(OpaqueSecret.matches(secret, digest: digest))
        #expect(!OpaqueSecret.matches(String(secret.dropLast()), digest: digest) && !OpaqueSecret.matches(digest, digest: digest))
    }

    @Test func operationMapMatching() throws {
        let map = try OperationMap(parsing: [
            "GET /userinfo read:user", "GET,HEAD /repos/*/issues/** repo", "* /admin/** admin", "POST / root",
        ])
        #expect(try map.scopes(admitting: "GET", path: "/userinfo") == ["read:user"])
        #expect(try map.scopes(admitting: "POST", path: "/userinfo").isEmpty)
        #expect(try map.scopes(admitting: "GET", path: "/userinfo/").isEmpty)
        #expect(try map.scopes(admitting: "HEAD", path: "/repos/x/issues") == ["repo"])
        #expect(try map.scopes(admitting: "GET", path: "/repos/x/issues/1/comments") == ["repo"])
        #expect(try map.scopes(admitting: "GET", path: "/repos/x/y/issues").isEmpty)
        #expect(try map.scopes(admitting: "DELETE", path: "/admin") == ["admin"])
        #expect(try map.scopes(admitting: "POST", path: "/") == ["root"])
        // Percent-encoded segments match their decoded text.
        #expect(try map.scopes(admitting: "GET", path: "/user%69nfo") == ["read:user"])
        #expect(try map.authorize(method: "GET", path: "/userinfo", held: ["repo", "read:user"]) == "read:user")
        #expect { try map.authorize(method: "GET", path: "/userinfo", held: ["repo"]) } throws: { ($0 as? ATHError)?.code == .scopeInsufficient }
        #expect { try map.authorize(method: "GET", path: "/nowhere", held: ["repo"]) } throws: { ($0 as? ATHError)?.code == .operationNotMapped }
    }

    @Test(arguments: [
        "/a/../admin", "/a/%2e%2e/admin", "/a/%2E./admin", "/a/./b", "/a/..;x/admin", "/a%2Fb", "/a%5cb", "/a\\b", "//admin", "/a//b",
        "/a%00", "/a%zz", "/a%f0%28", "relative", "/a%2",
    ])
    func pathsAnUpstreamCouldReadOtherwiseAreRefused(_ path: String) {
        #expect { try OperationMap.segments(of: path) } throws: { ($0 as? ATHError)?.code == .malformedMessage }
    }

    /// The last two: a form feed and a combining mark (a line that read as three fields printed
    /// back as two, found by the fuzzer), and a scope outside RFC 6749's characters.
    @Test(arguments: ["GET /a", "get /a s", "GET a s", "GET /a/**/b s", "GET /a* s", "GET /a/../b s", "GET, /a s", "G /\u{0C}\u{05AD}br-", "GET /a sc\"ope"])
    func routesThatDoNotParse(_ line: String) {
        #expect(throws: ATHError.self) { try OperationMap.Route(parsing: line) }
    }

    @Test func routesReadBackAsWritten() throws {
        for line in ["GET,HEAD /repos/*/issues/** repo", "* /admin/** admin", "POST / root"] {
            #expect(try OperationMap.Route(parsing: line).description == line)
        }
    }
}
