import ATHCore

/// The refusals a handshake meets in the store and in the service alike: every backend and the
/// service's own checks before asking the user say them in the same words.
extension ATHError {
    /// An account that is suspended, at `step` (1: the agent's first message; 5: before the user
    /// is asked; 8: the completion's transaction).
    public static func suspended(_ account: some StringProtocol, step: Int) -> ATHError {
        ATHError(.accountSuspended, "the account \(account) is suspended", step: step)
    }

    /// A credential its user revoked, at `step` (5: before the user is asked; 8: the completion).
    public static func revokedCredential(step: Int) -> ATHError {
        ATHError(.credentialRevoked, "the user revoked this credential", step: step)
    }

    /// A check-and-set that found the handshake at another revision.
    public static var handshakeChangedConcurrently: ATHError {
        ATHError(.unexpectedMessage, "the handshake changed concurrently; this message was not applied")
    }
}
