import Foundation

/// Unpadded base64url (RFC 4648 section 5): the one binary-to-text encoding of the protocol.
public enum Base64URL {
    public static func encode(_ bytes: some DataProtocol) -> String {
        let standard = Data(bytes).base64EncodedData()
        var out = [UInt8]()
        out.reserveCapacity(standard.count)
        for b in standard {
            switch b {
            case UInt8(ascii: "+"): out.append(UInt8(ascii: "-"))
            case UInt8(ascii: "/"): out.append(UInt8(ascii: "_"))
            case UInt8(ascii: "="): break
            default: out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Strict decoding: padding, whitespace and the standard alphabet are refused, so that one
    /// value has one spelling.
    public static func decode(_ text: String) -> Data? {
        var standard = [UInt8]()
        standard.reserveCapacity(text.utf8.count + 3)
        for b in text.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                standard.append(b)
            case UInt8(ascii: "-"): standard.append(UInt8(ascii: "+"))
            case UInt8(ascii: "_"): standard.append(UInt8(ascii: "/"))
            default: return nil
            }
        }
        switch standard.count % 4 {
        case 0: break
        case 2: standard += "==".utf8
        case 3: standard += "=".utf8
        default: return nil
        }
        return Data(base64Encoded: Data(standard))
    }
}
