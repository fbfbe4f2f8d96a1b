import Foundation

/// application/x-www-form-urlencoded (WHATWG URL §5.2), byte by byte: what token requests to an
/// OAuth or OpenID provider carry, their HTTP Basic credentials (RFC 6749 §2.3.1) and the
/// queries of the URLs a user's browser is sent to.
enum FormEncoding {
    /// Unreserved bytes as they are, space as `+`, every other byte percent-encoded.
    static func encode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "*"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: " "): out += "+"
            default: out += String(format: "%%%02X", byte)
            }
        }
        return out
    }

    /// `name=value&...`, each side encoded.
    static func encode(_ pairs: [(String, String)]) -> String {
        pairs.map { encode($0) + "=" + encode($1) }.joined(separator: "&")
    }

    /// `Basic base64(id:secret)`, each part form-encoded first (RFC 6749 §2.3.1).
    static func basicAuthorization(id: String, secret: String) -> String {
        "Basic " + Data((encode(id) + ":" + encode(secret)).utf8).base64EncodedString()
    }
}
