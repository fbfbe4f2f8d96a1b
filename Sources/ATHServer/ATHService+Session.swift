import ATHCore
import Crypto
import Foundation

/// The encrypted session layer's server side (docs/PROTOCOL.md §11): the session's traffic
/// secrets are kept with its proof key, sealed under the server's key in one record, so that
/// any instance sharing the store can serve the session.
extension ATHService {
    /// What is sealed for a session: proof key ‖ client→server secret ‖ server→client secret.
    /// Sessions made before the session layer hold the proof key alone (32 bytes).
    static func sessionKeyBytes(_ secrets: SessionSecrets) -> Data {
        secrets.proofKey.bytes + secrets.clientToServer.bytes + secrets.serverToClient.bytes
    }

    /// The server's end of the encrypted session behind an admitted request (its token and
    /// proof already checked): frames then carry RPC calls under the same grant.
    public func sessionEndpoint(for access: VerifiedAccess, ordering: SessionOpener.Ordering) async throws -> ServerSessionEndpoint {
        guard let session = try await store.session(id: access.claims.sid), session.grantID == access.claims.gid,
            let opened = sealer.openBytes(session.sealedProofKey, for: session.id)
        else { throw ATHError(.tokenInvalid, "the token's session cannot be opened with this server's key; run a new handshake") }
        guard opened.count == 96 else {
            throw ATHError(.tokenInvalid, "this session was made before the encrypted session layer; run a new handshake")
        }
        let bytes = Array(opened)
        let secrets = SessionSecrets(
            sessionID: session.id, proofKey: SymmetricKey(data: bytes[0..<32]), clientToServer: SymmetricKey(data: bytes[32..<64]),
            serverToClient: SymmetricKey(data: bytes[64..<96]))
        return try ServerSessionEndpoint(secrets: secrets, suite: .aes256gcm, ordering: ordering, now: clock())
    }
}
