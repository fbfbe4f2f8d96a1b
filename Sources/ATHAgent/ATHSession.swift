import ATHCore
import AsyncHTTPClient
import Foundation
import NIOHTTP1

/// An established grant: sends API requests with the access token and a fresh proof of
/// possession each, and renews the token before it expires (never past the grant).
public actor ATHSession {
    public private(set) var grant: EstablishedGrant
    let transport: HTTPTransport
    let clock: @Sendable () -> Date
    /// Renew when the token has less than this many seconds left.
    public var renewalMargin: Int64 = 60
    /// The channel `call(_:_:)` uses (ATHSessionChannel.swift).
    var defaultChannel: ATHSessionChannel?

    init(grant: EstablishedGrant, transport: HTTPTransport, clock: @escaping @Sendable () -> Date) {
        self.grant = grant
        self.transport = transport
        self.clock = clock
    }

    public struct Response: Sendable {
        public var status: Int
        public var body: Data

        public func json() throws -> JSONValue { try JSONValue.parse(body) }
    }

    /// Sends `method target` with the token and proof. An ATH refusal throws `ATHError`; any
    /// other answer (including the application's own errors) is returned.
    public func send(_ method: String, _ target: String, json body: JSONValue? = nil) async throws -> Response {
        try await renewIfDue()
        let bytes = try body.map { try JSONEncoder().encode($0) } ?? Data()
        let reply = try await transport.send(
            HTTPMethod(rawValue: method), target, body: body == nil ? nil : bytes, headers: authHeaders(method, target, bytes))
        if let error = HTTPTransport.protocolError(in: reply) { throw error }
        return Response(status: reply.status, body: reply.body)
    }

    public func get(_ target: String) async throws -> Response { try await send("GET", target) }
    public func post(_ target: String, json: JSONValue) async throws -> Response { try await send("POST", target, json: json) }

    /// Headers for a request; exposed so that other transports (and tests) can build them.
    public func authHeaders(_ method: String, _ target: String, _ body: Data) -> [(String, String)] {
        let proof = PossessionProof.make(
            key: grant.secrets.proofKey, method: method, target: target, body: body, token: grant.accessToken, now: clock())
        return [("authorization", "Bearer \(grant.accessToken)"), (PossessionProof.header, proof.headerValue)]
    }

    /// Gets a new access token within the grant (no user interaction). Calls made while a
    /// renewal is under way wait for it rather than renewing again: the server renews a token
    /// once, and a second renewal with the same old token would be refused.
    public func renew() async throws {
        if let renewal {
            try await renewal.value
            return
        }
        let task = Task { try await self.renewNow() }
        renewal = task
        defer { renewal = nil }
        try await task.value
    }

    private var renewal: Task<Void, any Error>?

    private func renewNow() async throws {
        let reply = try await transport.send(.POST, "/ath/token/renew", headers: authHeaders("POST", "/ath/token/renew", Data()))
        try HTTPTransport.throwIfError(reply)
        let renewed = try JSONValue.parse(reply.body).decode(RenewedToken.self)
        grant.accessToken = renewed.access_token
        grant.tokenExpiresAt = renewed.token_expires_at
    }

    func renewIfDue() async throws {
        let now = Freshness.unix(clock())
        // The server's numbers are not trusted to keep the difference in range.
        let (left, overflow) = grant.tokenExpiresAt.subtractingReportingOverflow(now)
        if (overflow || left < renewalMargin) && grant.tokenExpiresAt < grant.grantExpiresAt {
            try await renew()
        }
    }

    struct RenewedToken: Decodable {
        var access_token: String
        var token_expires_at: Int64
    }
}
