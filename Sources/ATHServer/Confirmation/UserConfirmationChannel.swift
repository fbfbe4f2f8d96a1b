import ATHCore

/// How step 6 reaches the user: independently of the agent, never through it.
///
/// The server stores every pending request; a channel only tells the user there is one. The
/// user's answer (step 7) always comes back signed through `POST /ath/confirmations/{id}`.
public protocol UserConfirmationChannel: Sendable {
    func deliver(_ request: AuthorizationConfirmationRequest) async
}

/// The pull channel: the user's device lists pending requests with a user-signed request
/// (`GET /ath/confirmations`), as `ath user watch` and `UserClient` do. Nothing to push.
public struct PullConfirmationChannel: UserConfirmationChannel {
    public init() {}
    public func deliver(_ request: AuthorizationConfirmationRequest) async {}
}

/// A push to in-process code (an app's notification service, or the demo's user).
public struct CallbackConfirmationChannel: UserConfirmationChannel {
    let callback: @Sendable (AuthorizationConfirmationRequest) async -> Void

    public init(_ callback: @escaping @Sendable (AuthorizationConfirmationRequest) async -> Void) {
        self.callback = callback
    }

    public func deliver(_ request: AuthorizationConfirmationRequest) async {
        await callback(request)
    }
}
