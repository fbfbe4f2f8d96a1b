import Foundation

/// The v0.1 API's proof that a call comes from the agent it names: a compact JWS the agent signs
/// afresh for every register, authorize and token call (ath-http-api-v0.1.md).
///
/// Reading and checking the claims is separate from checking the signature because the key is
/// found through the claims (the agent's identity document at `sub`), and because a dev-mode
/// gateway skips the signature alone: every claim check below stays on in every mode.
public struct AgentAttestation: Sendable, Equatable {
    /// `sub`: the agent id, an URI (the SDKs put the same value in `iss`).
    public var agentID: String
    public var issuer: String
    public var issuedAt: Int64
    public var expiresAt: Int64
    public var jti: String
    public var kid: String?
    public var algorithm: SignatureAlgorithm
    /// What the signature covers and the signature itself, kept for `verifySignature(with:)`.
    let signingInput: Substring
    let signature: Data

    public struct Policy: Sendable {
        /// The longest `exp - iat` accepted: the official SDKs sign for exactly one hour.
        public var maxLifetime: Int64 = 3600
        /// How far `iat` may be from this clock (the v0.1 spec: five minutes).
        public var maxSkew: Int64 = Freshness.maxSkew
        /// Attestations are a few hundred bytes; anything far larger is refused unread.
        public var maxLength = 8192

        public init() {}
    }

    /// Reads `token` and checks every claim against `audience` and `now`: algorithm ES256 or
    /// EdDSA (never `none` or a symmetric one), `typ` absent or JWT, `sub` and `iss` present,
    /// `aud` naming `audience`, `iat` within the skew, `exp` in the future and at most
    /// `maxLifetime` after `iat`, a `jti`. The signature is not looked at.
    public static func read(_ token: String, audience: String, now: Date, policy: Policy = Policy()) throws -> AgentAttestation {
        func refuse(_ why: String) -> ATHError { ATHError(.invalidAttestation, why) }
        guard token.utf8.count <= policy.maxLength else { throw refuse("agent_attestation is over \(policy.maxLength) bytes") }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let signature = Base64URL.decode(String(parts[2])) else { throw refuse("agent_attestation is not a compact JWS") }
        let (header, claims) = try JWTCodec.unverifiedParts(of: token, error: .invalidAttestation)
        guard let alg = header.alg, let algorithm = SignatureAlgorithm(rawValue: alg) else {
            throw refuse("attestation algorithm '\(header.alg ?? "none")' is not ES256 or EdDSA")
        }
        if let typ = header.typ, typ.uppercased() != "JWT" { throw refuse("attestation typ '\(typ)' is not JWT") }
        guard case .object = claims else { throw refuse("attestation claims are not a JSON object") }
        func string(_ name: String) throws -> String {
            guard case .string(let value)? = claims[name], !value.isEmpty, value.utf8.count <= 2048 else {
                throw refuse("attestation claim '\(name)' is missing or not a string")
            }
            return value
        }
        func integer(_ name: String) throws -> Int64 {
            // I-JSON integers only (`JSONValue.safeIntegers`): nothing at the 64-bit edges reaches
            // the arithmetic below.
            guard case .integer(let value)? = claims[name], JSONValue.safeIntegers.contains(value) else {
                throw refuse("attestation claim '\(name)' is missing or not an integer")
            }
            return value
        }
        let subject = try string("sub"), issuer = try string("iss"), jti = try string("jti")
        let audiences: [String] =
            switch claims["aud"] {
            case .string(let one)?: [one]
            case .array(let many)?: many.compactMap(\.stringValue)
            default: []
            }
        guard audiences.contains(audience) else { throw refuse("attestation aud does not name \(audience)") }
        let iat = try integer("iat"), exp = try integer("exp")
        let t = Freshness.unix(now)
        guard Freshness.within(policy.maxSkew, iat, of: t) else { throw refuse("attestation iat \(iat) is more than \(policy.maxSkew) s from \(t)") }
        guard exp > t else { throw refuse("attestation expired at \(exp)") }
        guard let lifetime = Freshness.lifetime(issuedAt: iat, expiresAt: exp), lifetime <= policy.maxLifetime else {
            throw refuse("attestation lifetime exp - iat is over \(policy.maxLifetime) s")
        }
        return AgentAttestation(
            agentID: subject, issuer: issuer, issuedAt: iat, expiresAt: exp, jti: jti, kid: header.kid, algorithm: algorithm,
            signingInput: token[..<parts[1].endIndex], signature: signature)
    }

    /// Checks the signature with the agent's published key (ES256 as raw R||S, RFC 7518 §3.4).
    public func verifySignature(with key: PublicKey) throws {
        guard key.algorithm == algorithm else {
            throw ATHError(.invalidAttestation, "attestation algorithm \(algorithm.rawValue) does not match the agent's \(key.algorithm.rawValue) key")
        }
        guard key.isValidSignature(signature, for: Data(signingInput.utf8)) else {
            throw ATHError(.invalidAttestation, "attestation signature does not verify with the agent's published key")
        }
    }

    /// The key under which the attestation's `jti` is remembered until `exp`: per agent, so one
    /// agent's ids cannot block another's.
    public var replayKey: String { "attestation:\(agentID):\(jti)" }
}
