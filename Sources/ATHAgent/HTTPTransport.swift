import ATHCore
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// JSON over HTTP for the SDKs: every non-2xx answer that carries the documented error shape
/// becomes a typed `ATHError`.
struct HTTPTransport: Sendable {
    let baseURL: String
    let client: HTTPClient
    let timeout: TimeAmount

    struct Reply: Sendable {
        var status: Int
        var headers: [(String, String)]
        var body: Data
    }

    func send(
        _ method: HTTPMethod, _ path: String, body: Data? = nil, headers: [(String, String)] = [], contentType: String = "application/json"
    ) async throws -> Reply {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "content-type", value: contentType)
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response = try await client.execute(request, timeout: timeout)
        let bytes = try await response.body.collect(upTo: 16 * 1024 * 1024)
        return Reply(
            status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) },
            body: Data(bytes.readableBytesView))
    }

    /// Sends JSON and returns the JSON answer, throwing the server's error when there is one.
    func json(_ method: HTTPMethod, _ path: String, _ value: JSONValue? = nil, headers: [(String, String)] = []) async throws -> (Int, JSONValue) {
        let (status, answer, _) = try await jsonWithHeaders(method, path, value, headers: headers)
        return (status, answer)
    }

    /// `json`, with the answer's headers (step 2's handshake ticket).
    func jsonWithHeaders(_ method: HTTPMethod, _ path: String, _ value: JSONValue? = nil, headers: [(String, String)] = []) async throws
        -> (Int, JSONValue, [(String, String)])
    {
        let body = try value.map { try JSONEncoder().encode($0) }
        let reply = try await send(method, path, body: body, headers: headers)
        try Self.throwIfError(reply)
        return (reply.status, try JSONValue.parse(reply.body), reply.headers)
    }

    static func throwIfError(_ reply: Reply) throws {
        guard reply.status >= 400 else { return }
        throw protocolError(in: reply) ?? ATHError(.internalError, "HTTP \(reply.status) without an ATH error body")
    }

    /// The ATH refusal a non-2xx answer carries, if it carries one with a code we know.
    static func protocolError(in reply: Reply) -> ATHError? {
        guard reply.status >= 400, let body = try? JSONDecoder().decode(ATHErrorBody.self, from: reply.body),
            ATHError.Code(rawValue: body.code) != nil
        else { return nil }
        return body.error
    }
}
