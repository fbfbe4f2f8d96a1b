/// What a server decides on its own side of the trusted handshake (the "server authorization").
public struct ServerPolicy: Sendable, Codable, Equatable {
    public var scopesSupported: [String]
    /// The longest grant (and session) the server gives, in seconds; tokens are renewed within it.
    public var tokenMaxTTL: Int
    /// Whether steps 6-7 run. When false, the user's pre-authorization credential alone is the
    /// user's consent; the server may only turn this off for scopes it deems low risk.
    public var requireUserConfirmation: Bool
    /// Seconds the user has to answer a confirmation request (then CONFIRMATION_TIMEOUT).
    public var confirmationTimeout: Int
    /// Seconds a handshake may wait between steps before it expires.
    public var handshakeTimeout: Int
    /// Restrictions attached to every grant.
    public var restrictions: Restrictions
    /// Scopes the server refuses to delegate to agents, with the reason shown in scopes_denied.
    public var deniedScopes: [String: String]
    /// When true, a did:ath client must be registered with its key; did:key clients always carry theirs.
    public var requireRegisteredClients: Bool
    /// This service's account types (Act Auth: types follow the services, e.g. read, write and
    /// read-write) and the scopes each may hold. An account of a type takes part only in grants of
    /// those scopes, as agent or as user; others are denied in step 8 with the reason. Accounts
    /// without a type, and every account when this is empty, are limited by nothing here.
    public var accountTypes: [String: [String]]
    /// Each scope in plain words, as the consent console shows it to the user.
    public var scopeDescriptions: [String: String]

    public init(
        scopesSupported: [String], tokenMaxTTL: Int = 7200, requireUserConfirmation: Bool = true,
        confirmationTimeout: Int = 120, handshakeTimeout: Int = 600, restrictions: Restrictions = Restrictions(),
        deniedScopes: [String: String] = [:], requireRegisteredClients: Bool = false, accountTypes: [String: [String]] = [:],
        scopeDescriptions: [String: String] = [:]
    ) {
        self.scopesSupported = scopesSupported
        self.tokenMaxTTL = tokenMaxTTL
        self.requireUserConfirmation = requireUserConfirmation
        self.confirmationTimeout = confirmationTimeout
        self.handshakeTimeout = handshakeTimeout
        self.restrictions = restrictions
        self.deniedScopes = deniedScopes
        self.requireRegisteredClients = requireRegisteredClients
        self.accountTypes = accountTypes
        self.scopeDescriptions = scopeDescriptions
    }

    /// Refuses a type this service does not define (nil, no type, is always fine).
    public func validateAccountType(_ type: String?) throws {
        guard let type, accountTypes[type] == nil else { return }
        let known = accountTypes.keys.sorted().joined(separator: ", ")
        throw ATHError(.malformedMessage, "unknown account type '\(type.prefix(64))'; this service has: \(known.isEmpty ? "none" : known)")
    }

    /// Why `scope` is denied to an account of `type` (nil: allowed). A type this service does not
    /// know (a policy changed since the account was typed) allows nothing: it fails closed.
    public func accountTypeDenial(of scope: String, type: String?, party: String) -> String? {
        guard let type, !accountTypes.isEmpty else { return nil }
        guard let allowed = accountTypes[type] else { return "the \(party)'s account type '\(type)' is unknown to this service" }
        return allowed.contains(scope) ? nil : "the \(party)'s account type '\(type)' does not allow it"
    }

    public var metadata: IdentityMetadata {
        IdentityMetadata(
            scopes_supported: scopesSupported, token_max_ttl: tokenMaxTTL, require_user_confirmation: requireUserConfirmation)
    }
}

/// The server's identity: its DID, one signing key per algorithm it offers, and the keys it
/// still accepts without signing with them.
///
/// Accepted keys are what lets an operator rotate the server key across several instances
/// without ending sessions: an access token, a sealed secret or a handshake in flight made under
/// a key stays valid on every instance that holds that key, signing or accepted
/// (docs/OPERATIONS.md, "Rotating the server key").
public struct ServerIdentity: Sendable {
    public var did: DID
    public var keys: [PrivateKey] {
        didSet { publicKeyPEMs = keys.map(\.publicKey.pem) }
    }
    /// Keys this server no longer signs with (or does not yet): what was made under them is
    /// still accepted.
    public var acceptedKeys: [PrivateKey]
    /// Each key's public PEM, as step 2 sends it: encoded once, not per handshake.
    private var publicKeyPEMs: [String]

    public init(did: DID, keys: [PrivateKey], acceptedKeys: [PrivateKey] = []) {
        precondition(!keys.isEmpty, "a server needs at least one signing key")
        self.did = did
        self.keys = keys
        self.acceptedKeys = acceptedKeys
        publicKeyPEMs = keys.map(\.publicKey.pem)
    }

    func key(for alg: SignatureAlgorithm) -> PrivateKey? { keys.first { $0.algorithm == alg } }

    func signingKey(for alg: SignatureAlgorithm) -> (PrivateKey, String)? {
        keys.firstIndex { $0.algorithm == alg }.map { (keys[$0], publicKeyPEMs[$0]) }
    }

    /// The key with this RFC 7638 thumbprint, signing or accepted.
    public func key(thumbprint: String) -> PrivateKey? {
        keys.first { $0.publicKey.thumbprint == thumbprint } ?? acceptedKeys.first { $0.publicKey.thumbprint == thumbprint }
    }

    /// The key that signs access tokens: ES256 when the server has one (every peer can check it).
    public var tokenKey: PrivateKey { key(for: .es256) ?? keys[0] }

    /// Every key whose tokens and sealed secrets this server accepts: the token key first.
    public var keyRing: [PrivateKey] {
        var ring = [tokenKey]
        for key in keys + acceptedKeys where !ring.contains(where: { $0.publicKey == key.publicKey }) { ring.append(key) }
        return ring
    }
}

/// Version and algorithm negotiation (steps 1-2).
public enum Negotiation {
    public static let supportedVersions = ["0.1"]

    /// The highest version both sides speak; none is a refusal, never a silent fallback.
    public static func version(offered: [String], supported: [String] = supportedVersions) throws -> String {
        let common = offered.filter(supported.contains)
        guard let best = common.max(by: { compare($0, $1) }) else {
            throw ATHError(.unsupportedVersion, "no common protocol version; this server speaks \(supported.joined(separator: ", "))", step: 1)
        }
        return best
    }

    static func compare(_ a: String, _ b: String) -> Bool {
        let x = a.split(separator: ".").map { Int($0) ?? 0 }
        let y = b.split(separator: ".").map { Int($0) ?? 0 }
        return x.lexicographicallyPrecedes(y)
    }

    /// The strongest signature algorithm the client offers and the server has a key for.
    public static func algorithm(offered: [String], available: [SignatureAlgorithm]) throws -> SignatureAlgorithm {
        for alg in SignatureAlgorithm.preference where offered.contains(alg.rawValue) && available.contains(alg) {
            return alg
        }
        throw ATHError(.unsupportedAlgorithm, "no common signature algorithm (ES256 is mandatory)", step: 1)
    }
}
