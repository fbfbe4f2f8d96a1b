/// Where a handshake gets its random values.
///
/// Production uses the system CSPRNG. The published test vectors replay fixed values instead,
/// so that every byte of a handshake can be printed and derived again by another implementation.
public struct HandshakeRandomness: Sendable {
    public enum Value: String, Sendable, CaseIterable {
        case clientNonce = "client_nonce"
        case serverNonce = "server_nonce"
        case requestID = "request_id"
        case grantID = "grant_id"
        case tokenID = "token_jti"
    }

    public enum Side: String, Sendable { case client, server }

    public var value: @Sendable (Value) -> String
    public var ephemeralKey: @Sendable (Side, KeyExchangeAlgorithm) -> EphemeralKey

    public init(
        value: @escaping @Sendable (Value) -> String, ephemeralKey: @escaping @Sendable (Side, KeyExchangeAlgorithm) -> EphemeralKey
    ) {
        self.value = value
        self.ephemeralKey = ephemeralKey
    }

    public static let system = HandshakeRandomness(value: { _ in Nonce.generate() }, ephemeralKey: { EphemeralKey.generate($1) })
}
