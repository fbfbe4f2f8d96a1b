import ATHCore
import ATHIdentity
import Crypto
import Foundation
import JWTKit
import SwiftASN1
import X509

/// Every decoder of untrusted bytes, one target each (docs/RELIABILITY.md, "Fuzzing"). Whatever
/// the bytes, nothing may crash or hang, and where an oracle exists it is checked: a parsed value
/// round-trips, and anything signed that verifies is the genuine message, never a forgery.
enum DecoderFuzz: String, CaseIterable {
    /// The I-JSON parser and RFC 8785: what parses canonicalizes, and its canonical form parses
    /// back to the same value and the same bytes.
    case json
    /// The server's steps 1, 3, 5 and 7 (first byte: which), each given to the server as a
    /// genuine handshake left it: a message that passes steps 3, 5 or 7 is the genuine one.
    case handshake
    /// The `ATH-Proof` header, parsed and checked against a session: only the genuine proof's
    /// values verify.
    case proof
    /// A compact JWS given to every verifier: user credential, user-API and enrollment tokens,
    /// access token, OpenID Connect ID token. What verifies carries the genuine claims.
    case jwt
    /// base64url (decode, then encode gives the input back), DIDs with base58 did:key (the
    /// embedded key gives the DID back).
    case encoding
    /// PEM SubjectPublicKeyInfo keys: what reads writes back to the same key.
    case pem
    /// DER certificates, CSRs and CRLs (first byte: which), and the CAI profile's check.
    case der
    /// Agent identity codes, current and v01.00: what parses prints back to the same code.
    case aic
    /// The webhook signature header, checked against a body: only the genuine one verifies.
    case webhook
    /// The session layer's receive side (`SessionFrameFuzz`): nothing opens that was not sealed
    /// with the receiver's key or was altered.
    case sessionFrames = "session-frames"
    /// The v0.1 API's agent attestation: claims read and checked, then the signature against the
    /// agent's key. What verifies carries the genuine claims.
    case attestation
    /// The gateway's operation maps (first byte: a request path, or a route line): a path that is
    /// accepted has no segment an upstream could resolve otherwise; a route that parses prints
    /// back to a line that parses to the same route.
    case operations
    /// Step 2's handshake ticket, brought back with step 3: only the genuine ticket opens, and it
    /// opens to the handshake it was made from.
    case ticket

    func run(_ input: [UInt8]) {
        switch self {
        case .json: Self.json(input)
        case .handshake: Self.handshake(input)
        case .proof: Self.proof(input)
        case .jwt: Self.jwt(input)
        case .encoding: Self.encoding(input)
        case .pem: Self.pem(input)
        case .der: Self.der(input)
        case .aic: Self.aic(input)
        case .webhook: Self.webhook(input)
        case .sessionFrames: SessionFrameFuzz.run(input)
        case .attestation: Self.attestation(input)
        case .operations: Self.operations(input)
        case .ticket: Self.ticket(input)
        }
    }

    static let attestationAudience = "https://gateway.example"
    static let attestationKey = Scenario.key("v0.1 agent")

    /// An EdDSA attestation (deterministic, so the seed written once verifies in every run).
    static var genuineAttestation: String {
        let t = Int64(Scenario.now.timeIntervalSince1970)
        let claims: JSONValue = [
            "iss": "https://agent.example/a.json", "sub": "https://agent.example/a.json", "aud": .string(attestationAudience),
            "iat": .integer(t), "exp": .integer(t + 3600), "jti": "fuzz-jti-1",
        ]
        let input = Base64URL.encode(Data(#"{"alg":"EdDSA","typ":"JWT","kid":"default"}"#.utf8)) + "." + Base64URL.encode(Data(try! CanonicalJSON.bytes(claims)))
        return input + "." + Base64URL.encode(try! attestationKey.signature(for: Data(input.utf8)))
    }

    static func attestation(_ input: [UInt8]) {
        guard let read = try? AgentAttestation.read(text(input), audience: attestationAudience, now: Scenario.now),
            (try? read.verifySignature(with: attestationKey.publicKey)) != nil
        else { return }
        guard let genuine = try? AgentAttestation.read(genuineAttestation, audience: attestationAudience, now: Scenario.now),
            read.agentID == genuine.agentID, read.issuedAt == genuine.issuedAt, read.expiresAt == genuine.expiresAt, read.jti == genuine.jti
        else { fatalError("a forged attestation verified: \(text(input))") }
    }

    static let operationMap = try! OperationMap(parsing: ["GET /userinfo read:user", "GET,POST /repos/*/issues/** repo", "* /admin/** admin"])

    static func operations(_ input: [UInt8]) {
        guard let first = input.first else { return }
        let rest = text(Array(input.dropFirst()))
        if first & 1 == 0 {
            guard let segments = try? OperationMap.segments(of: rest) else { return }
            for segment in segments {
                let bare = segment.prefix { $0 != ";" }
                if bare == "." || bare == ".." || segment.contains("/") || segment.contains("\\")
                    || segment.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f })
                {
                    fatalError("an ambiguous path was accepted: \(rest)")
                }
            }
            _ = try? operationMap.authorize(method: "GET", path: rest, held: ["repo", "read:user"])
        } else {
            guard let route = try? OperationMap.Route(parsing: rest) else { return }
            guard (try? OperationMap.Route(parsing: route.description)) == route else { fatalError("a route does not print back: \(rest)") }
        }
    }

    static func text(_ input: [UInt8]) -> String { String(decoding: input, as: UTF8.self) }

    static func json(_ input: [UInt8]) {
        guard let value = try? JSONValue.parse(input), let canonical = try? CanonicalJSON.bytes(value) else { return }
        guard let again = try? JSONValue.parse(canonical) else { fatalError("canonical JSON does not parse: \(text(canonical))") }
        guard again == value else { fatalError("canonical JSON parses to another value: \(text(canonical))") }
        guard (try? CanonicalJSON.bytes(again)) == canonical else { fatalError("canonicalizing twice changed the bytes") }
    }

    static func handshake(_ input: [UInt8]) {
        guard let step = input.first, let raw = try? JSONValue.parse(input.dropFirst()) else { return }
        let s = Scenario.shared
        let (now, policy) = (Scenario.now, Scenario.policy)
        func genuine(_ message: JSONValue, _ step: Int) {
            guard (try? CanonicalJSON.bytes(raw)) == (try? CanonicalJSON.bytes(message)) else {
                fatalError("a step-\(step) message that is not the genuine one passed")
            }
        }
        switch step % 4 {
        case 0:
            _ = try? ServerHandshake.begin(
                request: raw, id: "fuzz", identity: s.identity, policy: policy, registeredKey: nil, now: now, randomness: Scenario.randomness)
        case 1:
            var server = s.beforeStep3
            if (try? server.receiveIdentityProof(raw, policy: policy, now: now)) != nil { genuine(s.m3, 3) }
        case 2:
            var server = s.beforeStep5
            if let request = try? server.receiveScopeRequest(raw, policy: policy, now: now) {
                genuine(s.m5, 5)
                _ = try? server.authorize(
                    request, credential: s.credentialClaims, clientInfo: ClientInfo(name: "a", developer: "d"), policy: policy, now: now)
            }
        default:
            var server = s.beforeStep7
            if (try? server.receiveConfirmation(raw, userKey: s.userKey.publicKey, now: now)) != nil { genuine(s.m7, 7) }
        }
    }

    static let proofBody = Data(#"{"goods_id":"123","quantity":1}"#.utf8)
    static var genuineProof: PossessionProof {
        PossessionProof.make(
            key: Scenario.shared.proofKey, method: "POST", target: "/api/order", body: proofBody, token: Scenario.shared.accessToken,
            now: Scenario.now, nonce: Base64URL.encode(Scenario.seed("proof nonce").prefix(16)))
    }

    static func proof(_ input: [UInt8]) {
        guard let proof = try? PossessionProof(headerValue: text(input)) else { return }
        let s = Scenario.shared
        let verified = (try? proof.verify(key: s.proofKey, method: "POST", target: "/api/order", body: proofBody, token: s.accessToken, now: Scenario.now)) != nil
        let genuine = genuineProof
        if verified, proof.timestamp != genuine.timestamp || proof.nonce != genuine.nonce || proof.mac != genuine.mac {
            fatalError("a proof that is not the genuine one verified: \(text(input))")
        }
    }

    static let oidcKey = try! P256.Signing.PrivateKey(rawRepresentation: Scenario.seed("oidc provider"))
    static let oidcNonce = "n-1"
    static var jwks: JWKS {
        let jwk = PublicKey.p256(oidcKey.publicKey).jwk
        let json = #"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","x":"\#(jwk.x)","y":"\#(jwk.y!)"}]}"#
        return try! JSONDecoder().decode(JWKS.self, from: Data(json.utf8))
    }
    static var userRequestClaims: UserRequestClaims {
        let t = Freshness.unix(Scenario.now)
        return UserRequestClaims(
            iss: Scenario.shared.userDID.value, aud: Scenario.shared.serverDID.value, iat: t, exp: t + 300, jti: "fuzz-jti")
    }

    /// The genuine tokens, one of each kind (the seeds).
    static func genuineTokens() -> [String] {
        let s = Scenario.shared
        let claims = userRequestClaims
        let userRequest = blocking { try await JWTCodec(key: s.userKey).sign(claims, typ: UserRequestToken.typ) }
        let enrollment = blocking { try await JWTCodec(key: s.userKey).sign(claims, typ: ConsoleLogin.enrollmentTyp) }
        let t = Freshness.unix(Scenario.now)
        let header = Base64URL.encode(Data(#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#.utf8))
        let body = Base64URL.encode(
            Data(#"{"aud":"ath-console","exp":\#(t + 300),"iat":\#(t - 5),"iss":"https://idp.example","nonce":"n-1","sub":"alice"}"#.utf8))
        let signature = try! PrivateKey.p256(oidcKey).signature(for: Data("\(header).\(body)".utf8))
        return [s.credential, userRequest, enrollment, s.accessToken, "\(header).\(body).\(Base64URL.encode(signature))"]
    }

    static func jwt(_ input: [UInt8]) {
        let token = text(input)
        let s = Scenario.shared
        let now = Scenario.now
        if let unverified = try? UserCredential.read(token),
            let claims = attempt({ try await UserCredential.verify(token, userKey: s.userKey.publicKey, client: s.clientDID, server: s.serverDID, now: now) })
        {
            guard claims == s.credentialClaims, unverified.user == s.userDID else { fatalError("a forged user credential verified: \(token)") }
        }
        for typ in [UserRequestToken.typ, ConsoleLogin.enrollmentTyp] {
            if let claims = attempt({ try await UserRequestToken.verify(token, key: s.userKey.publicKey, server: s.serverDID, now: now, typ: typ) }),
                claims != userRequestClaims
            {
                fatalError("a forged \(typ) verified: \(token)")
            }
        }
        _ = try? JWTCodec.unverifiedParts(of: token, error: .tokenInvalid)
        if let claims = attempt({
            try await JWTCodec(verifying: s.identity.tokenKey.publicKey).verify(token, as: AccessTokenClaims.self, typ: AccessToken.typ, error: .tokenInvalid)
        }) {
            guard claims == s.accessClaims else { fatalError("a forged access token verified: \(token)") }
            _ = try? AccessToken.checkClaims(claims, server: s.serverDID, now: now)
        }
        let expect = OpenIDConnect.Expectations(issuer: "https://idp.example", clientID: "ath-console", nonce: oidcNonce, now: now)
        let keys = jwks
        if let claims = attempt({ try await OpenIDConnect.verify(token, keys: keys, expect: expect) }), claims.sub != "alice" {
            fatalError("a forged ID token verified: \(token)")
        }
    }

    static func encoding(_ input: [UInt8]) {
        let text = text(input)
        if let decoded = Base64URL.decode(text), Base64URL.encode(decoded) != text {
            fatalError("base64url decoded a text that is not the canonical spelling of its bytes: \(text)")
        }
        guard let did = try? DID(text) else { return }
        guard did.value == text else { fatalError("a DID reads back as another: \(text)") }
        if let key = try? did.embeddedKey(), DID.key(key).value != text {
            fatalError("a did:key's embedded key names another did:key: \(text)")
        }
    }

    static func pem(_ input: [UInt8]) {
        guard let key = try? PublicKey(pem: text(input)) else { return }
        guard (try? PublicKey(pem: key.pem)) == key else { fatalError("a public key does not survive its own PEM") }
        _ = key.thumbprint
        _ = try? DID.key(key).carries(key)
    }

    static func der(_ input: [UInt8]) {
        guard let which = input.first else { return }
        let der = Array(input.dropFirst())
        switch which % 3 {
        case 0:
            guard let certificate = try? Certificate(derEncoded: der) else { return }
            _ = try? AgentCertificateProfile.check(certificate, role: .client)
            _ = try? AgentCertificateProfile.check(certificate, role: .server)
        case 1:
            guard let csr = try? CertificateSigningRequest(derEncoded: der) else { return }
            _ = try? CertificateAuthority.Request(csr: csr, aic: nil, role: .client)
        default:
            guard let crl = try? CertificateRevocationList(derEncoded: der) else { return }
            guard crl.derBytes == der else { fatalError("a CRL does not keep the bytes it was read from") }
            _ = crl.entries.map { crl.revocation(of: $0.serialNumber) }
        }
    }

    static func aic(_ input: [UInt8]) {
        let text = text(input)
        if let code = try? AgentIdentityCode(parsing: text), (try? AgentIdentityCode(parsing: code.description)) != code {
            fatalError("an AIC does not read back from its own text: \(text)")
        }
        if let code = try? LegacyAgentIdentityCode(parsing: text), (try? LegacyAgentIdentityCode(parsing: code.description)) != code {
            fatalError("a v01.00 AIC does not read back from its own text: \(text)")
        }
    }

    static let webhookSecret = SymmetricKey(data: Scenario.seed("webhook secret"))
    static let webhookBody = Data(#"{"type":"ath.confirmation_request"}"#.utf8)

    static func webhook(_ input: [UInt8]) {
        guard let signature = try? WebhookSignature(headerValue: text(input)) else { return }
        guard (try? signature.verify(webhookBody, secret: webhookSecret, now: Scenario.now)) != nil else { return }
        let genuine = WebhookSignature.sign(webhookBody, secret: webhookSecret, now: Scenario.now)
        if signature.timestamp != genuine.timestamp || Base64URL.decode(signature.mac) != Base64URL.decode(genuine.mac) {
            fatalError("a forged webhook signature verified: \(text(input))")
        }
    }

    static let tickets = HandshakeTicket(keys: [SymmetricKey(data: Scenario.seed("handshake ticket"))])
    static let genuineTicket = try! tickets.make(Scenario.shared.beforeStep3)

    static func ticket(_ input: [UInt8]) {
        let s = Scenario.shared
        guard let opened = try? tickets.open(text(input), handshakeID: s.beforeStep3.id) else { return }
        if (try? opened.storedJSON()) != (try? s.beforeStep3.storedJSON()) {
            fatalError("a forged handshake ticket opened: \(text(input))")
        }
    }

    /// What the oracles compare with must itself pass, or "nothing forged verified" would hold
    /// because nothing verifies at all: `FuzzDecoders --check` lists what does not.
    static func genuineFailures() -> [String] {
        let s = Scenario.shared
        let (now, policy) = (Scenario.now, Scenario.policy)
        var failures: [String] = []
        var step3 = s.beforeStep3, step5 = s.beforeStep5, step7 = s.beforeStep7
        if (try? step3.receiveIdentityProof(s.m3, policy: policy, now: now)) == nil { failures.append("step 3") }
        if (try? step5.receiveScopeRequest(s.m5, policy: policy, now: now)) == nil { failures.append("step 5") }
        if (try? step7.receiveConfirmation(s.m7, userKey: s.userKey.publicKey, now: now)) == nil { failures.append("step 7") }
        if (try? genuineProof.verify(key: s.proofKey, method: "POST", target: "/api/order", body: proofBody, token: s.accessToken, now: now)) == nil {
            failures.append("proof")
        }
        let tokens = genuineTokens()
        let expect = OpenIDConnect.Expectations(issuer: "https://idp.example", clientID: "ath-console", nonce: oidcNonce, now: now)
        let keys = jwks
        let checks: [(String, @Sendable () async throws -> Void)] = [
            ("user credential", { _ = try await UserCredential.verify(tokens[0], userKey: s.userKey.publicKey, client: s.clientDID, server: s.serverDID, now: now) }),
            ("user-API token", { _ = try await UserRequestToken.verify(tokens[1], key: s.userKey.publicKey, server: s.serverDID, now: now) }),
            ("enrollment token", { _ = try await UserRequestToken.verify(tokens[2], key: s.userKey.publicKey, server: s.serverDID, now: now, typ: ConsoleLogin.enrollmentTyp) }),
            ("access token", { _ = try await JWTCodec(verifying: s.identity.tokenKey.publicKey).verify(tokens[3], as: AccessTokenClaims.self, typ: AccessToken.typ, error: .tokenInvalid) }),
            ("ID token", { _ = try await OpenIDConnect.verify(tokens[4], keys: keys, expect: expect) }),
        ]
        for (name, check) in checks where attempt(check) == nil { failures.append(name) }
        let signature = WebhookSignature.sign(webhookBody, secret: webhookSecret, now: now)
        if (try? WebhookSignature(headerValue: signature.headerValue).verify(webhookBody, secret: webhookSecret, now: now)) == nil {
            failures.append("webhook")
        }
        if (try? AgentAttestation.read(genuineAttestation, audience: attestationAudience, now: now).verifySignature(with: attestationKey.publicKey)) == nil {
            failures.append("attestation")
        }
        if (try? operationMap.authorize(method: "GET", path: "/repos/a/issues/1", held: ["repo"])) != "repo" { failures.append("operations") }
        if (try? tickets.open(genuineTicket, handshakeID: s.beforeStep3.id)) == nil { failures.append("ticket") }
        return failures
    }

    /// The genuine inputs of each target, written by `FuzzDecoders --seeds <dir>`.
    static func seeds() -> [DecoderFuzz: [[UInt8]]] {
        let s = Scenario.shared
        func bytes(_ value: JSONValue) -> [UInt8] { (try? CanonicalJSON.bytes(value)) ?? [] }
        let ca = try! CertificateAuthority.create(name: "Fuzz CASP", now: Scenario.now)
        let aic = try! AgentIdentityCode(version: "1", arsp: "1", vendor: "34C2", ontology: "478BDF", entity: "3GF546", salt: [0x12, 0x34])
        let agentKey = P256.Signing.PrivateKey()
        let leaf = try! ca.issue(.init(aic: aic, role: .client, publicKey: .init(agentKey.publicKey)), crlURL: "https://ca.example/crl", now: Scenario.now)
        var leafDER = DER.Serializer()
        try! leafDER.serialize(leaf)
        let crl = try! ca.revocationList(
            entries: [.init(serialNumber: leaf.serialNumber, revocationDate: Scenario.now, reason: .keyCompromise)], number: 2, now: Scenario.now)
        let csr = try! CertificateSigningRequest(
            version: .v1, subject: try! DistinguishedName { CommonName("agent") }, privateKey: .init(agentKey),
            attributes: CertificateSigningRequest.Attributes(), signatureAlgorithm: .ecdsaWithSHA256)
        var csrDER = DER.Serializer()
        try! csrDER.serialize(csr)
        return [
            .json: [bytes(s.m1), bytes(s.m5), Array(#"{"a":[1,2.5,-0,1e21,"\u00e9\ud83d\ude00"],"b":{"c":null,"d":true}}"#.utf8)],
            .handshake: [[0] + bytes(s.m1), [1] + bytes(s.m3), [2] + bytes(s.m5), [3] + bytes(s.m7)],
            .proof: [Array(genuineProof.headerValue.utf8)],
            .jwt: genuineTokens().map { Array($0.utf8) },
            .encoding: [Array(s.userDID.value.utf8), Array("did:ath:ecommerce_platform_001".utf8), Array(Base64URL.encode(Scenario.seed("b")).utf8)],
            .pem: [Array(s.userKey.publicKey.pem.utf8), Array(PublicKey.p256(agentKey.publicKey).pem.utf8)],
            .der: [[0] + leafDER.serializedBytes, [1] + csrDER.serializedBytes, [2] + crl.derBytes],
            .aic: [Array(aic.description.utf8), Array("10001000011K912345E789ABCDEF2353".utf8)],
            .webhook: [Array(WebhookSignature.sign(webhookBody, secret: webhookSecret, now: Scenario.now).headerValue.utf8)],
            .attestation: [Array(genuineAttestation.utf8)],
            .operations: [
                [0] + Array("/repos/a%20b/issues/1;x".utf8), [0] + Array("/admin/%2e%2e/x".utf8), [1] + Array("GET,HEAD /repos/*/issues/** repo".utf8),
                [1] + Array("* / root".utf8),
            ],
            .ticket: [Array(genuineTicket.utf8)],
        ]
    }
}
