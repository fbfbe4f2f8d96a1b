/// The v0.1 API's core rule: what a token carries is what the server approved for the agent,
/// what the user consented to and what the agent asked for, all three. An empty intersection
/// gets no token.
public struct ScopeIntersection: Codable, Sendable, Equatable {
    public var agentApproved: [String]
    public var userConsented: [String]
    /// In the order they were requested, each once.
    public var effective: [String]

    public init(requested: [String], agentApproved: [String], userConsented: [String]) {
        self.agentApproved = agentApproved
        self.userConsented = userConsented
        let (approved, consented) = (Set(agentApproved), Set(userConsented))
        var seen = Set<String>()
        effective = requested.filter { approved.contains($0) && consented.contains($0) && seen.insert($0).inserted }
    }

    enum CodingKeys: String, CodingKey {
        case agentApproved = "agent_approved"
        case userConsented = "user_consented"
        case effective
    }
}
