import ATHAgent
import ATHCore
import ATHIdentity
import ATHServer
import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOSSL
import Synchronization

/// How a client command reaches an https server: the CA roots that issued its certificate (by
/// default the system's), and for an agent its own certificate for mutual TLS.
struct ClientTLSOptions: ParsableArguments {
    @Option(help: "CA certificates (PEM) that issued the server's TLS certificate (default: the system's roots).") var ca: String?

    /// Clients made here live as long as the command, like `HTTPClient.shared`.
    static let retained = Mutex<[HTTPClient]>([])

    func httpClient(certificate: String? = nil, key: PrivateKey? = nil) throws -> HTTPClient {
        guard let ca else {
            guard certificate == nil else { throw ValidationError("--cert needs --ca, the roots of the server's certificate") }
            return .shared
        }
        let client = try AgentTLS.load(serverRootsFile: ca, certificateFile: certificate, key: key).makeHTTPClient()
        Self.retained.withLock { $0.append(client) }
        return client
    }

    /// The same trust for connections that are not HTTP requests (a wss:// session channel).
    func configuration(certificate: String? = nil, key: PrivateKey? = nil) throws -> TLSConfiguration {
        guard let ca else {
            guard certificate == nil else { throw ValidationError("--cert needs --ca, the roots of the server's certificate") }
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.minimumTLSVersion = .tlsv13
            return tls
        }
        return try AgentTLS.load(serverRootsFile: ca, certificateFile: certificate, key: key).configuration()
    }
}

/// How `ath serve` listens: TLS 1.3 with its certificate, optionally asking agents for theirs;
/// plain HTTP only when asked for by name.
struct ServeTLSOptions: ParsableArguments {
    @Option(help: "The server's certificate chain (PEM, leaf first), e.g. from `ath ca issue --role server`.") var tlsCert: String?
    @Option(help: "The private key of --tls-cert (PEM).") var tlsKey: String?
    @Option(help: "Roots (PEM) of the CAs whose agent certificates (CAI) are accepted; turns on client certificates.")
    var clientCA: String?
    @Option(help: "A CRL of an agent CA (PEM or DER; repeatable), read again at each verification.") var crl: [String] = []
    @Flag(help: "Accept agent certificates without revocation checking (explicit: there is no silent default).") var noCRL = false
    @Flag(help: "Refuse TLS connections without a valid agent certificate (an agent-only listener).") var requireClientCert = false
    @Flag(help: "Refuse handshakes whose agent showed no certificate (by TLS or in step 3 credentials).")
    var requireAgentCertificate = false
    @Flag(help: "Serve plain HTTP (development on loopback only; ATH requires TLS 1.3).") var insecureHTTP = false

    func validate() throws {
        if insecureHTTP {
            guard tlsCert == nil, tlsKey == nil, !requireClientCert else {
                throw ValidationError("--insecure-http excludes --tls-cert, --tls-key and --require-client-cert")
            }
        } else if tlsCert == nil || tlsKey == nil {
            throw ValidationError("give --tls-cert and --tls-key (TLS 1.3), or --insecure-http for plain HTTP on loopback")
        }
        if clientCA != nil, crl.isEmpty, !noCRL { throw ValidationError("--client-ca needs --crl FILE or, knowingly, --no-crl") }
        if clientCA == nil, requireClientCert || requireAgentCertificate || !crl.isEmpty {
            throw ValidationError("--require-client-cert, --require-agent-certificate and --crl need --client-ca")
        }
    }

    func trust() throws -> AgentTrust? {
        try clientCA.map { try AgentTrust.load(rootsFile: $0, crlFiles: crl) }
    }

    func serverTLS(trust: AgentTrust?) throws -> ServerTLS? {
        guard let tlsCert, let tlsKey else { return nil }
        let mode: ServerTLS.ClientCertificates = trust.map { requireClientCert ? .required($0) : .optional($0) } ?? .none
        return try ServerTLS.load(certificateFile: tlsCert, keyFile: tlsKey, clientCertificates: mode)
    }
}
