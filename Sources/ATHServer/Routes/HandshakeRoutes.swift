import ATHCore
import Foundation
import HTTPTypes
import Hummingbird

/// The HTTP binding of the handshake (docs/PROTOCOL.md, "HTTP binding").
///
/// POST /ath/handshake                       step 1 -> step 2, and its ATH-Handshake-Ticket
/// POST /ath/handshake/{id}/identity         step 3 with that ticket -> step 4
/// POST /ath/handshake/{id}/scope            step 5 -> 202 pending, or 200 steps 8+9
/// GET  /ath/handshake/{id}/result?wait=N    202 pending, or 200 steps 8+9, or the error
/// GET  /ath/confirmations                   the user's pending step-6 requests (ATH-User auth)
/// POST /ath/confirmations/{request_id}      step 7
/// GET  /ath/credentials                     the user's credentials the server has seen (ATH-User auth)
/// POST /ath/credentials/{jti}/revoke        revoke one, ending its grants (ATH-User auth)
/// POST /ath/token/renew                     a new access token within the grant
/// GET  /ath/oidc/nonce                      a nonce for an ID token the user API will take (Authorization: OIDC)
public struct HandshakeRoutes<Context: ATHRequestContextProtocol>: Sendable {
    let service: ATHService
    /// The largest body of any handshake route: step 3 with a certificate chain.
    public static var bodyLimit: Int { 64 * 1024 }
    /// Step 1 holds a PEM key and a few short fields (about 500 bytes); a larger one would travel
    /// in its ticket (`HandshakeTicket.maxLength`) and the transcript for nothing, so it is
    /// refused before it is read.
    public static var stepOneLimit: Int { 4 * 1024 }
    /// Steps 5 and 7: a credential, a context of at most 1000 characters, a key share; a decision.
    public static var decisionLimit: Int { 16 * 1024 }

    public init(service: ATHService) {
        self.service = service
    }

    public func register(on router: Router<Context>) {
        let service = self.service
        let limit = Self.bodyLimit
        let group = router.group("ath").add(middleware: ErrorShapeMiddleware<Context>())
        group.post("handshake") { request, context in
            var request = request
            let peer = try await context.peerAgentIdentity()
            let start = try await service.begin(request.json(limit: Self.stepOneLimit), peerAIC: peer)
            var response = try JSONResponse.message(start.response)
            response.headers[.athHandshakeTicket] = start.ticket
            return response
        }
        group.post("handshake/:id/identity") { request, context in
            var request = request
            let id = try context.parameters.require("id")
            let ticket = request.headers[.athHandshakeTicket]
            return try JSONResponse.message(try await service.identityProof(handshakeID: id, ticket: ticket, request.json(limit: limit)))
        }
        group.post("handshake/:id/scope") { request, context in
            var request = request
            let id = try context.parameters.require("id")
            return try Self.render(try await service.scopeRequest(handshakeID: id, request.json(limit: Self.decisionLimit)))
        }
        group.get("handshake/:id/result") { request, context in
            let id = try context.parameters.require("id")
            var wait = 0.0
            if let text = request.uri.queryParameters["wait"] {
                guard let seconds = Double(String(text)), seconds.isFinite, seconds >= 0 else {
                    throw ATHError(.malformedMessage, "wait must be a number of seconds (0-30)")
                }
                wait = seconds
            }
            return try Self.render(try await service.result(handshakeID: id, wait: wait))
        }
        group.get("confirmations") { request, _ in
            let pending = try await service.pendingConfirmations(authorization: request.headers[.authorization] ?? "")
            return try JSONResponse.make(["requests": pending])
        }
        group.post("confirmations/:request_id") { request, context in
            var request = request
            let id = try context.parameters.require("request_id")
            return try JSONResponse.make(try await service.confirm(requestID: id, request.json(limit: Self.decisionLimit)))
        }
        group.get("credentials") { request, _ in
            try JSONResponse.make(["credentials": try await service.credentials(authorization: request.headers[.authorization] ?? "")])
        }
        group.post("credentials/:jti/revoke") { request, context in
            let jti = try context.parameters.require("jti")
            let grants = try await service.revokeCredential(jti: jti, authorization: request.headers[.authorization] ?? "")
            return try JSONResponse.make(["jti": .string(jti), "grants_revoked": .array(grants.map(JSONValue.string))] as JSONValue)
        }
        group.get("oidc/nonce") { _, _ in
            try JSONResponse.make(["nonce": try service.oidcNonce()])
        }
        group.post("token/renew") { request, context in
            let access = try await service.admit(request, remoteAddress: context.remoteAddress, scope: nil)
            return try JSONResponse.make(try await service.renew(access.0))
        }
    }

    static func render(_ answer: ATHService.ScopeAnswer) throws -> Response {
        switch answer {
        case .pending(let p): try JSONResponse.message(p, status: .accepted)
        case .complete(let outcome): try JSONResponse.message(outcome)
        }
    }
}

extension HTTPField.Name {
    static let athHandshakeTicket = HTTPField.Name(HandshakeTicket.header)!
}
