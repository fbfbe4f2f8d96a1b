import Crypto
import Foundation

/// Client secrets and the v0.1 API's access tokens: 256 random bits behind a readable prefix,
/// kept by the server only as their SHA-256. A high-entropy secret needs no slow hash: nobody
/// can enumerate 2^256 candidates, and a leaked table of digests opens nothing.
public enum OpaqueSecret {
    public static func generate(prefix: String) -> String { prefix + Nonce.generate(bytes: 32) }

    /// The digest under which a secret is stored and looked up (base64url SHA-256).
    public static func digest(_ secret: String) -> String {
        Base64URL.encode(Data(SHA256.hash(data: Data(secret.utf8))))
    }

    /// Whether `secret` is the one stored as `digest`, in constant time.
    public static func matches(_ secret: String, digest: String) -> Bool {
        ConstantTime.equal(Self.digest(secret), digest)
    }
}
