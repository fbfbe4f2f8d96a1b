import Foundation

/// Unpadded base64url (RFC 4648 section 5): the one binary-to-text encoding of the protocol.
public enum Base64URL {
    public static func encode(_ bytes: some DataProtocol) -> String {
        String(decoding: encodedBytes(bytes), as: UTF8.self)
    }

    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// The encoding as bytes, written straight from the alphabet: the proof check compares a
    /// MAC in this form on every request, and Foundation's encoder (standard alphabet, padded)
    /// needed a second pass and two more buffers.
    public static func encodedBytes(_ bytes: some DataProtocol) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count * 4 + 2) / 3)
        var (buffer, bits) = (UInt32(0), 0)
        for byte in bytes {
            buffer = buffer << 8 | UInt32(byte)
            bits += 8
            while bits >= 6 {
                bits -= 6
                out.append(alphabet[Int(buffer >> UInt32(bits) & 0x3F)])
            }
        }
        if bits > 0 { out.append(alphabet[Int(buffer << UInt32(6 - bits) & 0x3F)]) }
        return out
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
