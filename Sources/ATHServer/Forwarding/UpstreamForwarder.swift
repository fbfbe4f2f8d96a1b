import ATHCore
import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1

/// Forwards an admitted request to the service behind the gateway and streams its answer back
/// (async-http-client: pooled connections, bodies streamed both ways, nothing buffered whole).
///
/// What crosses is decided here once for every way in (the v0.1 proxy, the 9-step handshake's
/// protected routes): hop-by-hop fields and everything the agent sends to the gateway itself
/// (`Authorization`, `ATH-Proof`, every `X-ATH-*` field, cookies) stay behind; the gateway's own
/// identity fields and the upstream's credential are added; `X-Forwarded-*` tell the upstream
/// who asked.
public struct UpstreamForwarder: Sendable {
    let http: HTTPClient

    public init(httpClient: HTTPClient) {
        self.http = httpClient
    }

    /// Who the gateway admitted, passed upstream in documented fields (docs/GATEWAY.md) that the
    /// agent cannot set: any field of these names it sends is dropped.
    public struct Identity: Sendable {
        public var agent: String
        public var user: String
        public var scopes: [String]
        /// The grant (9-step handshake) or authorization session (v0.1 API) the access rests on.
        public var grant: String

        public init(agent: String, user: String, scopes: [String], grant: String) {
            (self.agent, self.user, self.scopes, self.grant) = (agent, user, scopes, grant)
        }

        /// A request admitted with the handshake's access token.
        public init(_ access: VerifiedAccess) {
            let claims = access.claims
            self.init(agent: claims.client_did, user: claims.sub, scopes: claims.scope.split(separator: " ").map(String.init), grant: claims.gid)
        }

        /// A request admitted with a v0.1 access token.
        public init(_ token: IssuedAccessToken) {
            self.init(agent: token.agentID, user: token.userID, scopes: token.scopes, grant: token.sessionID)
        }

        var fields: [(HTTPField.Name, String)] {
            [(.athAgent, agent), (.athUser, user), (.athScopes, scopes.joined(separator: " ")), (.athGrant, grant)]
        }
    }

    /// Sends `request` to `upstream` at `path` (already matched by the operation map; the query is
    /// the request's own) with `credential` as the upstream's own authentication.
    public func forward(
        _ request: Request, path: String, to upstream: Upstream, identity: Identity, credential: HTTPField?, remoteAddress: String?,
        scheme: String
    ) async throws -> Response {
        var url = upstream.baseURL + path
        if let query = request.uri.query, !query.isEmpty { url += "?" + query }
        var outgoing = HTTPClientRequest(url: url)
        outgoing.method = HTTPMethod(rawValue: request.method.rawValue)
        var length: Int64?
        var forwardedFor: String?
        let dropped = Self.connectionNamed(request.headers[values: .connection])
        for field in request.headers {
            let name = field.name.canonicalName
            if name == "content-length" {
                guard let n = Int64(field.value), n >= 0 else { throw ATHError(.malformedMessage, "Content-Length is not a number") }
                length = n
                continue
            }
            if name == "x-forwarded-for" {
                forwardedFor = forwardedFor.map { $0 + ", " + field.value } ?? field.value
                continue
            }
            if Self.neverForwarded.contains(name) || name.hasPrefix("x-ath-") || name.hasPrefix("ath-") || dropped.contains(name) { continue }
            outgoing.headers.add(name: field.name.rawName, value: field.value)
        }
        if let length, length > upstream.maxRequestBody {
            throw ATHError(.payloadTooLarge, "request body is over \(upstream.maxRequestBody) bytes")
        }
        if let remoteAddress { forwardedFor = forwardedFor.map { $0 + ", " + remoteAddress } ?? remoteAddress }
        if let forwardedFor { outgoing.headers.add(name: "X-Forwarded-For", value: forwardedFor) }
        if let host = request.head.authority { outgoing.headers.add(name: "X-Forwarded-Host", value: host) }
        outgoing.headers.add(name: "X-Forwarded-Proto", value: scheme)
        for (name, value) in identity.fields { outgoing.headers.add(name: name.rawName, value: value) }
        if let credential { outgoing.headers.replaceOrAdd(name: credential.name.rawName, value: credential.value) }
        let hasBody = length.map { $0 > 0 } ?? request.headers.contains(.transferEncoding)
        if hasBody {
            let body = LimitedBody(base: request.body, limit: upstream.maxRequestBody)
            outgoing.body = .stream(body, length: length.map { .known($0) } ?? .unknown)
        }

        let answer: HTTPClientResponse
        do {
            answer = try await http.execute(outgoing, timeout: TimeAmount(upstream.timeout))
        } catch let error as ATHError {
            throw error
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
            throw ATHError(.upstreamTimeout, "the service did not answer within \(upstream.timeout)")
        } catch {
            throw ATHError(.upstreamUnavailable, "the service could not be reached")
        }
        var headers = HTTPFields()
        let droppedBack = Self.connectionNamed(answer.headers["connection"])
        for (name, value) in answer.headers {
            let lower = name.lowercased()
            guard !Self.hopByHop.contains(lower), !droppedBack.contains(lower), let fieldName = HTTPField.Name(name) else { continue }
            headers.append(HTTPField(name: fieldName, value: value))
        }
        return Response(
            status: .init(code: Int(answer.status.code), reasonPhrase: answer.status.reasonPhrase), headers: headers,
            body: ResponseBody(asyncSequence: answer.body))
    }

    /// RFC 9110 §7.6.1: fields meant for one connection only, never passed on.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
        "transfer-encoding", "upgrade", "content-length",
    ]

    /// What the agent sends to the gateway and not to the service: its credentials for the
    /// gateway, and the fields the gateway sets itself.
    static let neverForwarded: Set<String> = hopByHop.union([
        "host", "authorization", "cookie", "forwarded", "x-forwarded-host", "x-forwarded-proto", "x-real-ip",
    ])

    /// The fields `Connection` values name, which are hop-by-hop too.
    static func connectionNamed(_ values: some Sequence<String>) -> Set<String> {
        var names = Set<String>()
        for value in values {
            for name in value.utf8.split(separator: UInt8(ascii: ",")) {
                // Optional white space is blanks and tabs (RFC 9110 §5.6.3); field names are ASCII.
                let blank = { (c: UInt8) in c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") }
                let trimmed = name.drop(while: blank).reversed().drop(while: blank).reversed()
                names.insert(String(decoding: trimmed, as: UTF8.self).lowercased())
            }
        }
        return names
    }
}

extension HTTPField.Name {
    /// The agent the gateway admitted (its DID or v0.1 agent id).
    public static let athAgent = HTTPField.Name("X-ATH-Agent")!
    /// The user who authorized it.
    public static let athUser = HTTPField.Name("X-ATH-User")!
    /// The scopes of the access, space-separated.
    public static let athScopes = HTTPField.Name("X-ATH-Scopes")!
    /// The grant or authorization session the access rests on.
    public static let athGrant = HTTPField.Name("X-ATH-Grant")!
}

/// A request body that ends in PAYLOAD_TOO_LARGE once it passes `limit` bytes, for bodies sent
/// without a Content-Length.
struct LimitedBody<Base: AsyncSequence & Sendable>: AsyncSequence, Sendable where Base.Element == ByteBuffer {
    typealias Element = ByteBuffer
    let base: Base
    let limit: Int

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: Base.AsyncIterator
        let limit: Int
        var seen = 0

        mutating func next() async throws -> ByteBuffer? {
            guard let chunk = try await base.next() else { return nil }
            seen += chunk.readableBytes
            guard seen <= limit else { throw ATHError(.payloadTooLarge, "request body is over \(limit) bytes") }
            return chunk
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: base.makeAsyncIterator(), limit: limit) }
}
