import ATHCore
import ATHIdentity
import ATHStore
import Foundation
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import X509

/// How a server listens with TLS: TLS 1.3 only (seed 000 requires it for all traffic; a 1.2
/// ClientHello gets a protocol_version alert), its own certificate, and optionally agents'
/// client certificates verified as CAIs (chain to the configured roots, CRL, clientAuth EKU).
/// Plain HTTP is not this type's business: `ath serve` offers it only behind `--insecure-http`.
public struct ServerTLS: Sendable {
    public enum ClientCertificates: Sendable {
        /// No CertificateRequest is sent; agents prove themselves in the handshake alone.
        case none
        /// A presented certificate must verify; an agent may also connect without one.
        case optional(AgentTrust)
        /// Every connection must present a valid agent certificate.
        case required(AgentTrust)

        var trust: AgentTrust? {
            switch self {
            case .none: nil
            case .optional(let t), .required(let t): t
            }
        }
    }

    public var certificateChain: [Certificate]
    public var privateKey: Certificate.PrivateKey
    public var clientCertificates: ClientCertificates
    /// Told why a client certificate was refused (the TLS alert itself carries no reason).
    public var onRefusal: (@Sendable (IdentityError) -> Void)?

    public init(
        certificateChain: [Certificate], privateKey: Certificate.PrivateKey, clientCertificates: ClientCertificates = .none,
        onRefusal: (@Sendable (IdentityError) -> Void)? = nil
    ) {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
        self.clientCertificates = clientCertificates
        self.onRefusal = onRefusal
    }

    /// Reads a PEM chain (leaf first) and a PEM private key.
    public static func load(certificateFile: String, keyFile: String, clientCertificates: ClientCertificates = .none) throws -> ServerTLS {
        do {
            let chain = try Certificate.bundle(file: certificateFile)
            let key = try Certificate.PrivateKey(pemEncoded: try String(contentsOfFile: keyFile, encoding: .utf8))
            guard key.publicKey == chain[0].publicKey else {
                throw IdentityError(.malformedCertificate, "\(keyFile) is not the key of the first certificate in \(certificateFile)")
            }
            return ServerTLS(certificateChain: chain, privateKey: key, clientCertificates: clientCertificates)
        } catch let error as IdentityError {
            throw error
        } catch {
            throw IdentityError(.malformedCertificate, "cannot load the TLS certificate or key: \(error)")
        }
    }

    func channelConfiguration(logger: Logger) throws -> TLSChannelConfiguration {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try certificateChain.map { .certificate(try NIOSSLCertificate(bytes: $0.serializeAsPEM().derBytes, format: .der)) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(privateKey.serializeAsPEM().pemString.utf8), format: .pem)))
        configuration.minimumTLSVersion = .tlsv13
        configuration.maximumTLSVersion = .tlsv13
        configuration.applicationProtocols = ["http/1.1"]
        guard let trust = clientCertificates.trust else { return TLSChannelConfiguration(tlsConfiguration: configuration) }
        if case .required = clientCertificates {
            configuration.certificateVerification = .noHostnameVerification
        } else {
            configuration.certificateVerification = .optionalVerification
        }
        // Roots are named in the CertificateRequest; the chain itself is verified below.
        configuration.trustRoots = .certificates(try trust.roots.map { try NIOSSLCertificate(bytes: $0.serializeAsPEM().derBytes, format: .der) })
        let onRefusal = self.onRefusal
        return TLSChannelConfiguration(
            tlsConfiguration: configuration,
            customAsyncVerificationCallback: { presented in
                do {
                    let chain = try presented.map { try Certificate(derEncoded: try $0.toDERBytes()) }
                    _ = try await trust.verify(chain, role: .client, now: Date())
                    return .certificateVerified
                } catch {
                    let reason = error as? IdentityError ?? IdentityError(.malformedCertificate, "\(error)")
                    logger.warning("client certificate refused", metadata: ["reason": "\(reason)"])
                    onRefusal?(reason)
                    return .failed
                }
            })
    }
}

extension ServerTLS {
    /// Records every refused client certificate in the service's audit log, with the reason the
    /// TLS alert itself cannot carry.
    public mutating func auditRefusals(to service: ATHService) {
        let refusals = service.refusals
        onRefusal = { reason in
            refusals.record(
                AuditEvent(
                    at: Int64(Date().timeIntervalSince1970), event: "tls.client_certificate", actor: "-", subject: "-",
                    outcome: reason.kind.rawValue, detail: reason.message))
        }
    }
}
