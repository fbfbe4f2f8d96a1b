import ATHCore
import ATHStore
import Foundation
import Hummingbird
import Logging

/// Every refusal leaves the server as `{code, message, step?, retryable}` with the code's status;
/// 401s carry a WWW-Authenticate challenge (RFC 7235).
extension ATHError: HTTPResponseError {
    public var status: HTTPResponse.Status { .init(code: httpStatus) }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        // Sorted keys, like every other JSON answer: the same error gives the same bytes.
        var response = try JSONResponse.make(ATHErrorBody(self), status: status)
        if httpStatus == 401 {
            response.headers[.wwwAuthenticate] = "ATH realm=\"ath\", error=\"\(code.rawValue)\""
        }
        if code == .rateLimited || code == .storeUnavailable { response.headers[.retryAfter] = "1" }
        return response
    }
}

/// Converts whatever a handler threw into the documented error shape: never a stack trace,
/// never Hummingbird's plain-text default.
public struct ErrorShapeMiddleware<Context: RequestContext>: RouterMiddleware {
    public init() {}

    /// Inlinable, like `ATHAccessMiddleware.handle`, to be specialized for the context type.
    @inlinable
    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as ATHError {
            throw error
        } catch let error as HTTPError {
            switch error.status {
            case .contentTooLarge: throw ATHError(.payloadTooLarge, "request body is too large")
            case .notFound: throw ATHError(.handshakeNotFound, "no such endpoint")
            default: throw ATHError(.malformedMessage, error.body ?? "bad request")
            }
        } catch StoreError.unavailable(let why) {
            context.logger.warning("store unavailable: \(why)")
            throw ATHError(.storeUnavailable, "the server's database is unavailable; retry shortly")
        } catch {
            context.logger.error("unexpected error: \(error)")
            throw ATHError(.internalError, "the server failed to handle this request")
        }
    }
}

/// A path no route serves gets the documented error shape (NOT_FOUND as JSON), not Hummingbird's
/// empty 404. Add it to a router after its last route: it then wraps the not-found answer alone.
public struct UnknownEndpointMiddleware<Context: RequestContext>: RouterMiddleware {
    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            throw ATHError(.notFound, "no such endpoint")
        }
    }
}

enum JSONResponse {
    static func make(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return response(try encoder.encode(value), status: status)
    }

    /// A protocol message (the handshake's steps and outcomes: a JSON tree, strings and integers,
    /// no `Date` or `Data`) in the protocol's own canonical JSON, which is also sorted and leaves
    /// slashes alone: Foundation's encoder took about 5 % of the server's CPU per HTTP handshake.
    static func message(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        response(try CanonicalJSON.bytes(of: value), status: status)
    }

    private static func response(_ body: some Sequence<UInt8>, status: HTTPResponse.Status) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

extension Request {
    /// The body as JSON, refused with PAYLOAD_TOO_LARGE over `limit` bytes.
    mutating func json(limit: Int) async throws -> JSONValue {
        try requireContentType("application/json")
        let buffer: ByteBuffer
        do {
            buffer = try await collectBody(upTo: limit)
        } catch {
            throw ATHError(.payloadTooLarge, "request body is over \(limit) bytes")
        }
        return try JSONValue.parse(buffer.readableBytesView)
    }
}

extension Request {
    /// Refuses a body of another media type before reading it: a form or a text body posted
    /// across origins by a browser is never taken for the JSON an API call would send.
    /// Parameters (`; charset=utf-8`) are allowed; the type compares case-insensitively
    /// (`expected` is lowercase). Compared as bytes: Foundation's trimming and lowercasing took
    /// over 1 % of the server's CPU per handshake, for a header that is almost always `expected`.
    func requireContentType(_ expected: String) throws {
        let given = headers[.contentType] ?? ""
        let isSpace = { (byte: UInt8) in byte == 0x20 || byte == 0x09 }
        var type = Array(given.utf8.prefix { $0 != UInt8(ascii: ";") }.drop(while: isSpace))
        while let last = type.last, isSpace(last) { type.removeLast() }
        let lowercased = type.map { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) ? $0 + 32 : $0 }
        guard lowercased.elementsEqual(expected.utf8) else {
            throw ATHError(.unsupportedMediaType, "the body must be \(expected)\(given.isEmpty ? "" : ", not \(given.prefix(64))")")
        }
    }
}
