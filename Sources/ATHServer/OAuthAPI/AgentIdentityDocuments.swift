import ATHCore
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix

/// Fetches the identity document an agent publishes at its agent id, for the key that checks its
/// attestations (ath-http-api-v0.1.md): `{agent_id, name, developer, public_key: JWK or PEM}`.
///
/// An agent id is a URL the agent chose, so the fetch is a request an outsider aims: HTTPS only,
/// no user info, a public address only (resolved here and then pinned, so a second DNS answer
/// cannot swap in a private one), a size and time limit, no redirects. Documents are cached at
/// most five minutes; a signature that does not verify with the cached key fetches again, at
/// most once a minute per agent, so a key rotation is picked up without letting forged
/// attestations drive fetches.
public actor AgentIdentityDocuments {
    public struct Policy: Sendable {
        public var cacheLifetime: TimeInterval = 300
        public var minimumRefetchInterval: TimeInterval = 60
        public var maxDocumentSize = 64 * 1024
        public var timeout: Duration = .seconds(5)
        /// Loopback and private addresses, and plain HTTP to loopback: for tests on one machine
        /// only (docs/GATEWAY.md).
        public var allowLoopback = false

        public init() {}
    }

    struct Entry {
        var key: PublicKey
        var fetchedAt: Date
    }

    let policy: Policy
    let clock: @Sendable () -> Date
    var cache: [String: Entry] = [:]
    var lastForcedFetch: [String: Date] = [:]

    public init(policy: Policy = Policy(), clock: @escaping @Sendable () -> Date = { Date() }) {
        self.policy = policy
        self.clock = clock
    }

    /// Checks the attestation's signature with the agent's published key, fetching the document
    /// when it is not cached or when the cached key does not verify (once a minute at most).
    public func verify(_ attestation: AgentAttestation) async throws {
        let now = clock()
        if let entry = cache[attestation.agentID], now.timeIntervalSince(entry.fetchedAt) < policy.cacheLifetime {
            if (try? attestation.verifySignature(with: entry.key)) != nil { return }
            if let last = lastForcedFetch[attestation.agentID], now.timeIntervalSince(last) < policy.minimumRefetchInterval {
                try attestation.verifySignature(with: entry.key)
            }
            lastForcedFetch[attestation.agentID] = now
        }
        let key = try await fetch(attestation.agentID)
        cache[attestation.agentID] = Entry(key: key, fetchedAt: now)
        if cache.count > 10_000 { cache = cache.filter { now.timeIntervalSince($0.value.fetchedAt) < policy.cacheLifetime } }
        try attestation.verifySignature(with: key)
    }

    func fetch(_ agentID: String) async throws -> PublicKey {
        func refuse(_ why: String) -> ATHError { ATHError(.invalidAttestation, "agent identity document at \(agentID.prefix(256)): \(why)") }
        guard let url = URL(string: agentID), let scheme = url.scheme?.lowercased(), let host = url.host, !host.isEmpty else {
            throw refuse("the agent id is not an absolute URL")
        }
        guard url.user == nil, url.password == nil else { throw refuse("user info is not allowed") }
        let address = try await Self.resolve(host, port: url.port ?? (scheme == "https" ? 443 : 80))
        let loopbackOnly = address.isPrivateOrLoopback
        guard scheme == "https" || (scheme == "http" && policy.allowLoopback && loopbackOnly) else { throw refuse("only https is allowed") }
        guard !loopbackOnly || policy.allowLoopback else { throw refuse("\(host) resolves to a private or loopback address") }

        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow)
        configuration.dnsOverride = [host: address.ipAddress ?? host]
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        defer { client.shutdown { _ in } }
        var request = HTTPClientRequest(url: agentID)
        request.headers.add(name: "Accept", value: "application/json")
        let body: ByteBuffer
        do {
            let response = try await client.execute(request, timeout: TimeAmount(policy.timeout))
            guard response.status == .ok else { throw refuse("answered \(response.status.code)") }
            body = try await response.body.collect(upTo: policy.maxDocumentSize)
        } catch let error as ATHError {
            throw error
        } catch {
            throw refuse("could not be fetched (\(error))")
        }
        let document = try JSONValue.parse(body.readableBytesView)
        guard document["agent_id"]?.stringValue == agentID else { throw refuse("its agent_id is not \(agentID.prefix(256))") }
        switch document["public_key"] {
        case .string(let pem)?: return try PublicKey(pem: pem)
        case .object?: return try PublicKey(jwk: try document["public_key"]!.decode(JWK.self))
        default: throw refuse("it has no public_key (JWK or PEM)")
        }
    }

    /// The first address `host` resolves to, refused when any of its addresses is private or
    /// loopback and another is not (a split answer is how rebinding starts).
    static func resolve(_ host: String, port: Int) async throws -> SocketAddress {
        let addresses: [SocketAddress]
        do {
            // getaddrinfo blocks: on the thread pool, never on an event loop.
            addresses = try await NIOThreadPool.singleton.runIfActive { try Self.addresses(host, port: port) }
        } catch {
            throw ATHError(.invalidAttestation, "agent identity host \(host.prefix(256)) does not resolve")
        }
        guard let first = addresses.first else { throw ATHError(.invalidAttestation, "agent identity host \(host.prefix(256)) does not resolve") }
        let kinds = Set(addresses.map(\.isPrivateOrLoopback))
        guard kinds.count == 1 else { throw ATHError(.invalidAttestation, "agent identity host \(host.prefix(256)) resolves to mixed addresses") }
        return first
    }

    private static func addresses(_ host: String, port: Int) throws -> [SocketAddress] {
        if let literal = try? SocketAddress(ipAddress: host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port: port) {
            return [literal]
        }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let list = result else { return [] }
        defer { freeaddrinfo(list) }
        var found: [SocketAddress] = []
        var node: UnsafeMutablePointer<addrinfo>? = list
        while let info = node {
            if let sa = info.pointee.ai_addr {
                switch Int32(sa.pointee.sa_family) {
                case AF_INET:
                    found.append(sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { SocketAddress($0.pointee, host: host) })
                case AF_INET6:
                    found.append(sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { SocketAddress($0.pointee, host: host) })
                default: break
                }
            }
            node = info.pointee.ai_next
        }
        return found
    }
}

extension SocketAddress {
    /// Loopback, private (RFC 1918, RFC 4193), link-local, CGNAT, unspecified or IPv4-mapped
    /// forms of these: nowhere an outsider's URL may point the gateway.
    var isPrivateOrLoopback: Bool {
        switch self {
        case .v4(let a):
            let b = withUnsafeBytes(of: a.address.sin_addr.s_addr) { Array($0) }
            return Self.privateV4(b)
        case .v6(let a):
            let b = withUnsafeBytes(of: a.address.sin6_addr) { Array($0) }
            if b[0..<10].allSatisfy({ $0 == 0 }), b[10] == 0xff, b[11] == 0xff { return Self.privateV4(Array(b[12..<16])) }
            if b[0..<15].allSatisfy({ $0 == 0 }) { return true }  // :: and ::1
            if b[0] & 0xfe == 0xfc { return true }  // fc00::/7
            if b[0] == 0xfe, b[1] & 0xc0 == 0x80 { return true }  // fe80::/10
            return false
        case .unixDomainSocket: return true
        }
    }

    private static func privateV4(_ b: [UInt8]) -> Bool {
        b[0] == 0 || b[0] == 10 || b[0] == 127 || (b[0] == 169 && b[1] == 254) || (b[0] == 172 && b[1] & 0xf0 == 16)
            || (b[0] == 192 && b[1] == 168) || (b[0] == 100 && b[1] & 0xc0 == 64) || b[0] >= 224
    }
}
