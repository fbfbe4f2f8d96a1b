import Foundation

/// Unpadded base64url (RFC 4648 section 5): the one binary-to-text encoding of the protocol.
public enum Base64URL {
    public static func encode(_ bytes: some DataProtocol) -> String {
        String(decoding: encodedBytes(bytes), as: UTF8.self)
    }

    /// The alphabet as a literal in the binary: no array to set up or look after.
    private static var alphabet: StaticString { "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" }

    /// The length of the encoding of `count` bytes.
    public static func encodedLength(_ count: Int) -> Int { (count * 4 + 2) / 3 }

    /// The encoding as bytes, written straight from the alphabet: the proof check compares a
    /// MAC in this form on every request, and Foundation's encoder (standard alphabet, padded)
    /// needed a second pass and two more buffers.
    public static func encodedBytes(_ bytes: some DataProtocol) -> [UInt8] {
        if let encoded = bytes.withContiguousStorageIfAvailable({ encodedBytes(contiguous: UnsafeRawBufferPointer($0)) }) { return encoded }
        return Array(bytes).withUnsafeBytes { encodedBytes(contiguous: $0) }
    }

    private static func encodedBytes(contiguous input: UnsafeRawBufferPointer) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: encodedLength(input.count)) { out, written in written = encode(input, into: out) }
    }

    /// The encoding in a temporary buffer (on the stack when small), for a comparison that
    /// needs no copy to outlive it: the proof check's MAC.
    public static func withEncoded<R>(_ input: UnsafeRawBufferPointer, _ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: encodedLength(input.count)) { out in
            let written = encode(input, into: out)
            return try body(UnsafeBufferPointer(rebasing: out[..<written]))
        }
    }

    /// Writes the encoding of `input` at the start of `out` (room for `encodedLength`); returns
    /// how many bytes it wrote.
    private static func encode(_ input: UnsafeRawBufferPointer, into out: UnsafeMutableBufferPointer<UInt8>) -> Int {
        let alphabet = Self.alphabet.utf8Start
        var (i, o) = (0, 0)
        // Each group of up to 3 bytes becomes up to 4 characters; a final group of 1 or 2
        // bytes gives 2 or 3 (no padding).
        while i < input.count {
            let group = min(3, input.count - i)
            var n = UInt32(0)
            for k in 0..<3 { n = n << 8 | (k < group ? UInt32(input[i + k]) : 0) }
            for k in 0...group { out[o + k] = alphabet[Int(n >> UInt32(18 - 6 * k) & 0x3F)] }
            (i, o) = (i + group, o + group + 1)
        }
        return o
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
