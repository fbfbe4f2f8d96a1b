import ATHCore
import ATHStore
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

    /// Reads what `sessionKeyBytes` sealed: the proof key, and the traffic secrets when the
    /// session has them. A record sealed by another server key (or altered) fails closed.
    func openSessionKeys(_ session: StoredSession) throws -> (proofKey: SymmetricKey, traffic: (SymmetricKey, SymmetricKey)?) {
        guard let opened = sealer.openBytes(session.sealedProofKey, for: session.id), opened.count == 32 || opened.count == 96 else {
            throw ATHError(.tokenInvalid, "the token's session cannot be opened with this server's key; run a new handshake")
        }
        let bytes = Array(opened)
        let traffic = bytes.count == 96 ? (SymmetricKey(data: bytes[32..<64]), SymmetricKey(data: bytes[64..<96])) : nil
        return (SymmetricKey(data: bytes[0..<32]), traffic)
    }

    /// The session's secrets behind an admitted request (its token and proof already checked).
    /// Frames never use them directly: each channel derives keys of its own (`SessionChannels`).
    public func sessionSecrets(for access: VerifiedAccess) async throws -> SessionSecrets {
        guard let session = try await store.session(id: access.claims.sid), session.grantID == access.claims.gid else {
            throw ATHError(.tokenInvalid, "the token's session is unknown")
        }
        let keys = try openSessionKeys(session)
        guard let (clientToServer, serverToClient) = keys.traffic else {
            throw ATHError(.tokenInvalid, "this session was made before the encrypted session layer; run a new handshake")
        }
        return SessionSecrets(sessionID: session.id, proofKey: keys.proofKey, clientToServer: clientToServer, serverToClient: serverToClient)
    }
}
