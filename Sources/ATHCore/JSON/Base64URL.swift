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

    /// Strict decoding: padding, whitespace, the standard alphabet and unused bits that are not
    /// zero are refused, so that one value has one spelling.
    public static func decode(_ text: String) -> Data? {
        var text = text
        return text.withUTF8 { decode(utf8: $0) }
    }

    /// Whether `byte` is one of the 64 characters (no padding).
    public static func isAlphabet(_ byte: UInt8) -> Bool { sextets[Int(byte)] != 0xFF }

    /// Each byte's 6-bit value, 0xFF outside the alphabet.
    private static let sextets: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (value, c) in UnsafeBufferPointer(start: alphabet.utf8Start, count: alphabet.utf8CodeUnitCount).enumerated() {
            table[Int(c)] = UInt8(value)
        }
        return table
    }()

    /// Decoded here in one pass: translating to the standard alphabet for Foundation's decoder
    /// cost two copies and a second pass, on every signature, nonce and token part read.
    static func decode(utf8 input: UnsafeBufferPointer<UInt8>) -> Data? {
        let n = input.count
        guard n % 4 != 1 else { return nil }
        var out = Data(count: n / 4 * 3 + max(0, n % 4 - 1))
        let ok = out.withUnsafeMutableBytes { (buffer: UnsafeMutableRawBufferPointer) -> Bool in
            sextets.withUnsafeBufferPointer { table in
                var o = 0, i = 0
                var bad: UInt8 = 0
                while i + 4 <= n {
                    let a = table[Int(input[i])], b = table[Int(input[i + 1])], c = table[Int(input[i + 2])], d = table[Int(input[i + 3])]
                    bad |= (a | b | c | d) & 0xC0
                    let v = UInt32(a & 0x3F) << 18 | UInt32(b & 0x3F) << 12 | UInt32(c & 0x3F) << 6 | UInt32(d & 0x3F)
                    buffer[o] = UInt8(truncatingIfNeeded: v >> 16)
                    buffer[o + 1] = UInt8(truncatingIfNeeded: v >> 8)
                    buffer[o + 2] = UInt8(truncatingIfNeeded: v)
                    o += 3
                    i += 4
                }
                switch n - i {
                case 2:
                    let a = table[Int(input[i])], b = table[Int(input[i + 1])]
                    bad |= (a | b) & 0xC0
                    // The four low bits of the last character are unused and must be zero.
                    bad |= b & 0x0F
                    buffer[o] = (a & 0x3F) << 2 | (b & 0x3F) >> 4
                case 3:
                    let a = table[Int(input[i])], b = table[Int(input[i + 1])], c = table[Int(input[i + 2])]
                    bad |= (a | b | c) & 0xC0
                    bad |= c & 0x03
                    buffer[o] = (a & 0x3F) << 2 | (b & 0x3F) >> 4
                    buffer[o + 1] = (b & 0x0F) << 4 | (c & 0x3F) >> 2
                default: break
                }
                return bad == 0
            }
        }
        return ok ? out : nil
    }
}
