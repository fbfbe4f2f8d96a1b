import ATHCore
import ATHServer
import Crypto
import Foundation
import HTTPTypes
import Hummingbird

/// The parties the v0.1 API talks to besides the agent, on one loopback server: an OAuth 2.0
/// provider that behaves as the official end-to-end stack's mock (auto_approve, PKCE S256, form
/// token requests) but stricter (the token request's redirect_uri must be the authorize one),
/// an upstream that accepts only tokens this provider issued, and agents' identity documents.
final class MockOAuthProvider: Sendable {
    let server: RunningServer
    let state: State
    static let clientID = "ath-e2e-client"
    static let clientSecret = "ath-e2e-secret"

    actor State {
        struct Pending {
            var challenge: String
            var redirectURI: String
            var scope: String
        }
        var codes: [String: Pending] = [:]
        var tokens: Set<String> = []
        var documents: [String: JSONValue] = [:]
        /// What the upstream saw of the last request to /echo.
        var lastEcho: [String: String] = [:]
        var tokenRequests = 0
        /// The scope the provider reports as consented (nil: what was asked).
        var consented: String?

        func issueCode(_ pending: Pending) -> String {
            let code = Nonce.generate(bytes: 16)
            codes[code] = pending
            return code
        }
        func redeem(_ code: String) -> Pending? { codes.removeValue(forKey: code) }
        func issueToken() -> String {
            tokenRequests += 1
            let token = "idp_" + Nonce.generate(bytes: 16)
            tokens.insert(token)
            return token
        }
        func knows(_ token: String) -> Bool { tokens.contains(token) }
        func publish(_ path: String, _ document: JSONValue) { documents[path] = document }
        func document(_ path: String) -> JSONValue? { documents[path] }
        func echo(_ seen: [String: String]) { lastEcho = seen }
        func setConsented(_ scope: String?) { consented = scope }
    }

    var baseURL: String { server.baseURL }

    private init(server: RunningServer, state: State) {
        self.server = server
        self.state = state
    }

    static func start() async throws -> MockOAuthProvider {
        let state = State()
        let router = Router()
        router.get("authorize") { request, _ in
            let q = Self.query(request.uri.query ?? "")
            guard q["auto_approve"] == "true" else { return Self.json(["error": "interaction_required"], status: .badRequest) }
            guard q["response_type"] == "code", q["client_id"] == clientID, q["code_challenge_method"] == "S256",
                let challenge = q["code_challenge"], let redirect = q["redirect_uri"], let s = q["state"]
            else { return Self.json(["error": "invalid_request"], status: .badRequest) }
            if q["deny"] == "true" {
                return Response(status: .found, headers: [.location: redirect + "?error=access_denied&state=" + s])
            }
            let code = await state.issueCode(.init(challenge: challenge, redirectURI: redirect, scope: q["scope"] ?? ""))
            return Response(status: .found, headers: [.location: redirect + "?code=\(code)&state=\(s)"])
        }
        router.post("token") { request, _ in
            let body = try await request.body.collect(upTo: 65536)
            let form = Self.query(String(buffer: body))
            var (id, secret) = (form["client_id"], form["client_secret"])
            if let basic = request.headers[.authorization], basic.hasPrefix("Basic "),
                let decoded = Data(base64Encoded: String(basic.dropFirst(6))).flatMap({ String(data: $0, encoding: .utf8) }),
                let colon = decoded.firstIndex(of: ":")
            {
                (id, secret) = (String(decoded[..<colon]).removingPercentEncoding, String(decoded[decoded.index(after: colon)...]).removingPercentEncoding)
            }
            guard id == clientID, secret == clientSecret else { return Self.json(["error": "invalid_client"], status: .unauthorized) }
            guard form["grant_type"] == "authorization_code", let code = form["code"], let pending = await state.redeem(code),
                form["redirect_uri"] == pending.redirectURI, let verifier = form["code_verifier"],
                PKCE.challenge(for: verifier) == pending.challenge
            else { return Self.json(["error": "invalid_grant"], status: .badRequest) }
            let token = await state.issueToken()
            let scope = await state.consented ?? pending.scope
            return Self.json(["access_token": .string(token), "token_type": "Bearer", "expires_in": .integer(3600), "scope": .string(scope)])
        }
        router.get("userinfo") { request, _ in
            guard let auth = request.headers[.authorization], auth.hasPrefix("Bearer "), await state.knows(String(auth.dropFirst(7))) else {
                return Self.json(["error": "unauthorized"], status: .unauthorized)
            }
            return Self.json(["login": "test-user", "name": "Test User", "email": "test@example.com"])
        }
        // /echo/** takes only this provider's tokens; /plain/** anyone (a service with its own API key).
        let echo: @Sendable (Request, BasicRequestContext) async throws -> Response = { request, _ in
            if request.uri.path.hasPrefix("/echo") {
                guard let auth = request.headers[.authorization], auth.hasPrefix("Bearer "), await state.knows(String(auth.dropFirst(7))) else {
                    return Self.json(["error": "unauthorized"], status: .unauthorized)
                }
            }
            let body = try await request.body.collect(upTo: 1 << 24)
            var seen: [String: String] = [:]
            for field in request.headers { seen[field.name.canonicalName] = seen[field.name.canonicalName].map { $0 + ", " + field.value } ?? field.value }
            seen[":method"] = request.method.rawValue
            seen[":path"] = request.uri.description
            seen[":body-bytes"] = String(body.readableBytes)
            await state.echo(seen)
            return Response(status: .created, headers: [.contentType: "text/plain", HTTPField.Name("X-Upstream")!: "yes"], body: .init(byteBuffer: body))
        }
        router.on("echo/**", method: .get, use: echo)
        router.on("echo/**", method: .post, use: echo)
        router.on("echo/**", method: .put, use: echo)
        router.on("plain/**", method: .get, use: echo)
        router.on("plain/**", method: .post, use: echo)
        // A service that takes longer than a gateway's timeout.
        router.get("plain/goods/slow") { _, _ in
            try await Task.sleep(for: .seconds(3))
            return Self.json(["late": true])
        }
        router.get("agents/:name") { request, _ in
            guard let document = await state.document(request.uri.path) else { return Self.json(["error": "not found"], status: .notFound) }
            return Self.json(document)
        }
        let server = try await RunningServer.start(router)
        return MockOAuthProvider(server: server, state: state)
    }

    func stop() async { await server.stop() }

    /// A `github` provider for the gateway, whose operation map has `read:user → GET /userinfo`
    /// and `repo → GET,POST,PUT /echo/**`.
    func provider(id: String = "github", authentication: OAuthProvider.ClientAuthentication = .post) throws -> OAuthProvider {
        OAuthProvider(
            id: id, displayName: "GitHub",
            scopes: [("repo", "Read and write your repositories"), ("read:user", "Read your profile"), ("user:email", "Read your email")],
            authorizationEndpoint: baseURL + "/authorize", tokenEndpoint: baseURL + "/token", clientID: Self.clientID,
            clientSecret: Self.clientSecret, clientAuthentication: authentication, upstream: Upstream(baseURL: baseURL, maxRequestBody: 1 << 20),
            operations: try OperationMap(parsing: ["GET /userinfo read:user", "GET,POST,PUT /echo/** repo"]))
    }

    /// Query or form text to a dictionary, `+` read as a space (the first of repeated names wins).
    static func query(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "" }
            if out[parts[0]] == nil { out[parts[0]] = parts.count > 1 ? parts[1] : "" }
        }
        return out
    }

    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: try! CanonicalJSON.bytes(value))))
    }
}

/// An agent of the v0.1 API as the official SDKs make one: a P-256 key, an https-style agent id,
/// and a fresh ES256 attestation (raw R||S, kid "default", one hour) for every call.
struct V01Agent {
    let key = P256.Signing.PrivateKey()
    let agentID: String

    func attestation(audience: String, now: Date = Date(), lifetime: Int64 = 3600, jti: String = Nonce.generate(bytes: 24), key: P256.Signing.PrivateKey? = nil)
        -> String
    {
        let header = Base64URL.encode(Data(#"{"typ":"JWT","alg":"ES256","kid":"default"}"#.utf8))
        let iat = Int64(now.timeIntervalSince1970)
        let claims: JSONValue = [
            "capabilities": [], "iss": .string(agentID), "sub": .string(agentID), "aud": .string(audience), "iat": .integer(iat),
            "exp": .integer(iat + lifetime), "jti": .string(jti),
        ]
        let input = header + "." + Base64URL.encode(Data(try! CanonicalJSON.bytes(claims)))
        let signature = try! (key ?? self.key).signature(for: Data(input.utf8)).rawRepresentation
        return input + "." + Base64URL.encode(signature)
    }

    var document: JSONValue {
        let raw = key.publicKey.rawRepresentation
        return [
            "ath_version": "0.1", "agent_id": .string(agentID), "name": "Test agent", "developer": ["name": "Dev", "id": "dev-1"],
            "public_key": ["kty": "EC", "crv": "P-256", "x": .string(Base64URL.encode(raw.prefix(32))), "y": .string(Base64URL.encode(raw.suffix(32)))],
        ]
    }
}
