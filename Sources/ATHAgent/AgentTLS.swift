import ATHCore
import ATHIdentity
import AsyncHTTPClient
import Foundation
import NIOSSL
import X509

/// How an agent connects to a server over TLS 1.3: the CA roots it trusts for the server, and
/// optionally its own certificate (a client CAI) for mutual TLS. The same certificate can go in
/// step 3 as `credentials` when the server sits behind a TLS-terminating proxy.
public struct AgentTLS: Sendable {
    public var serverRoots: [Certificate]
    public var certificateChain: [Certificate]
    public var key: PrivateKey?

    public init(serverRoots: [Certificate], certificateChain: [Certificate] = [], key: PrivateKey? = nil) {
        self.serverRoots = serverRoots
        self.certificateChain = certificateChain
        self.key = key
    }

    /// Reads PEM files: the server's CA roots and, for mutual TLS, the agent's chain (leaf first).
    public static func load(serverRootsFile: String, certificateFile: String?, key: PrivateKey?) throws -> AgentTLS {
        AgentTLS(
            serverRoots: try Certificate.bundle(file: serverRootsFile),
            certificateChain: try certificateFile.map { try Certificate.bundle(file: $0) } ?? [], key: key)
    }

    /// The chain as step-3 `credentials`: base64 DER, leaf first.
    public var credentials: [String]? {
        certificateChain.isEmpty ? nil : certificateChain.compactMap { try? Data($0.serializeAsPEM().derBytes).base64EncodedString() }
    }

    /// TLS 1.3 only, the server verified against `serverRoots` with its host name, and the
    /// agent's certificate presented when the server asks for one.
    public func configuration() throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv13
        tls.maximumTLSVersion = .tlsv13
        tls.certificateVerification = .fullVerification
        tls.trustRoots = .certificates(try serverRoots.map { try NIOSSLCertificate(bytes: $0.serializeAsPEM().derBytes, format: .der) })
        if !certificateChain.isEmpty {
            guard let key else { throw IdentityError(.malformedCertificate, "a client certificate needs its private key") }
            tls.certificateChain = try certificateChain.map {
                .certificate(try NIOSSLCertificate(bytes: $0.serializeAsPEM().derBytes, format: .der))
            }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(key.pem.utf8), format: .pem))
        }
        return tls
    }

    /// An HTTP client for `ATHClient(httpClient:)`; the caller shuts it down.
    public func makeHTTPClient() throws -> HTTPClient {
        var configuration = HTTPClient.Configuration(tlsConfiguration: try configuration())
        configuration.httpVersion = .http1Only
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }
}
