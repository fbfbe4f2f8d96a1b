import ATHCore
import AsyncHTTPClient
import Foundation
import NIOCore

/// The authorization-code exchange at a provider's token endpoint (RFC 6749 §4.1.3 with the
/// PKCE verifier, RFC 7636 §4.5): form-encoded, as the spec requires, with the gateway's client
/// credentials in the body or by HTTP Basic as the provider is configured.
struct ProviderCodeExchange: Sendable {
    let http: HTTPClient
    var timeout: Duration = .seconds(10)
    /// Token responses are small; a provider that sends more is refused rather than buffered.
    var maxResponse = 64 * 1024

    struct Result: Sendable {
        var grant: ProviderGrant
        /// The provider's `scope`, split on spaces and commas; nil when it sent none.
        var scopes: [String]?
    }

    func exchange(code: String, verifier: String, redirectURI: String, provider: OAuthProvider, now: Date) async throws -> Result {
        var form = [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirectURI), ("code_verifier", verifier)]
        var request = HTTPClientRequest(url: provider.tokenEndpoint)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        request.headers.add(name: "Accept", value: "application/json")
        switch provider.clientAuthentication {
        case .post:
            form += [("client_id", provider.clientID), ("client_secret", provider.clientSecret)]
        case .basic:
            request.headers.add(name: "Authorization", value: FormEncoding.basicAuthorization(id: provider.clientID, secret: provider.clientSecret))
        }
        request.body = .bytes(ByteBuffer(string: FormEncoding.encode(form)))

        func failed(_ why: String) -> ATHError { ATHError(.oauthError, "provider \(provider.id): \(why)") }
        let body: ByteBuffer
        let status: UInt
        do {
            let response = try await http.execute(request, timeout: TimeAmount(timeout))
            status = response.status.code
            body = try await response.body.collect(upTo: maxResponse)
        } catch {
            throw failed("the token endpoint could not be reached")
        }
        guard let json = try? JSONValue.parse(body.readableBytesView) else { throw failed("the token endpoint answered \(status) without JSON") }
        guard status == 200 else {
            throw failed("the token endpoint refused the code: \(json["error"]?.stringValue ?? "status \(status)")")
        }
        guard let token = json["access_token"]?.stringValue, !token.isEmpty else { throw failed("the token response has no access_token") }
        if let type = json["token_type"]?.stringValue, type.lowercased() != "bearer" {
            throw failed("token_type \(type.prefix(32)) is not Bearer")
        }
        var expiresAt: Int64?
        if case .integer(let seconds)? = json["expires_in"], (1...JSONValue.safeIntegers.upperBound).contains(seconds) {
            expiresAt = Freshness.unix(now).addingReportingOverflow(seconds).overflow ? nil : Freshness.unix(now) + seconds
        }
        let scopes = json["scope"]?.stringValue.map { $0.split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init) }
        return Result(grant: ProviderGrant(accessToken: token, refreshToken: json["refresh_token"]?.stringValue, expiresAt: expiresAt), scopes: scopes)
    }
}
