/// What a server keeps in memory per live session is its token's claims and its grant, for as
/// long as the session is used. Decoded separately, each holds its own copy of the same texts:
/// the server's DID (twice in the claims), the agent's and the user's DIDs and the grant's id,
/// some 60 bytes each and a heap allocation apiece. Sharing them is about a fifth of a session's
/// memory (docs/PERFORMANCE.md, "Memory per live session").
extension AccessTokenClaims {
    /// These claims with the issuer and audience taken from `server` when equal (a verified
    /// token's always are).
    public func sharingServer(_ server: DID) -> AccessTokenClaims {
        var claims = self
        if claims.iss == server.value { claims.iss = server.value }
        if claims.aud == server.value { claims.aud = server.value }
        return claims
    }
}

extension Grant {
    /// This grant with its id and DIDs taken from `claims`, a token of it, where they are equal.
    public func sharingTexts(of claims: AccessTokenClaims) -> Grant {
        var grant = self
        if grant.id == claims.gid { grant.id = claims.gid }
        grant.clientDID = grant.clientDID.sharingText(of: claims.client_did)
        grant.userDID = grant.userDID.sharingText(of: claims.sub)
        return grant
    }
}
