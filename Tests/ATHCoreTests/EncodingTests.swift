@testable import ATHCore
import Crypto
import JWTKit
import Foundation
import Testing

@Suite struct CanonicalJSONTests {
    @Test func sortsKeysAndDropsWhitespace() throws {
        let value = try JSONValue.parse(Data(#"{ "b": 1, "a": [true, null, "x"], "A": {"z": 2, "y": 1} }"#.utf8))
        #expect(String(decoding: try CanonicalJSON.bytes(value), as: UTF8.self) == #"{"A":{"y":1,"z":2},"a":[true,null,"x"],"b":1}"#)
    }

    /// Every ASCII key, and keys that are prefixes of one another, sort by their code units:
    /// the order RFC 8785 gives, whichever comparison the writer uses for ASCII keys.
    @Test func asciiKeysSortByTheirCodeUnits() {
        var keys = (0..<128).map { String(UnicodeScalar(UInt8($0))) }
        keys += ["", "a", "aa", "a_", "a~", "a\u{7f}", "A", "AB", "Ab", "_a", "~", "z0", "z", "z\u{0}", "\r\n", "\r\u{0}", "id", "id_token", "idToken"]
        let members = Dictionary(keys.map { ($0, JSONValue.null) }, uniquingKeysWith: { a, _ in a })
        let sorted = CanonicalJSON.sorted(members).map(\.key)
        #expect(sorted == members.keys.sorted { $0.utf16.lexicographicallyPrecedes($1.utf16) })
        // Outside ASCII, UTF-16 order: U+1F600 (0xD83D 0xDE00) before U+FF5E, unlike by scalar value.
        let wide = CanonicalJSON.sorted(["\u{FF5E}": .null, "\u{1F600}": .null, "z": .null]).map(\.key)
        #expect(wide == ["z", "\u{1F600}", "\u{FF5E}"])
    }

    @Test func escapesAsRFC8785() throws {
        let value: JSONValue = ["s": .string("a\"b\\c\n\u{01}é€")]
        #expect(String(decoding: try CanonicalJSON.bytes(value), as: UTF8.self) == "{\"s\":\"a\\\"b\\\\c\\n\\u0001é€\"}")
    }

    @Test func numbersFollowECMAScript() throws {
        #expect(try CanonicalJSON.number(5000) == "5000")
        #expect(try CanonicalJSON.number(4.5) == "4.5")
        #expect(try CanonicalJSON.number(1e21) == "1e+21")
        #expect(try CanonicalJSON.number(1e-7) == "1e-7")
        // Values from RFC 8785 appendix B and ECMAScript's layout rules.
        #expect(try CanonicalJSON.number(0.00001) == "0.00001")
        #expect(try CanonicalJSON.number(0.000001) == "0.000001")
        #expect(try CanonicalJSON.number(-1.5e-5) == "-0.000015")
        #expect(try CanonicalJSON.number(1e20) == "100000000000000000000")
        #expect(try CanonicalJSON.number(1.2345678901234568e20) == "123456789012345680000")
        #expect(try CanonicalJSON.number(9007199254740994) == "9007199254740994")
        #expect(try CanonicalJSON.number(333333333.3333332) == "333333333.3333332")
        #expect(try CanonicalJSON.number(.leastNonzeroMagnitude) == "5e-324")
        #expect(try CanonicalJSON.number(-1.7976931348623157e308) == "-1.7976931348623157e+308")
        #expect(try CanonicalJSON.number(123.456) == "123.456")
        #expect(throws: ATHError.self) { try CanonicalJSON.number(.infinity) }
        // A received integer too large for Int64 is a double, canonicalized without trapping.
        let big = try JSONValue.parse(Data(#"{"a":100000000000000000000}"#.utf8))
        #expect(String(decoding: try CanonicalJSON.bytes(big), as: UTF8.self) == #"{"a":100000000000000000000}"#)
    }

    /// The encoder writes the alphabet itself; it must give Foundation's base64 with the URL
    /// alphabet and no padding, for every length and byte.
    @Test func base64URLEncodingMatchesFoundation() {
        var generator = SystemRandomNumberGenerator()
        for length in 0..<100 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let foundation = Data(bytes).base64EncodedString()
                .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
            #expect(Base64URL.encode(bytes) == foundation)
            #expect(Base64URL.decode(foundation) == Data(bytes))
        }
        #expect(Base64URL.encode(Data((0...255).map { UInt8($0) })) == Data((0...255).map { UInt8($0) }).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: ""))
    }

    /// A scope is granted only as a whole word of the space-separated list.
    @Test func scopesAreMatchedWholly() {
        let claims = AccessTokenClaims(
            iss: "s", aud: "s", sub: "u", client_did: "c", scope: "goods:read  order:create", iat: 0, exp: 1, jti: "j", gid: "g", sid: "x")
        #expect(claims.grants("goods:read") && claims.grants("order:create"))
        for other in ["goods", "order:creat", "order:create ", "goods:read order:create", "", " ", "rder:create"] {
            #expect(!claims.grants(other), "\(other)")
        }
    }

    @Test func base64URLIsStrict() {
        #expect(Base64URL.encode(Data([0xFB, 0xFF])) == "-_8")
        #expect(Base64URL.decode("-_8") == Data([0xFB, 0xFF]))
        #expect(Base64URL.decode("+/8=") == nil)
        #expect(Base64URL.decode("a") == nil)
        // Unused bits must be zero: "QQ" is the one spelling of 0x41, "QR" another that is refused.
        #expect(Base64URL.decode("QQ") == Data([0x41]) && Base64URL.decode("QR") == nil)
        #expect(Base64URL.decode("QUI") == Data([0x41, 0x42]) && Base64URL.decode("QUJ") == nil)
        #expect(Base64URL.decode("") == Data())
        for bad in ["QQ==", "Q Q", "QQ\n", "ab.c", "ab~c", "é"] { #expect(Base64URL.decode(bad) == nil, "\(bad)") }
        // Every length and byte value round-trips, and agrees with Foundation's decoder.
        var rng = SystemRandomNumberGenerator()
        for count in 0..<70 {
            let bytes = Data((0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) })
            let text = Base64URL.encode(bytes)
            #expect(Base64URL.decode(text) == bytes)
            #expect(Data(base64Encoded: bytes.base64EncodedString()) == Base64URL.decode(text))
        }
    }
}

/// A signed message is canonicalized once for both forms (Transcript.swift): the bytes with its
/// signature removed must be those of the message without it, wherever the member sorts.
@Suite struct SignedMessageCanonicalTests {
    static let documents: [JSONValue] = [
        ["signature": "s"], ["a": 1, "signature": "s"], ["signature": "s", "z": [1, 2]], ["a": "x", "signature": "s", "z": nil],
        ["a": 1, "z": 2],
        ["scopes": ["a"], "user_authorization": ["credential": "c", "signature": "s"]],
        ["user_authorization": ["signature": "s"]], ["user_authorization": ["signature": "s", "zeta": true], "signature": "t"],
        ["deeper": ["user_authorization": ["signature": "kept"]], "signature": ["not": "a string"]],
        ["é": "non-ASCII key", "signature": "s\n\"escaped\"", "𝄞": 1],
    ]

    @Test func oneCanonicalizationGivesBothForms() throws {
        for document in Self.documents {
            let signed = try SignedMessage(received: document)
            #expect(signed.canonical == (try CanonicalJSON.bytes(document)))
            #expect(signed.unsigned == (try CanonicalJSON.bytes(document.withoutSignature())))
        }
    }

    @Test func signingPlacesTheSignatureWhereCanonicalizationPutsIt() throws {
        struct Message: Encodable {
            var a = 1, signature = "", zz = "last"
        }
        struct Nested: Encodable {
            struct Auth: Encodable { var credential = "c", signature: String? = nil }
            var handshake_id = "h", user_authorization = Auth()
        }
        let key = PrivateKey.generate(.es256)
        let (client, server) = (DID.key(key.publicKey), try DID("did:ath:shop"))
        var transcript = Transcript()
        try transcript.append(["m": 1])
        let flat = try SignedMessage.sign(
            Message(), .clientIdentity, client: client, server: server, user: nil, after: transcript, key: key)
        let nested = try SignedMessage.sign(
            Nested(), .scopeRequest, client: client, server: server, user: nil, after: transcript, key: key)
        for (signed, context) in [(flat, SignatureContext.clientIdentity), (nested, .scopeRequest)] {
            #expect(signed.canonical == (try CanonicalJSON.bytes(signed.value)))
            #expect(signed.unsigned == (try CanonicalJSON.bytes(signed.value.withoutSignature())))
            let signature = context == .scopeRequest
                ? signed.value["user_authorization"]?["signature"]?.stringValue : signed.value["signature"]?.stringValue
            let hash = try transcript.hash(including: signed.value.withoutSignature())
            try SigningInput(context, client: client, server: server, transcriptHash: hash)
                .verify(try #require(signature), with: key.publicKey, step: 3)
        }
    }
}

@Suite struct JSONParserTests {
    func parse(_ text: String) throws -> JSONValue { try JSONValue.parse(Data(text.utf8)) }

    @Test func readsEveryKind() throws {
        let value = try parse(#" { "s": "a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00€", "i": -12, "z": -0, "d": 0.5, "e": 1e2, "f": 2.5E-3,"#
            + #" "big": 123456789012345678901, "t": true, "n": null, "a": [ [], {}, false ] } "#)
        #expect(value["s"] == .string("a\"\\/\u{08}\u{0C}\n\r\té😀€"))
        #expect(value["i"] == .integer(-12))
        #expect(value["z"] == .integer(0))
        #expect(value["d"] == .number(0.5))
        #expect(value["e"] == .integer(100))
        #expect(value["f"] == .number(0.0025))
        #expect(value["big"] == .number(1.2345678901234568e20))
        #expect(value["t"] == .bool(true))
        #expect(value["n"] == .null)
        #expect(value["a"] == .array([.array([]), .object([:]), .bool(false)]))
    }

    /// Foundation keeps the first of two members and other languages the last: refused, so
    /// the same bytes cannot mean two documents to two verifiers.
    @Test(arguments: [
        #"{"a":1,"a":2}"#, #"{"a":{"b":1,"b":1}}"#, "", " ", "{", "[1,]", "[1 2]", #"{"a" 1}"#, #"{a:1}"#, "01", "1.", ".5", "-",
        "1e", "+1", "1e400", "tru", "nul", #""\x""#, #""\u12""#, #""\ud800""#, #""\udc00x""#, #""\ud800\u0041""#,
        "\"a\u{01}\"", "\"abc", "[1] 2", "NaN", "\"\\", String(repeating: "[", count: 65) + String(repeating: "]", count: 65),
    ])
    func refuses(_ text: String) {
        #expect(throws: ATHError.self) { try parse(text) }
    }

    @Test func refusesInvalidUTF8() {
        #expect(throws: ATHError.self) { try JSONValue.parse(Data([0x22, 0xC3, 0x28, 0x22])) }
        #expect(throws: ATHError.self) { try JSONValue.parse(Data([0x22, 0xED, 0xA0, 0x80, 0x22])) }
    }

    @Test func acceptsNestingUpToTheLimit() throws {
        let depth = 64
        let text = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        var value = try parse(text)
        var seen = 0
        while case .array(let inner) = value, let first = inner.first {
            value = first
            seen += 1
        }
        #expect(seen == depth - 1)
    }
}

/// The direct Codable ↔ JSONValue coder must give the document a JSON round trip gives, or
/// signatures made by one peer would not verify at another.
@Suite struct JSONValueCoderTests {
    struct Sample: Codable, Equatable {
        var name: String
        var amount: Double
        var fraction: Double
        var count: UInt8
        var big: Int64
        var optional: String?
        var nested: Restrictions
        var list: [[String: Int]]
        var raw: JSONValue
    }

    let sample = Sample(
        name: "a\"b", amount: 5000, fraction: 0.25, count: 7, big: -9_007_199_254_740_991, optional: nil,
        nested: Restrictions(ip_whitelist: ["10.0.0.0/8"], rate_limit: "100/minute", order_amount_limit: 49.5),
        list: [["x": 1], [:]], raw: ["k": [1, "two", nil, true]])

    @Test func encodesAsAJSONRoundTripWould() throws {
        let direct = try JSONValue.of(sample)
        let viaBytes = try JSONValue.parse(JSONEncoder().encode(sample))
        #expect(direct == viaBytes)
        #expect(direct["amount"] == .integer(5000))
        #expect(direct["optional"] == nil)
        #expect(try CanonicalJSON.bytes(direct) == CanonicalJSON.bytes(viaBytes))
    }

    @Test func decodesWhatItEncodes() throws {
        #expect(try JSONValue.of(sample).decode(Sample.self) == sample)
    }

    @Test func namesTheFieldThatDoesNotMatch() throws {
        var doc = try JSONValue.of(sample)
        guard case .object(var members) = doc else { Issue.record("not an object"); return }
        members["count"] = 300
        doc = .object(members)
        #expect(throws: ATHError.self) { try doc.decode(Sample.self) }
        do {
            _ = try doc.decode(Sample.self)
        } catch let error as ATHError {
            #expect(error.code == .malformedMessage)
            #expect(error.message.contains("count"))
        }
        members["count"] = 1
        members["nested"] = ["rate_limit": 5]
        do {
            _ = try JSONValue.object(members).decode(Sample.self)
            Issue.record("a number where a string belongs was accepted")
        } catch let error as ATHError {
            #expect(error.message.contains("nested.rate_limit"))
        }
        members.removeValue(forKey: "name")
        do {
            _ = try JSONValue.object(members).decode(Sample.self)
            Issue.record("a missing field was accepted")
        } catch let error as ATHError {
            #expect(error.message.contains("missing field 'name'"))
        }
    }

    @Test func refusesWhatJSONCannotHold() {
        #expect(throws: EncodingError.self) { try JSONValue.of(["x": Double.nan]) }
        #expect(throws: EncodingError.self) { try JSONValue.of([UInt64.max]) }
    }
}

@Suite struct KeyAndDIDTests {
    @Test(arguments: SignatureAlgorithm.allCases)
    func didKeyRoundTrips(_ alg: SignatureAlgorithm) throws {
        let key = PrivateKey.generate(alg)
        let did = DID.key(key.publicKey)
        #expect(did.value.hasPrefix("did:key:z"))
        #expect(try DID(did.value).embeddedKey() == key.publicKey)
        #expect(try PublicKey(pem: key.publicKey.pem) == key.publicKey)
        #expect(try PublicKey(jwk: key.publicKey.jwk) == key.publicKey)
        let sig = try key.signature(for: Data("m".utf8))
        #expect(key.publicKey.isValidSignature(sig, for: Data("m".utf8)))
        #expect(!key.publicKey.isValidSignature(sig, for: Data("n".utf8)))
        #expect(!PrivateKey.generate(alg).publicKey.isValidSignature(sig, for: Data("m".utf8)))
        // Compared without decompressing: the same answer as comparing the parsed keys.
        #expect(try did.carries(key.publicKey) == true)
        #expect(try did.carries(PrivateKey.generate(alg).publicKey) == false)
        #expect(try did.carries(PrivateKey.generate(alg == .es256 ? .edDSA : .es256).publicKey) == false)
        #expect(try DID("did:ath:shop").carries(key.publicKey) == nil)
        #expect(key.publicKey != PrivateKey.generate(alg).publicKey)
        #expect(Set([key.publicKey, try PublicKey(pem: key.publicKey.pem)]).count == 1)
    }

    @Test func didKeyEntriesAreKeptAndBounded() async throws {
        let cache = DIDKeyVerifiers(limit: 3)
        #expect(try await cache.entry(for: DID("did:ath:shop")) == nil)
        let user = PrivateKey.generate(.es256)
        let did = DID.key(user.publicKey)
        let entry = try #require(try await cache.entry(for: did))
        #expect(entry.key == user.publicKey && entry.thumbprint == user.publicKey.thumbprint)
        _ = try await cache.entry(for: did)
        #expect(cache.count == 1)
        // The kept verifier checks the user's credentials, and no one else's.
        let agent = DID.key(PrivateKey.generate(.es256).publicKey), server = try DID("did:ath:shop")
        let credential = try await UserCredential.issue(user: did, key: user, client: agent, scopes: ["goods:read"], validFor: 60)
        let claims = try await UserCredential.verify(
            UserCredential.read(credential), verifier: entry.verifier, client: agent, server: server, now: Date())
        #expect(claims.iss == did.value)
        #expect(try await cache.verify(UserCredential.read(credential), client: agent, server: server, now: Date()) == claims)
        let stranger = PrivateKey.generate(.es256)
        let forged = try await UserCredential.issue(user: did, key: stranger, client: agent, scopes: ["goods:read"], validFor: 60)
        await #expect(throws: ATHError.self) {
            _ = try await UserCredential.verify(
                UserCredential.read(forged), verifier: entry.verifier, client: agent, server: server, now: Date())
        }
        #expect(try UserCredential.read(credential).user == did)
        for _ in 0..<3 { _ = try await cache.entry(for: DID.key(PrivateKey.generate(.edDSA).publicKey)) }
        #expect(cache.count <= 3)
    }

    @Test func base58RoundTripsAnyBytes() {
        var rng = SystemRandomNumberGenerator()
        for count in 0..<80 {
            for leadingZeros in [0, 1, 3] where leadingZeros <= count {
                let bytes = [UInt8](repeating: 0, count: leadingZeros)
                    + (leadingZeros..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
                #expect(Base58.decode(Base58.encode(bytes)) == bytes)
            }
        }
        // Known values (the Bitcoin alphabet): "1" is a zero byte, "2" is one, "21" is 58.
        #expect(Base58.decode("1") == [0])
        #expect(Base58.decode("2") == [1])
        #expect(Base58.decode("21") == [58])
        #expect(Base58.decode("5Q") == [0xFF])
        #expect(Base58.decode("0") == nil && Base58.decode("l") == nil)
    }

    @Test(arguments: ["did:web:example.com", "did:ath:", "did:ath:a b", "ath:x", "did:key:zzzz", "did:key:abc"])
    func refusesBadDIDs(_ text: String) {
        #expect(throws: ATHError.self) { try DID(text) }
    }

    @Test func keyFilesRoundTrip() throws {
        for alg in SignatureAlgorithm.allCases {
            let key = PrivateKey.generate(alg)
            #expect(try PrivateKey(pem: key.pem).publicKey == key.publicKey)
        }
        #expect(throws: ATHError.self) { try PublicKey(pem: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----") }
    }

    /// A P-256 PEM is read from its DER by our own armor reader; every form swift-crypto's PEM
    /// parser reads must read the same, and what neither reads is refused.
    @Test func publicKeyPEMFormsReadAlike() throws {
        let key = PrivateKey.generate(.es256).publicKey
        let pem = key.pem
        let body = pem.split(separator: "\n").dropFirst().dropLast().joined()
        guard case .p256(let point) = key else { Issue.record("not P-256"); return }
        for form in [pem, pem + "\n", pem.replacingOccurrences(of: "\n", with: "\r\n") + "\r\n"] {
            #expect(PublicKey.subjectPublicKeyInfo(pem: form) != nil)
            #expect(try PublicKey(pem: form) == key)
            // The compressed point read from the DER is BoringSSL's, and the did:key check agrees.
            let (read, compressed) = try PublicKey.read(pem: form)
            #expect(read == key && compressed == Array(point.compressedRepresentation))
            #expect(try DID.key(key).carries(read, compressedP256: compressed) == true)
            #expect(try DID.key(PrivateKey.generate(.es256).publicKey).carries(read, compressedP256: compressed) == false)
        }
        // Both parities of y (each key has one at random).
        for _ in 0..<16 {
            guard case .p256(let k) = PrivateKey.generate(.es256).publicKey else { continue }
            #expect(try PublicKey.read(pem: PublicKey.p256(k).pem).compressedP256 == Array(k.compressedRepresentation))
        }
        // A PKCS#8 private key block, a wrong label, a body that is not base64, a truncated key.
        let other = PrivateKey.generate(.es256)
        #expect(PublicKey.subjectPublicKeyInfo(pem: other.pem) == nil)
        // The fixed P-256 header with a point that is not on the curve (y's last bit flipped).
        var der = try #require(PublicKey.subjectPublicKeyInfo(pem: pem))
        der[der.index(before: der.endIndex)] ^= 0x01
        let offCurve = "-----BEGIN PUBLIC KEY-----\n" + der.base64EncodedString() + "\n-----END PUBLIC KEY-----"
        for bad in [
            offCurve, other.pem, pem.replacingOccurrences(of: "PUBLIC KEY", with: "EC PUBLIC KEY"),
            "-----BEGIN PUBLIC KEY-----\n" + body.replacingOccurrences(of: "A", with: "*") + "\n-----END PUBLIC KEY-----",
            "-----BEGIN PUBLIC KEY-----\n" + body.dropLast(8) + "\n-----END PUBLIC KEY-----",
        ] {
            #expect(throws: ATHError.self) { try PublicKey(pem: bad) }
        }
    }
}

@Suite struct RestrictionTests {
    @Test func rateLimitSyntax() throws {
        #expect(try RateLimit(parsing: "100/minute") == RateLimit(count: 100, window: 60))
        #expect(try RateLimit(parsing: "5/second") == RateLimit(count: 5, window: 1))
        for bad in ["100", "0/minute", "-1/minute", "10/week", "x/second"] {
            #expect(throws: ATHError.self) { try RateLimit(parsing: bad) }
        }
    }

    @Test func ipAllowList() throws {
        let r = try CompiledRestrictions(Restrictions(ip_whitelist: ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]))
        try r.checkRequest(from: "10.1.2.3", at: Date())
        try r.checkRequest(from: "2001:db8:1::5", at: Date())
        try r.checkRequest(from: "::ffff:192.0.2.7", at: Date())
        for refused in ["11.0.0.1", "192.0.2.8", "2001:db9::1", "127.0.0.1", "garbage"] {
            #expect(throws: ATHError(.ipNotAllowed, "requests from \(refused) are not allowed by this grant")) {
                try r.checkRequest(from: refused, at: Date())
            }
        }
        #expect(throws: ATHError.self) { try IPRange(parsing: "10.0.0.0/33") }
        #expect(throws: ATHError.self) { try IPRange(parsing: "1.2.3") }
    }

    @Test func accessTimeWithZoneAndWrap() throws {
        // 2024-06-01 10:00 UTC is 12:00 in Paris (CEST).
        let t = Date(timeIntervalSince1970: 1_717_236_000)
        #expect(try AccessTimeWindow(parsing: "09:00-18:00").contains(t))
        #expect(try AccessTimeWindow(parsing: "11:00-18:00 Europe/Paris").contains(t))
        #expect(!(try AccessTimeWindow(parsing: "13:00-18:00 Europe/Paris").contains(t)))
        #expect(try AccessTimeWindow(parsing: "22:00-11:00 +00:00").contains(t))
        #expect(!(try AccessTimeWindow(parsing: "22:00-09:30").contains(t)))
        for bad in ["9-18", "09:00-09:00", "25:00-26:00", "09:00-18:00 Mars/Base"] {
            #expect(throws: ATHError.self) { try AccessTimeWindow(parsing: bad) }
        }
        #expect(throws: ATHError.self) {
            try CompiledRestrictions(Restrictions(access_time: "13:00-18:00 Europe/Paris")).checkRequest(from: nil, at: t)
        }
    }

    @Test func amountLimit() throws {
        let r = Restrictions(order_amount_limit: 5000)
        try r.checkAmount(5000)
        #expect(throws: ATHError.self) { try r.checkAmount(5000.01) }
        #expect(throws: ATHError.self) { try r.checkAmount(-1) }
    }
}

@Suite struct PossessionProofTests {
    let key = SymmetricKeyFactory.make()

    @Test func bindsMethodTargetBodyAndToken() throws {
        let now = Date()
        let proof = PossessionProof.make(key: key, method: "POST", target: "/api/order", body: Data("{}".utf8), token: "t", now: now)
        let parsed = try PossessionProof(headerValue: proof.headerValue)
        try parsed.verify(key: key, method: "POST", target: "/api/order", body: Data("{}".utf8), token: "t", now: now)
        #expect(throws: ATHError.self) { try parsed.verify(key: key, method: "GET", target: "/api/order", body: Data("{}".utf8), token: "t", now: now) }
        #expect(throws: ATHError.self) { try parsed.verify(key: key, method: "POST", target: "/api/orders", body: Data("{}".utf8), token: "t", now: now) }
        #expect(throws: ATHError.self) { try parsed.verify(key: key, method: "POST", target: "/api/order", body: Data("{ }".utf8), token: "t", now: now) }
        #expect(throws: ATHError.self) { try parsed.verify(key: key, method: "POST", target: "/api/order", body: Data("{}".utf8), token: "u", now: now) }
        #expect(throws: ATHError.self) {
            try parsed.verify(key: SymmetricKeyFactory.make(), method: "POST", target: "/api/order", body: Data("{}".utf8), token: "t", now: now)
        }
        #expect(throws: ATHError.self) {
            try parsed.verify(key: key, method: "POST", target: "/api/order", body: Data("{}".utf8), token: "t", now: now.addingTimeInterval(301))
        }
        #expect(throws: ATHError.self) { try PossessionProof(headerValue: "t=1, n=x") }
        let n = String(repeating: "a", count: 22)
        #expect(try PossessionProof(headerValue: "t=1,n=\(n), mac=m") == PossessionProof(timestamp: 1, nonce: n, mac: "m"))
        for bad in ["t=1, t=2, n=\(n), mac=m", "t=1, n=\(n), mac=m, x=1", "t=x, n=\(n), mac=m", "t=1, n=short, mac=m", "t=1 n=\(n) mac=m", ""] {
            #expect(throws: ATHError.self, "\(bad)") { try PossessionProof(headerValue: bad) }
        }
    }
}

/// The byte-wise constant-time comparison works eight bytes a step with a byte-wise tail:
/// every length, and a difference at every position, first and last byte included.
@Suite struct ConstantTimeTests {
    @Test func equalBytesAndEveryDifference() {
        for length in 0...40 {
            let a = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            a.withUnsafeBufferPointer { x in
                #expect(a.withUnsafeBufferPointer { ConstantTime.equal(x, $0) })
                Array(a.dropLast()).withUnsafeBufferPointer { shorter in #expect(length == 0 || !ConstantTime.equal(x, shorter)) }
                for position in 0..<length {
                    var b = a
                    b[position] ^= 0x80
                    #expect(!b.withUnsafeBufferPointer { ConstantTime.equal(x, $0) }, "length \(length), byte \(position)")
                }
            }
        }
    }
}

/// The proof's MAC input is written byte by byte into a temporary buffer; it must be exactly
/// the documented lines (PROTOCOL.md §6) for any method, target and time, on both sides.
@Suite struct ProofInputTests {
    @Test func macCoversTheDocumentedLines() throws {
        let key = SymmetricKey(size: .bits256)
        let token = "header.claims.signature"
        let nonce = String(repeating: "n", count: 22)
        let long = "/api/" + String(repeating: "x", count: 5000) + "?q=1"
        let cases: [(method: String, target: String, t: Int64)] = [
            ("GET", "/api/goods?keyword=phone", 1_700_000_000), ("post", "/", 0), ("pAtCh", "/ä?q=ü", -1),
            ("straße", "/api/order", 253_402_300_799), ("GET", long, 9), ("DELETE", "", Int64(Int32.max)),
        ]
        for c in cases {
            for body in [Data(), Data("{\"a\":1}".utf8)] {
                let now = Date(timeIntervalSince1970: TimeInterval(c.t))
                let proof = PossessionProof.make(key: key, method: c.method, target: c.target, body: body, token: token, now: now, nonce: nonce)
                let lines = [
                    "ATH-POP/0.1", c.method.uppercased(), c.target, String(c.t), nonce, PossessionProof.digest(body),
                    PossessionProof.tokenDigest(token),
                ]
                let expected = HMAC<SHA256>.authenticationCode(for: Data(lines.joined(separator: "\n").utf8), using: key)
                #expect(proof.mac == Base64URL.encode(Data(expected)), "\(c.method) \(c.target.prefix(40)) \(c.t)")
                #expect(proof.timestamp == c.t)
                // The server's path (a keyed ProofMAC, the token's digest given) accepts it.
                try proof.verify(
                    keyedMAC: ProofMAC(key: key), method: c.method, target: c.target, body: body, tokenDigest: PossessionProof.tokenDigest(token),
                    now: now)
            }
        }
    }
}

/// The server's own HMAC-SHA256 construction must give swift-crypto's `HMAC<SHA256>` bytes
/// for every key length (shorter than a block, a block, longer and hashed) and message.
@Suite struct ProofMACTests {
    @Test func equalsSwiftCryptoHMAC() {
        var generator = SystemRandomNumberGenerator()
        for keyLength in [0, 1, 16, 32, 63, 64, 65, 100, 200] {
            let key = SymmetricKey(data: (0..<keyLength).map { _ in UInt8.random(in: 0...255, using: &generator) })
            let mac = ProofMAC(key: key)
            for messageLength in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 300, 1000] {
                let message = (0..<messageLength).map { _ in UInt8.random(in: 0...255, using: &generator) }
                let expected = Array(HMAC<SHA256>.authenticationCode(for: message, using: key))
                let code = message.withUnsafeBytes { mac.code(for: $0) }
                #expect(Array(code) == expected, "key \(keyLength) bytes, message \(messageLength) bytes")
                #expect(mac.isValid(base64URL: Base64URL.encode(expected), for: message))
                // A MAC of another message, a changed byte, a prefix or an extension never passes.
                #expect(!mac.isValid(base64URL: Base64URL.encode(expected), for: message + [0]))
                var flipped = expected
                flipped[messageLength % 32] ^= 0x01
                #expect(!mac.isValid(base64URL: Base64URL.encode(flipped), for: message))
                #expect(!mac.isValid(base64URL: Base64URL.encode(expected.prefix(31)), for: message))
                #expect(!mac.isValid(base64URL: Base64URL.encode(expected + [0]), for: message))
                #expect(!mac.isValid(base64URL: String(Base64URL.encode(expected).dropLast()), for: message))
                #expect(!mac.isValid(base64URL: Base64URL.encode(expected) + "=", for: message))
                // The same 32 bytes spelled with the unused low bits of the last character set:
                // decoders may accept it, the proof check does not.
                let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
                var spelled = Array(Base64URL.encode(expected))
                spelled[42] = alphabet[alphabet.firstIndex(of: spelled[42])! | 1]
                #expect(!mac.isValid(base64URL: String(spelled), for: message))
            }
        }
    }

    /// RFC 4231 test case 2 (a key shorter than the block).
    @Test func matchesRFC4231() {
        let mac = ProofMAC(key: SymmetricKey(data: Array("Jefe".utf8)))
        let code = Array("what do ya want for nothing?".utf8).withUnsafeBytes { mac.code(for: $0) }
        #expect(code.map { String(format: "%02x", $0) }.joined() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }
}

@Suite struct SecretSealerTests {
    @Test func sealsForOneRecordUnderOneKey() throws {
        let sealer = SecretSealer(derivedFrom: .generate(.es256))
        let secret = SymmetricKey(size: .bits256)
        let sealed = try sealer.seal(secret, for: "session-1")
        #expect(try sealer.open(sealed, for: "session-1") == secret)
        #expect(try sealer.seal(secret, for: "session-1") != sealed)  // a fresh nonce each time
        let raw = secret.withUnsafeBytes { Data($0) }
        #expect(sealed.range(of: raw) == nil)
        #expect(throws: ATHError.self) { try sealer.open(sealed, for: "session-2") }
        #expect(throws: ATHError.self) { try SecretSealer(derivedFrom: .generate(.es256)).open(sealed, for: "session-1") }
        var tampered = sealed
        tampered[tampered.count - 1] ^= 1
        #expect(throws: ATHError.self) { try sealer.open(tampered, for: "session-1") }
        #expect(throws: ATHError.self) { try sealer.open(Data([1, 2, 3]), for: "session-1") }
    }

    @Test func theDerivedKeyIsStableForOneServerKey() throws {
        let key = PrivateKey.generate(.edDSA)
        let sealed = try SecretSealer(derivedFrom: key).seal(SymmetricKey(size: .bits256), for: "s")
        #expect(throws: Never.self) { try SecretSealer(derivedFrom: key).open(sealed, for: "s") }
    }
}

extension SecretSealerTests {
    /// A rotation: what the old key sealed still opens under a ring that accepts it, new blobs
    /// are sealed under the new key, and a ring without the old key opens nothing of it.
    @Test func aRingOpensWhatEachOfItsKeysSealed() throws {
        let (old, new) = (PrivateKey.generate(.es256), PrivateKey.generate(.es256))
        let sealedBefore = try SecretSealer(derivedFrom: old).seal(bytes: Data("before".utf8), for: "r")
        let rotated = SecretSealer(derivedFrom: ServerIdentity(did: try DID("did:ath:shop"), keys: [new], acceptedKeys: [old]))
        #expect(rotated.openBytes(sealedBefore, for: "r") == Data("before".utf8))
        let sealedAfter = try rotated.seal(bytes: Data("after".utf8), for: "r")
        #expect(SecretSealer(derivedFrom: new).openBytes(sealedAfter, for: "r") == Data("after".utf8))
        #expect(SecretSealer(derivedFrom: old).openBytes(sealedAfter, for: "r") == nil)
        #expect(SecretSealer(derivedFrom: new).openBytes(sealedBefore, for: "r") == nil)
        #expect(rotated.openBytes(sealedBefore, for: "another record") == nil)
    }

    /// Blobs sealed before key ids (nonce ‖ ciphertext ‖ tag, no marker) still open, under any key
    /// of the ring; a marked blob whose key id is altered does not.
    @Test func blobsWithoutAKeyIDStillOpen() throws {
        let (old, new) = (SymmetricKey(size: .bits256), SymmetricKey(size: .bits256))
        let legacy = try AES.GCM.seal(Data("legacy".utf8), using: old, authenticating: Data("r".utf8)).combined!
        #expect(SecretSealer(keys: [new, old]).openBytes(legacy, for: "r") == Data("legacy".utf8))
        #expect(SecretSealer(keys: [new]).openBytes(legacy, for: "r") == nil)
        var marked = try SecretSealer(keys: [old]).seal(bytes: Data("x".utf8), for: "r")
        #expect(marked.first == 0xA7 && marked.count == 1 + 8 + 12 + 1 + 16)
        marked[1] ^= 1
        #expect(SecretSealer(keys: [new, old]).openBytes(marked, for: "r") == nil)
    }
}

@Suite struct JWTVerifierRingTests {
    struct Claims: JWTPayload, Equatable {
        var sub: String
        func verify(using algorithm: some JWTAlgorithm) throws {}
    }

    /// A token names its key: one signed under an accepted key verifies, one under a key outside
    /// the ring is refused, and the `typ` check still applies.
    @Test func verifiesUnderTheKeyTheTokenNames() async throws {
        let (old, new) = (PrivateKey.generate(.es256), PrivateKey.generate(.edDSA))
        let token = try await JWTCodec(key: old).sign(Claims(sub: "u"), typ: "t+jwt")
        let ring = try await JWTVerifierRing(keys: [new.publicKey, old.publicKey])
        #expect(try await ring.verify(token, as: Claims.self, typ: "t+jwt", error: .tokenInvalid) == Claims(sub: "u"))
        let fresh = try await JWTCodec(key: new).sign(Claims(sub: "v"), typ: "t+jwt")
        #expect(try await ring.verify(fresh, as: Claims.self, typ: "t+jwt", error: .tokenInvalid) == Claims(sub: "v"))
        await #expect(throws: ATHError.self) { try await ring.verify(token, as: Claims.self, typ: "other+jwt", error: .tokenInvalid) }
        let without = try await JWTVerifierRing(keys: [new.publicKey])
        do {
            _ = try await without.verify(token, as: Claims.self, typ: "t+jwt", error: .tokenInvalid)
            Issue.record("a token under a key outside the ring verified")
        } catch let error as ATHError {
            #expect(error.code == .tokenInvalid && error.message.contains("does not hold"), "\(error)")
        }
    }
}

@Suite struct WebhookSignatureTests {
    let secret = SymmetricKey(size: .bits256)
    let body = Array(#"{"type":"ath.confirmation_request"}"#.utf8)
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func aSignedBodyVerifiesFromItsHeader() throws {
        let signature = WebhookSignature.sign(body, secret: secret, now: now)
        #expect(signature.headerValue.hasPrefix("t=1800000000,v1="))
        let parsed = try WebhookSignature(headerValue: signature.headerValue + ",v0=ignored")
        #expect(parsed == signature)
        try parsed.verify(body, secret: secret, now: now.addingTimeInterval(299))
    }

    @Test func refusesAnotherBodySecretOrTime() throws {
        let signature = WebhookSignature.sign(body, secret: secret, now: now)
        var tampered = body
        tampered[3] ^= 1
        #expect { try signature.verify(tampered, secret: secret, now: now) } throws: { ($0 as? ATHError)?.code == .invalidSignature }
        #expect { try signature.verify(body, secret: SymmetricKey(size: .bits256), now: now) } throws: {
            ($0 as? ATHError)?.code == .invalidSignature
        }
        // The time is covered by the MAC: moving it breaks the signature, and an old push is stale.
        let moved = WebhookSignature(timestamp: signature.timestamp + 1, mac: signature.mac)
        #expect { try moved.verify(body, secret: secret, now: now) } throws: { ($0 as? ATHError)?.code == .invalidSignature }
        #expect { try signature.verify(body, secret: secret, now: now.addingTimeInterval(301)) } throws: {
            ($0 as? ATHError)?.code == .timestampOutOfRange
        }
        for header in ["", "t=1", "v1=abc", "t=x,v1=abc"] {
            #expect { try WebhookSignature(headerValue: header) } throws: { ($0 as? ATHError)?.code == .malformedMessage }
        }
    }
}

/// docs/PROTOCOL.md is part of the product: its error table must list every code the code can
/// send, with the status the code sends it with.
@Suite struct ErrorCatalogueTests {
    @Test func everyErrorCodeIsDocumentedWithItsStatus() throws {
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs/PROTOCOL.md")
        let text = try String(contentsOf: docs, encoding: .utf8)
        let section = try #require(text.range(of: "## 8. Errors"))
        let rows = text[section.upperBound...].split(separator: "\n").prefix { !$0.hasPrefix("## ") }.filter { $0.hasPrefix("| ") }
        // Each row: | CODE, CODE (note) | status | where | retryable |
        let table: [(codes: Set<String>, status: Int)] = rows.compactMap { row in
            let cells = row.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 2, let status = Int(cells[1]) else { return nil }
            let names = cells[0].split(whereSeparator: { !($0.isUppercase || $0 == "_") }).map(String.init)
            return (Set(names), status)
        }
        for code in ATHError.Code.allCases {
            let row = table.first { $0.codes.contains(code.rawValue) }
            #expect(row != nil, "\(code.rawValue) is missing from docs/PROTOCOL.md §8")
            if let row { #expect(row.status == code.httpStatus, "\(code.rawValue): docs say \(row.status), code sends \(code.httpStatus)") }
        }
    }
}

@Suite struct AgentIdentityCodeTests {
    let salt: [UInt8] = [0x12, 0x34]

    /// The published vectors (acps-identity.md).
    @Test(arguments: [
        ("1.2.156.3088.1.1.34C2.478BDF.3GF546", "0JU4"), ("1.2.156.3088.1.1.34C2.478BDF.3GF548", "0P65"),
        ("1.2.156.3088.1.1.34C2.478BDF.3GF547", "0GGS"),
    ])
    func checksumVectors(_ body: String, _ expected: String) throws {
        #expect(try AgentIdentityCode.checksum(of: body, salt: salt) == expected)
        let aic = try AgentIdentityCode(parsing: (body + "." + expected).lowercased())
        #expect(aic.description == body + "." + expected)
        try aic.verifyChecksum(salt: salt)
        #expect(throws: ATHError.self) { try aic.verifyChecksum(salt: [0x12, 0x35]) }
    }

    @Test func generatesAndParses() throws {
        let aic = try AgentIdentityCode(version: "1", arsp: "1", vendor: "34c2", ontology: "478BDF", entity: "3GF546", salt: salt)
        #expect(aic.description == "1.2.156.3088.1.1.34C2.478BDF.3GF546.0JU4")
        #expect(!aic.isOntology)
        #expect(try AgentIdentityCode(parsing: "1.2.156.3088.1.1.34C2.478BDF.0000.0000").isOntology)
        #expect(try AgentIdentityCode(parsing: "1.2.156.3088.1.1.34C2.478BDF..0000").entity == "")
        #expect(throws: ATHError.self) { try AgentIdentityCode.checksum(of: "x", salt: [1]) }
    }

    /// Each malformed part is refused with a message naming it.
    @Test(arguments: [
        ("1.2.156.3088.1.1.34C2.478BDF.3GF546", "10 dot-separated levels"),
        ("1.2.156.3089.1.1.34C2.478BDF.3GF546.0JU4", "levels 1-4"),
        ("1.2.156.3088.12.1.34C2.478BDF.3GF546.0JU4", "level 5 (version)"),
        ("1.2.156.3088.1.1234567.34C2.478BDF.3GF546.0JU4", "level 6 (registration provider)"),
        ("1.2.156.3088.1.1.34-C2.478BDF.3GF546.0JU4", "level 7 (vendor)"),
        ("1.2.156.3088.1.1.34C2.1234567890.3GF546.0JU4", "level 8 (ontology serial)"),
        ("1.2.156.3088.1.1.34C2.478BDF.1234567890.0JU4", "level 9 (entity serial)"),
        ("1.2.156.3088.1.1.34C2.478BDF.3GF546.JU4", "level 10 (checksum) must be 4"),
        ("1.2.156.3088.1.1.34C2.478BDF.3GF546.1EKG", "0000-1EKF"),
    ])
    func refusesMalformedParts(_ text: String, _ named: String) {
        #expect { try AgentIdentityCode(parsing: text) } throws: { ($0 as? ATHError)?.message.contains(named) == true }
    }
}

@Suite struct LegacyAgentIdentityCodeTests {
    /// The example code of ACPs' published v01.00 documents, read case-insensitively.
    @Test func theV0100ExampleIsRead() throws {
        let code = try LegacyAgentIdentityCode(parsing: "10001000011k912345e789abcdef2353")
        #expect(code.description == "10001000011K912345E789ABCDEF2353")
        #expect(code.checkDigits == "53")
        #expect(LegacyAgentIdentityCode.checkDigits(of: "10001000011K912345E789ABCDEF23") == "53")
    }

    @Test func checkDigitsCatchEverySingleCharacterChange() throws {
        let body = "10001000011K912345E789ABCDEF23"
        let good = body + LegacyAgentIdentityCode.checkDigits(of: body)
        for index in 0..<30 {
            var characters = Array(good)
            characters[index] = characters[index] == "Z" ? "Y" : (characters[index] == "9" ? "A" : "Z")
            #expect(throws: ATHError.self) { try LegacyAgentIdentityCode(parsing: String(characters)) }
        }
    }

    @Test(arguments: [
        ("10001000011K912345E789ABCDEF235", "32 characters"),
        ("10001000011K912345E789ABCDEF2-53", "'-' is not"),
        ("10001000011K912345E789ABCDEF23A3", "decimal check digits"),
        ("10001000011K912345E789ABCDEF2354", "MOD 97-10 gives 53"),
    ])
    func refusesMalformedCodes(_ text: String, _ named: String) {
        #expect { try LegacyAgentIdentityCode(parsing: text) } throws: { ($0 as? ATHError)?.message.contains(named) == true }
    }
}

@Suite struct SystemRandomTests {
    @Test func fillsEveryByteWithFreshValues() {
        for count in [0, 1, 7, 16, 32, 33, 4096, 100_000] {
            let a = SystemRandom.bytes(count), b = SystemRandom.bytes(count)
            #expect(a.count == count && b.count == count)
            // Two draws of 16 bytes or more agree with probability 2^-128.
            if count >= 16 { #expect(a != b) }
            // A long draw uses every byte value: a buffer left partly unwritten would not.
            if count >= 4096 { #expect(Set(a).count == 256) }
        }
        #expect(Set((0..<100).map { _ in Nonce.generate() }).count == 100)
    }
}

/// The transcript keeps a running hash; it must equal hashing the whole canonical array.
@Suite struct TranscriptHashTests {
    @Test func runningHashEqualsTheWholeArrayHashed() throws {
        var transcript = Transcript()
        var canonical: [[UInt8]] = []
        func whole(_ parts: [[UInt8]]) -> Data {
            Data(SHA256.hash(data: Array("[".utf8) + Array(parts.map { $0 }.joined(separator: Array(",".utf8))) + Array("]".utf8)))
        }
        #expect(try transcript.hash() == whole([]))
        for i in 0..<6 {
            let message = JSONValue.object(["n": .integer(Int64(i)), "text": .string("step \(i)\n\"quoted\"")])
            let pending = JSONValue.object(["pending": .integer(Int64(i))])
            #expect(try transcript.hash(including: pending) == whole(canonical + [try CanonicalJSON.bytes(pending)]))
            try transcript.append(message)
            canonical.append(try CanonicalJSON.bytes(message))
            #expect(try transcript.hash() == whole(canonical))
            // A copy goes on alone: the original's hash is unchanged.
            var copy = transcript
            try copy.append(pending)
            #expect(try transcript.hash() == whole(canonical))
            let decoded = try JSONDecoder().decode(Transcript.self, from: JSONEncoder().encode(transcript))
            #expect(try decoded.hash() == whole(canonical))
        }
    }
}

/// jwt-kit signs and verifies with the protocol's JSON coder (JWTCodec.swift): the bytes must be
/// those Foundation's encoder wrote (sorted keys, unescaped slashes), and what it reads the same.
@Suite struct JWTJSONTests {
    static var foundation: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    @Test func claimsAndHeadersEncodeAsFoundationDid() throws {
        let access = AccessTokenClaims(
            iss: "did:ath:shop", aud: "did:ath:shop", sub: "did:key:zDnae", client_did: "did:ath:agent/1", scope: "goods:read order:create",
            iat: 1_790_000_000, exp: 1_790_003_600, jti: "j-_1", gid: "g", sid: "s")
        let credential = UserCredentialClaims(
            iss: "did:key:zUser", sub: "did:ath:agent", aud: nil, scopes: ["goods:read", "order:create"], iat: -1, exp: 0, jti: "x")
        var header = JWTHeader()
        header.typ = AccessToken.typ
        header.alg = "ES256"
        header.kid = "k/+="
        #expect(try ProtocolJSONEncoder().encode(access) == Self.foundation.encode(access))
        #expect(try ProtocolJSONEncoder().encode(credential) == Self.foundation.encode(credential))
        #expect(try ProtocolJSONEncoder().encode(header) == Self.foundation.encode(header))
        let decoded = try ProtocolJSONDecoder().decode(AccessTokenClaims.self, from: Self.foundation.encode(access))
        #expect(decoded == access)
        #expect(throws: (any Error).self) { try ProtocolJSONDecoder().decode(AccessTokenClaims.self, from: Data(#"{"iss":1}"#.utf8)) }
    }
}

/// A cached grant and token share their equal texts, and only those.
@Suite struct SharedTextTests {
    @Test func onlyEqualTextsAreShared() throws {
        let user = DID.key(PrivateKey.generate().publicKey)
        let agent = try DID("did:ath:assistant")
        let grant = Grant(
            id: "g1", handshakeID: "h1", clientDID: agent, userDID: user, scopes: ["goods:read"], restrictions: Restrictions(),
            credentialID: "c1", createdAt: 1, expiresAt: 2)
        var claims = AccessTokenClaims(
            iss: "did:ath:shop", aud: "did:ath:shop", sub: user.value, client_did: "did:ath:other", scope: "goods:read", iat: 1, exp: 2,
            jti: "t1", gid: "g1", sid: "s1")
        let shared = grant.sharingTexts(of: claims)
        #expect(shared == grant)
        #expect(shared.userDID.method == .key && shared.clientDID.value == "did:ath:assistant")
        claims.sub = "did:ath:someone-else"
        #expect(grant.sharingTexts(of: claims).userDID == user, "a different text is not taken")
        let server = try DID("did:ath:shop")
        #expect(claims.sharingServer(server) == claims)
        claims.aud = "did:ath:elsewhere"
        #expect(claims.sharingServer(server).aud == "did:ath:elsewhere")
    }
}

/// A P-256 public key's PEM is written without swift-crypto's general serialisation: it must be
/// the very text the library writes, and read back as the same key.
@Suite struct PublicKeyPEMTests {
    @Test func p256PEMIsTheLibrarysOwn() throws {
        for _ in 0..<50 {
            let key = P256.Signing.PrivateKey().publicKey
            let pem = PublicKey.p256(key).pem
            #expect(pem == key.pemRepresentation)
            #expect(try PublicKey(pem: pem) == .p256(key))
        }
        let ed = Curve25519.Signing.PrivateKey().publicKey
        #expect(PublicKey.ed25519(ed).pem == ed.pemRepresentation)
    }
}
