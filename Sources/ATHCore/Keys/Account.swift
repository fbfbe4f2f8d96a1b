import Foundation

/// An account of the registry (Act Auth), as the store, the admin API and its client see it. Its
/// internal id is not here on purpose: Act Auth keeps it inside the authentication center, so
/// nothing built from an `Account` can leak it.
public struct Account: Codable, Sendable, Equatable {
    /// Act Auth's account families: `user` is an end user, `service` an application component
    /// (an internal service calling another), `agent` a third party acting on the application's
    /// data (an AI agent).
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case user, agent, service
    }

    /// The primary external id: the account's DID.
    public var did: String
    public var kind: Kind
    public var name: String
    public var developer: String?
    /// Unique human-friendly names (an e-mail address, a phone number, a chosen name).
    public var aliases: [String]
    /// Further external ids besides the DID.
    public var externalIDs: [String]
    /// When an admin suspended the account (Unix seconds), nil while it is in good standing. A
    /// suspended account opens no handshake, and its grants were revoked when it was suspended.
    public var suspendedAt: Int64?
    /// The account's type on this service (`ServerPolicy.accountTypes`): which scopes it may hold.
    public var accountType: String?

    enum CodingKeys: String, CodingKey {
        case did, kind, name, developer, aliases
        case externalIDs = "external_ids"
        case suspendedAt = "suspended_at"
        case accountType = "account_type"
    }

    public init(
        did: String, kind: Kind, name: String, developer: String? = nil, aliases: [String] = [], externalIDs: [String] = [],
        suspendedAt: Int64? = nil, accountType: String? = nil
    ) {
        self.did = did
        self.kind = kind
        self.name = name
        self.developer = developer
        self.aliases = aliases
        self.externalIDs = externalIDs
        self.suspendedAt = suspendedAt
        self.accountType = accountType
    }

    /// External ids are DIDs or base64url strings (Act Auth 4.1.3), at most 256 characters, or
    /// an agent's AIC (ACPs), which binds the agent's certificates to this account.
    public static func validateExternalID(_ id: String) throws {
        let base64url = id.utf8.allSatisfy { b in
            (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x2D || b == 0x5F
        }
        let aic = id.hasPrefix(AgentIdentityCode.prefix + ".") && (try? AgentIdentityCode(parsing: id)) != nil
        guard (1...256).contains(id.utf8.count), base64url || aic || (try? DID(id)) != nil else {
            throw ATHError(
                .malformedMessage, "external id '\(id.prefix(64))' is neither a DID, an AIC nor base64url (1-256 characters)")
        }
    }

    /// Whether `aic` is one of this account's external ids (AICs compare case-insensitively).
    public func holds(aic: AgentIdentityCode) -> Bool {
        externalIDs.contains { (try? AgentIdentityCode(parsing: $0)) == aic }
    }

    /// Aliases are 1-254 printable characters without spaces, unique regardless of case.
    public static func validateAlias(_ alias: String) throws {
        guard (1...254).contains(alias.count), alias.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7F }) else {
            throw ATHError(.malformedMessage, "alias '\(alias.prefix(64))' must be 1-254 printable characters without spaces")
        }
    }
}

extension Account {
    /// Aliases and further external ids may be left out of a registration.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            did: try c.decode(String.self, forKey: .did), kind: try c.decode(Kind.self, forKey: .kind), name: try c.decode(String.self, forKey: .name),
            developer: try c.decodeIfPresent(String.self, forKey: .developer), aliases: try c.decodeIfPresent([String].self, forKey: .aliases) ?? [],
            externalIDs: try c.decodeIfPresent([String].self, forKey: .externalIDs) ?? [],
            suspendedAt: try c.decodeIfPresent(Int64.self, forKey: .suspendedAt),
            accountType: try c.decodeIfPresent(String.self, forKey: .accountType))
    }
}
