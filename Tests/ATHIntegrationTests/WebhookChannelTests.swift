import ATHAgent
import ATHCore
import ATHServer
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import ShoppingExample
import Synchronization
import Testing

/// Step 6 pushed to a webhook: signed, retried, and answered by the user through the API.
@Suite struct WebhookChannelTests {
    /// A platform's push service on loopback: checks each push's signature, answers with the
    /// scripted statuses in turn (then 200), and keeps what it received.
    final class Receiver: Sendable {
        struct Received: Sendable {
            var id: String
            var body: [UInt8]
            var signatureValid: Bool
        }
        final class Log: Sendable {
            let statuses: Mutex<[Int]>
            let received = Mutex<[Received]>([])
            init(_ statuses: [Int]) { self.statuses = Mutex(statuses) }
        }
        let log: Log
        let server: RunningServer

        init(secret: SymmetricKey, statuses: [Int]) async throws {
            let log = Log(statuses)
            let router = Router()
            router.post("push") { request, _ -> Response in
                var request = request
                let body = Array(try await request.collectBody(upTo: 1 << 20).readableBytesView)
                let header = request.headers[HTTPField.Name(WebhookSignature.header)!] ?? ""
                let valid = (try? WebhookSignature(headerValue: header).verify(body, secret: secret, now: Date())) != nil
                let id = request.headers[HTTPField.Name(WebhookSignature.idHeader)!] ?? ""
                log.received.withLock { $0.append(Received(id: id, body: body, signatureValid: valid)) }
                let status = log.statuses.withLock { $0.isEmpty ? 200 : $0.removeFirst() }
                return Response(status: .init(code: status))
            }
            self.log = log
            server = try await RunningServer.start(router)
        }

        var all: [Received] { log.received.withLock { $0 } }
        var url: String { server.baseURL + "/push" }
    }

    /// The channel with its outcomes as a stream.
    /// `attemptTimeout` is long by default: only the timeout test wants one to expire, and on a
    /// loaded machine (the suites run in parallel, some starting processes) a loopback answer
    /// took over 2 s and was retried.
    static func channel(_ url: String, secret: SymmetricKey, maxAttempts: Int = 5, attemptTimeout: Duration = .seconds(20)) -> (
        WebhookConfirmationChannel, AsyncStream<WebhookConfirmationChannel.Outcome>
    ) {
        let (stream, continuation) = AsyncStream.makeStream(of: WebhookConfirmationChannel.Outcome.self)
        let channel = WebhookConfirmationChannel(
            .init(url: url, secret: secret, maxAttempts: maxAttempts, initialBackoff: .milliseconds(20), attemptTimeout: attemptTimeout),
            answerBaseURL: "https://platform.example", onOutcome: { _, outcome in continuation.yield(outcome) })
        return (channel, stream)
    }

    @Test func aPushIsRetriedUntilDeliveredAndTheUserAnswersIt() async throws {
        let secret = SymmetricKey(size: .bits256)
        let receiver = try await Receiver(secret: secret, statuses: [503, 500])
        let (channel, outcomes) = Self.channel(receiver.url, secret: secret)
        let h = try await Harness.start(channel: channel)
        try await h.registerParties()
        let agent = Task {
            try await h.client.handshake(
                credential: try await h.credential(), scopes: ["goods:read", "order:create"], ttl: 3600, context: "buy a phone",
                confirmationWait: .seconds(20))
        }
        var iterator = outcomes.makeAsyncIterator()
        #expect(await iterator.next() == .delivered(attempts: 3))
        let pushes = receiver.all
        #expect(pushes.count == 3)
        #expect(pushes.allSatisfy { $0.signatureValid })
        #expect(Set(pushes.map(\.id)).count == 1)  // one id across retries: the receiver can de-duplicate
        let push = try JSONValue.parse(pushes[2].body).decode(WebhookConfirmationChannel.Push.self)
        #expect(push.type == "ath.confirmation_request" && push.request.request_id == pushes[2].id)
        #expect(push.request.context == "buy a phone" && push.request.user_did == h.user)
        #expect(push.answer_url == "https://platform.example/ath/confirmations/\(push.request.request_id)")
        // The user answers from the push, with their key, through the user API.
        _ = try await h.userClient.answer(push.request, approve: ["goods:read"])
        #expect(try await agent.value.grant.scopesGranted == ["goods:read"])
        await channel.shutdown()
        await h.stop()
        await receiver.server.stop()
    }

    @Test func aRefusingReceiverIsNotRetried() async throws {
        let secret = SymmetricKey(size: .bits256)
        let receiver = try await Receiver(secret: secret, statuses: [400])
        let (channel, outcomes) = Self.channel(receiver.url, secret: secret)
        let request = try Self.request(expiresIn: 60)
        await channel.deliver(request)
        var iterator = outcomes.makeAsyncIterator()
        #expect(await iterator.next() == .refused(status: 400, attempts: 1))
        #expect(receiver.all.count == 1)
        // 429 and 408 are "later", not "no".
        receiver.log.statuses.withLock { $0 = [429, 408] }
        var again = request
        again.request_id = "another"
        await channel.deliver(again)
        #expect(await iterator.next() == .delivered(attempts: 3))
        await receiver.server.stop()
    }

    @Test func anUnreachableReceiverIsGivenUpAfterItsAttempts() async throws {
        // A port held bound but not listening: connections are refused, and no other test's
        // server can be given it meanwhile (a stopped server's port could be).
        let reserved = try ReservedPort()
        defer { reserved.release() }
        let url = "http://127.0.0.1:\(reserved.port)/hook"
        let (channel, outcomes) = Self.channel(url, secret: SymmetricKey(size: .bits256), maxAttempts: 3, attemptTimeout: .milliseconds(300))
        await channel.deliver(try Self.request(expiresIn: 60))
        var iterator = outcomes.makeAsyncIterator()
        #expect(await iterator.next() == .gaveUp(attempts: 3))
        // A request that already expired is not pushed at all.
        await channel.deliver(try Self.request(expiresIn: -1))
        #expect(await iterator.next() == .expired(attempts: 0))
    }

    @Test func backoffDoublesUpToItsCap() {
        let c = WebhookConfirmationChannel.Configuration(
            url: "http://x", secret: SymmetricKey(size: .bits256), initialBackoff: .milliseconds(500), maxBackoff: .seconds(3))
        #expect((1...5).map(c.backoff(afterAttempt:)) == [.milliseconds(500), .seconds(1), .seconds(2), .seconds(3), .seconds(3)])
    }

    static func request(expiresIn: Int64) throws -> AuthorizationConfirmationRequest {
        let user = DID.key(PrivateKey.generate().publicKey)
        let now = Freshness.unix(Date())
        return try JSONValue.of([
            "type": "authorization_confirmation_request", "request_id": .string(Nonce.generate()), "handshake_id": "h", "server_did": .string(ShoppingPlatform.did.value),
            "user_did": .string(user.value), "client_did": .string(user.value), "client_info": ["name": "A", "developer": "D"],
            "requested_scopes": ["goods:read"], "context": "c", "ttl": 60, "expires_at": .number(Double(now + expiresIn)),
            "transcript_hash": "x", "timestamp": .number(Double(now)),
        ] as JSONValue).decode(AuthorizationConfirmationRequest.self)
    }
}
