import ATHCore
import AsyncHTTPClient
import Foundation
import NIOCore

/// The agent SDK: runs the 9-step handshake against a server and returns a session whose
/// requests carry the token and its proof of possession.
public struct ATHClient: Sendable {
    public let did: DID
    let key: PrivateKey
    let transport: HTTPTransport
    let expectedServer: DID?
    let credentials: [String]?
    let clock: @Sendable () -> Date

    public init(
        baseURL: String, did: DID, key: PrivateKey, expectedServer: DID? = nil, httpClient: HTTPClient = .shared,
        timeout: TimeAmount = .seconds(40), credentials: [String]? = nil, clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.credentials = credentials
        self.did = did
        self.key = key
        self.expectedServer = expectedServer
        self.clock = clock
        transport = HTTPTransport(baseURL: baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL, client: httpClient, timeout: timeout)
    }

    /// Progress of a handshake, for callers that show it (the CLI's demo does).
    public enum Event: Sendable {
        case sent(step: Int, JSONValue)
        case received(step: Int, JSONValue)
        case waitingForUser(ConfirmationPending)
    }

    /// Runs steps 1-9. Waits up to `confirmationWait` for the user (steps 6-7), polling with
    /// the server's long-poll; the server's own confirmation timeout ends it sooner.
    public func handshake(
        credential: String, scopes: [String], ttl: Int, context: String, confirmationWait: Duration = .seconds(300),
        onEvent: @Sendable (Event) -> Void = { _ in }
    ) async throws -> ATHSession {
        var hs = ClientHandshake(did: did, key: key, expectedServer: expectedServer, credentials: credentials)
        let m1 = try hs.makeRequest(now: clock())
        onEvent(.sent(step: 1, m1))
        let (_, m2, headers) = try await transport.jsonWithHeaders(.POST, "/ath/handshake", m1)
        onEvent(.received(step: 2, m2))
        let m3 = try hs.receiveResponse(m2, now: clock())
        let id = try pathComponent(hs.handshakeID)
        // The server's state between steps 2 and 3, brought back as it came (docs/PROTOCOL.md §2).
        let ticket = headers.first { $0.0.caseInsensitiveCompare(HandshakeTicket.header) == .orderedSame }.map { [(HandshakeTicket.header, $0.1)] }
        onEvent(.sent(step: 3, m3))
        let (_, m4) = try await transport.json(.POST, "/ath/handshake/\(id)/identity", m3, headers: ticket ?? [])
        onEvent(.received(step: 4, m4))
        _ = try hs.receiveIdentityResult(m4, now: clock())
        let m5 = try hs.makeScopeRequest(scopes: scopes, ttl: ttl, credential: credential, context: context, now: clock())
        onEvent(.sent(step: 5, m5))
        var (status, answer) = try await transport.json(.POST, "/ath/handshake/\(id)/scope", m5)
        let giveUp = ContinuousClock.now + confirmationWait
        while status == 202 {
            let pending = try answer.decode(ConfirmationPending.self)
            onEvent(.waitingForUser(pending))
            guard ContinuousClock.now < giveUp else {
                throw ATHError(.confirmationTimeout, "the user did not answer within the agent's wait", step: 7)
            }
            // The longest wait the server grants (30 s), or what is left of the agent's own: each
            // poll costs the server a request, so fewer, longer ones (the request's own timeout,
            // 40 s by default, leaves room for it).
            let left = (giveUp - ContinuousClock.now).components.seconds
            (status, answer) = try await transport.json(.GET, "/ath/handshake/\(id)/result?wait=\(max(1, min(30, left)))")
        }
        let outcome = try answer.decode(HandshakeOutcome.self)
        onEvent(.received(step: 8, outcome.scope_result))
        onEvent(.received(step: 9, outcome.handshake_complete))
        let grant = try hs.receiveOutcome(outcome, now: clock())
        return ATHSession(grant: grant, transport: transport, clock: clock)
    }

    private func pathComponent(_ id: String?) throws -> String {
        guard let id, id.utf8.allSatisfy({ $0 == 0x2D || $0 == 0x5F || ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) })
        else { throw ATHError(.malformedMessage, "server sent an unusable handshake_id", step: 2) }
        return id
    }
}
