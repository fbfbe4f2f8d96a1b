import ATHCore
import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// Step 6 pushed to a URL of the platform's own (its app-push service, say), for platforms that
/// reach their users through their own app. The push only tells; the user still answers with a
/// signed step 7 through `POST /ath/confirmations/{request_id}` (the console, an app, the SDK).
///
/// Delivery never holds up the agent's request: each push runs in its own task, is signed
/// (`WebhookSignature`), and is retried with exponential backoff until the receiver answers 2xx,
/// refuses it for good (a 4xx other than 408 and 429), the attempts run out, or the request
/// expires. At most `maxInFlight` pushes are under way; beyond that a push is skipped and logged,
/// and the user still finds the request by pulling (`GET /ath/confirmations`).
public final class WebhookConfirmationChannel: UserConfirmationChannel {
    public struct Configuration: Sendable {
        public var url: String
        public var secret: SymmetricKey
        public var maxAttempts: Int
        public var initialBackoff: Duration
        public var maxBackoff: Duration
        public var attemptTimeout: Duration
        public var maxInFlight: Int

        public init(
            url: String, secret: SymmetricKey, maxAttempts: Int = 8, initialBackoff: Duration = .milliseconds(500),
            maxBackoff: Duration = .seconds(30), attemptTimeout: Duration = .seconds(5), maxInFlight: Int = 256
        ) {
            self.url = url
            self.secret = secret
            self.maxAttempts = max(1, maxAttempts)
            self.initialBackoff = initialBackoff
            self.maxBackoff = maxBackoff
            self.attemptTimeout = attemptTimeout
            self.maxInFlight = max(1, maxInFlight)
        }

        /// The wait before attempt `n + 1` (n ≥ 1): doubling from `initialBackoff`, capped.
        public func backoff(afterAttempt n: Int) -> Duration {
            let factor = 1 << min(max(n - 1, 0), 20)
            return min(initialBackoff * factor, maxBackoff)
        }
    }

    /// How one push ended, for logs and tests.
    public enum Outcome: Sendable, Equatable {
        case delivered(attempts: Int)
        case refused(status: Int, attempts: Int)
        case gaveUp(attempts: Int)
        case expired(attempts: Int)
        case skipped
    }

    /// What the receiver gets: the step-6 message and where the answer goes.
    public struct Push: Codable, Sendable, Equatable {
        public var type = "ath.confirmation_request"
        public var request: AuthorizationConfirmationRequest
        public var answer_url: String
    }

    let configuration: Configuration
    let client: HTTPClient
    let logger: Logger
    let clock: @Sendable () -> Date
    /// Where step 7 is posted, for the push body: the server's public base URL.
    let answerBase: String
    let onOutcome: @Sendable (String, Outcome) -> Void
    let inFlight = Mutex<[String: Task<Void, Never>]>([:])

    public init(
        _ configuration: Configuration, answerBaseURL: String, client: HTTPClient = .shared,
        logger: Logger = Logger(label: "ath.webhook"), clock: @escaping @Sendable () -> Date = { Date() },
        onOutcome: @escaping @Sendable (String, Outcome) -> Void = { _, _ in }
    ) {
        self.configuration = configuration
        self.answerBase = answerBaseURL
        self.client = client
        self.logger = logger
        self.clock = clock
        self.onOutcome = onOutcome
    }

    public func deliver(_ request: AuthorizationConfirmationRequest) async {
        let id = request.request_id
        let started: Bool = inFlight.withLock { tasks in
            guard tasks.count < configuration.maxInFlight, tasks[id] == nil else { return false }
            tasks[id] = Task { [self] in
                let outcome = await self.push(request)
                self.inFlight.withLock { _ = $0.removeValue(forKey: id) }
                self.report(id, outcome)
            }
            return true
        }
        if !started { report(id, .skipped) }
    }

    /// Stops every push under way (at shutdown) and waits for them.
    public func shutdown() async {
        let tasks = inFlight.withLock { Array($0.values) }
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
    }

    func report(_ id: String, _ outcome: Outcome) {
        switch outcome {
        case .delivered: logger.debug("webhook delivered", metadata: ["request_id": "\(id)", "outcome": "\(outcome)"])
        default: logger.warning("webhook not delivered", metadata: ["request_id": "\(id)", "outcome": "\(outcome)"])
        }
        onOutcome(id, outcome)
    }

    /// One push with its retries.
    func push(_ request: AuthorizationConfirmationRequest) async -> Outcome {
        let body: [UInt8]
        do {
            body = try CanonicalJSON.bytes(
                of: Push(request: request, answer_url: "\(answerBase)/ath/confirmations/\(request.request_id)"))
        } catch {
            return .gaveUp(attempts: 0)
        }
        var attempt = 0
        while true {
            attempt += 1
            if Freshness.unix(clock()) >= request.expires_at { return .expired(attempts: attempt - 1) }
            let status = await send(body, id: request.request_id)
            switch status {
            case .some(200..<300): return .delivered(attempts: attempt)
            case .some(let s) where (400..<500).contains(s) && s != 408 && s != 429: return .refused(status: s, attempts: attempt)
            default: break
            }
            if attempt >= configuration.maxAttempts { return .gaveUp(attempts: attempt) }
            do {
                try await Task.sleep(for: configuration.backoff(afterAttempt: attempt))
            } catch {
                return .gaveUp(attempts: attempt)
            }
        }
    }

    /// The receiver's status, nil when it could not be reached.
    func send(_ body: [UInt8], id: String) async -> Int? {
        var request = HTTPClientRequest(url: configuration.url)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        request.headers.add(name: WebhookSignature.idHeader, value: id)
        request.headers.add(name: WebhookSignature.header, value: WebhookSignature.sign(body, secret: configuration.secret, now: clock()).headerValue)
        request.body = .bytes(ByteBuffer(bytes: body))
        do {
            let response = try await client.execute(request, timeout: TimeAmount(configuration.attemptTimeout))
            _ = try? await response.body.collect(upTo: 64 * 1024)
            return Int(response.status.code)
        } catch {
            return nil
        }
    }
}
