import ATHCore
import AsyncHTTPClient
import Crypto
import Foundation
import JWTKit
import NIOCore
import NIOHTTP1

/// An external OpenID Connect provider this service trusts to authenticate users: discovery,
/// the JWKS (cached, fetched again when a token's key is not in it, so the provider can rotate
/// keys), the authorization-code exchange, and ID token verification (`OpenIDConnect`).
public actor OpenIDProvider {
    public struct Configuration: Sendable {
        /// The issuer URL, exactly as the provider's discovery document and tokens state it.
        public var issuer: String
        public var clientID: String
        public var clientSecret: String
        /// Where the provider sends the browser back: this server's `/ath/console/oidc/callback`.
        public var redirectURI: String
        /// How long a fetched JWKS is used before it is fetched again.
        public var keysTTL: TimeInterval = 3600
        /// The least time between two fetches forced by an unknown key, so that tokens with
        /// made-up key ids cannot make this server hammer the provider.
        public var minimumRefetchInterval: TimeInterval = 30

        public init(issuer: String, clientID: String, clientSecret: String, redirectURI: String) {
            self.issuer = issuer.hasSuffix("/") ? String(issuer.dropLast()) : issuer
            self.clientID = clientID
            self.clientSecret = clientSecret
            self.redirectURI = redirectURI
        }
    }

    /// The fields of the discovery document ATH uses (OIDC Discovery §3).
    struct Metadata: Decodable {
        var issuer: String
        var authorization_endpoint: String
        var token_endpoint: String
        var jwks_uri: String
    }

    public nonisolated let configuration: Configuration
    let http: HTTPClient
    let clock: @Sendable () -> Date
    var metadata: Metadata?
    var keys: JWKS?
    var keysFetchedAt: Date?

    public init(_ configuration: Configuration, httpClient: HTTPClient = .shared, clock: @escaping @Sendable () -> Date = { Date() }) {
        self.configuration = configuration
        self.http = httpClient
        self.clock = clock
    }

    /// The provider's authorization URL for one login (code flow with PKCE S256).
    public func authorizationURL(state: String, nonce: String, codeVerifier: String) async throws -> String {
        let meta = try await discover()
        let challenge = PKCE.challenge(for: codeVerifier)
        guard var components = URLComponents(string: meta.authorization_endpoint) else { throw Self.unavailable("bad authorization_endpoint") }
        components.queryItems =
            (components.queryItems ?? []) + [
                .init(name: "response_type", value: "code"), .init(name: "client_id", value: configuration.clientID),
                .init(name: "redirect_uri", value: configuration.redirectURI), .init(name: "scope", value: "openid"),
                .init(name: "state", value: state), .init(name: "nonce", value: nonce),
                .init(name: "code_challenge", value: challenge), .init(name: "code_challenge_method", value: PKCE.method),
            ]
        guard let url = components.url?.absoluteString else { throw Self.unavailable("bad authorization_endpoint") }
        return url
    }

    /// Exchanges an authorization code for its ID token, then verifies it against `nonce`.
    public func login(code: String, codeVerifier: String, nonce: String) async throws -> IDTokenClaims {
        let meta = try await discover()
        var request = HTTPClientRequest(url: meta.token_endpoint)
        request.method = .POST
        request.headers.add(name: "authorization", value: FormEncoding.basicAuthorization(id: configuration.clientID, secret: configuration.clientSecret))
        request.headers.add(name: "content-type", value: "application/x-www-form-urlencoded")
        let form = FormEncoding.encode([
            ("grant_type", "authorization_code"), ("code", code), ("redirect_uri", configuration.redirectURI),
            ("code_verifier", codeVerifier),
        ])
        request.body = .bytes(ByteBuffer(string: form))
        let (status, body) = try await fetch(request)
        guard status == 200, case .object(let fields) = try? JSONValue.parse(body), let idToken = fields["id_token"]?.stringValue else {
            throw ATHError(.userAuthenticationFailed, "the provider did not exchange the authorization code (HTTP \(status))")
        }
        return try await verify(idToken: idToken, nonce: nonce)
    }

    /// Verifies an ID token; when no cached key verifies it, fetches the JWKS again once (the
    /// provider may have rotated its keys) unless that was done too recently.
    public func verify(idToken: String, nonce: String) async throws -> IDTokenClaims {
        let expect = OpenIDConnect.Expectations(issuer: configuration.issuer, clientID: configuration.clientID, nonce: nonce, now: clock())
        var claims = try await OpenIDConnect.signedClaims(idToken, keys: try await currentKeys())
        if claims == nil, let fetched = keysFetchedAt, clock().timeIntervalSince(fetched) >= configuration.minimumRefetchInterval {
            claims = try await OpenIDConnect.signedClaims(idToken, keys: try await fetchKeys())
        }
        guard let claims else {
            throw ATHError(.userAuthenticationFailed, "ID token refused: the signature does not verify with the provider's keys")
        }
        return try OpenIDConnect.check(claims, expect: expect)
    }

    // MARK: Fetching

    func discover() async throws -> Metadata {
        if let metadata { return metadata }
        var request = HTTPClientRequest(url: configuration.issuer + "/.well-known/openid-configuration")
        request.method = .GET
        let (status, body) = try await fetch(request)
        guard status == 200, let meta = try? JSONDecoder().decode(Metadata.self, from: body) else {
            throw Self.unavailable("discovery answered HTTP \(status) without a usable document")
        }
        // OIDC Discovery §4.3: the document must name the issuer it was fetched for.
        guard meta.issuer == configuration.issuer else {
            throw Self.unavailable("discovery names issuer '\(meta.issuer)', not '\(configuration.issuer)'")
        }
        metadata = meta
        return meta
    }

    func currentKeys() async throws -> JWKS {
        if let keys, let at = keysFetchedAt, clock().timeIntervalSince(at) < configuration.keysTTL { return keys }
        return try await fetchKeys()
    }

    func fetchKeys() async throws -> JWKS {
        let meta = try await discover()
        var request = HTTPClientRequest(url: meta.jwks_uri)
        request.method = .GET
        let (status, body) = try await fetch(request)
        guard status == 200, let jwks = try? JSONDecoder().decode(JWKS.self, from: body), !jwks.keys.isEmpty else {
            throw Self.unavailable("the JWKS answered HTTP \(status) without keys")
        }
        keys = jwks
        keysFetchedAt = clock()
        return jwks
    }

    func fetch(_ request: HTTPClientRequest) async throws -> (Int, Data) {
        do {
            let response = try await http.execute(request, timeout: .seconds(10))
            let body = try await response.body.collect(upTo: 1024 * 1024)
            return (Int(response.status.code), Data(body.readableBytesView))
        } catch {
            throw Self.unavailable("\(request.url) could not be fetched: \(error)")
        }
    }

    static func unavailable(_ why: String) -> ATHError {
        ATHError(.internalError, "the OpenID provider is unavailable: \(why)")
    }
}
