import Foundation

/// A service behind the gateway: where requests go and how long they may take.
public struct Upstream: Sendable {
    /// `scheme://host[:port][/prefix]`, without a trailing slash; the request's path is appended.
    public var baseURL: String
    /// How long the upstream has to start its answer (connect included).
    public var timeout: Duration
    /// Request bodies over this many bytes are refused (PAYLOAD_TOO_LARGE) and not forwarded.
    public var maxRequestBody: Int

    public init(baseURL: String, timeout: Duration = .seconds(30), maxRequestBody: Int = 10 << 20) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.timeout = timeout
        self.maxRequestBody = maxRequestBody
    }
}
