import Foundation

/// RFC 8785 (JSON Canonicalization Scheme) serialization.
///
/// Every ATH signature covers canonical JSON, so that a peer written in another language
/// computes the same bytes from the same document without sharing our encoder's whitespace,
/// key order or escaping choices.
public enum CanonicalJSON {
    public static func bytes(_ value: JSONValue) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(512)
        try write(value, into: &out)
        return out
    }

    public static func bytes(of value: some Encodable) throws -> [UInt8] {
        try bytes(JSONValue.of(value))
    }

    static func write(_ value: JSONValue, into out: inout [UInt8]) throws {
        switch value {
        case .null: out += "null".utf8
        case .bool(let b): out += (b ? "true" : "false").utf8
        case .integer(let i):
            // I-JSON: integers beyond 2^53 lose precision in other languages' parsers. A range
            // test, not `abs(i)`, which traps for Int64.min.
            guard JSONValue.safeIntegers.contains(i) else {
                throw ATHError(.malformedMessage, "integer outside the I-JSON range")
            }
            out += String(i).utf8
        case .number(let d): out += try number(d).utf8
        case .string(let s): string(s, into: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                try write(item, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (i, member) in sorted(members).enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                string(member.key, into: &out)
                out.append(UInt8(ascii: ":"))
                try write(member.value, into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// Keys sort by their UTF-16 code units (RFC 8785 section 3.2.3). ASCII keys (all of ATH's
    /// own) sort the same by `String`'s `<`, which compares two ASCII strings' bytes at once:
    /// walking their UTF-8 views a byte at a time through `lexicographicallyPrecedes` was
    /// the larger part of canonicalizing a stored handshake (`ath bench crypto`).
    static func sorted(_ members: [String: JSONValue]) -> [(key: String, value: JSONValue)] {
        let ascii = members.keys.allSatisfy { $0.utf8.allSatisfy { $0 < 0x80 } }
        return ascii
            ? members.sorted { $0.key < $1.key }
            : members.sorted { $0.key.utf16.lexicographicallyPrecedes($1.key.utf16) }
    }

    /// Canonical bytes in which some members' places are noted.
    struct Marked {
        var bytes: [UInt8] = []
        /// Each noted member with one separating comma: removing it leaves the canonical bytes
        /// of the document without that member.
        var members: [Range<Int>] = []
        /// Each noted member's value: replacing it with another value's canonical bytes gives
        /// the canonical bytes of the document with that value.
        var values: [Range<Int>] = []

        func removingMembers() -> [UInt8] {
            var out: [UInt8] = []
            out.reserveCapacity(bytes.count)
            var from = 0
            for range in members.sorted(by: { $0.lowerBound < $1.lowerBound }) {
                out += bytes[from..<range.lowerBound]
                from = range.upperBound
            }
            out += bytes[from...]
            return out
        }

        /// The canonical bytes with the one noted value replaced by what `write` writes (`size`
        /// bytes about); nil when not exactly one value was noted, and the caller canonicalizes
        /// the whole document instead.
        func replacingValue(size: Int, _ write: (inout [UInt8]) -> Void) -> [UInt8]? {
            guard values.count == 1, let slot = values.first else { return nil }
            var out: [UInt8] = []
            out.reserveCapacity(bytes.count - slot.count + size)
            out += bytes[..<slot.lowerBound]
            write(&out)
            out += bytes[slot.upperBound...]
            return out
        }
    }

    /// The canonical bytes of `value`, noting the members of the top-level object, and of the
    /// objects directly inside it, for which `mark(parentKey, key)` holds (parentKey nil at the
    /// top). A signed message is then canonicalized once for both its signed form (the
    /// transcript) and its unsigned one (what the signature covers).
    static func marked(_ value: JSONValue, mark: (_ parent: String?, _ key: String) -> Bool) throws -> Marked {
        var out = Marked()
        out.bytes.reserveCapacity(1024)
        try writeMarking(value, parent: nil, depth: 0, mark: mark, into: &out)
        return out
    }

    private static func writeMarking(
        _ value: JSONValue, parent: String?, depth: Int, mark: (String?, String) -> Bool, into out: inout Marked
    ) throws {
        guard depth < 2, case .object(let members) = value else {
            try write(value, into: &out.bytes)
            return
        }
        out.bytes.append(UInt8(ascii: "{"))
        let sorted = sorted(members)
        for (i, member) in sorted.enumerated() {
            let start = out.bytes.count
            if i > 0 { out.bytes.append(UInt8(ascii: ",")) }
            string(member.key, into: &out.bytes)
            out.bytes.append(UInt8(ascii: ":"))
            let valueStart = out.bytes.count
            try writeMarking(member.value, parent: member.key, depth: depth + 1, mark: mark, into: &out)
            if mark(parent, member.key) {
                // A first member takes the comma after it (the next member writes it next).
                let end = out.bytes.count + (i == 0 && sorted.count > 1 ? 1 : 0)
                out.members.append(start..<end)
                out.values.append(valueStart..<out.bytes.count)
            }
        }
        out.bytes.append(UInt8(ascii: "}"))
    }

    /// ECMAScript Number.prototype.toString for finite doubles (RFC 8785 section 3.2.2.3).
    ///
    /// Swift and ECMAScript agree on the shortest round-tripping digits; only where the decimal
    /// point goes and when an exponent is used differ, so the digits are taken from Swift and
    /// laid out by the ECMAScript rules.
    public static func number(_ d: Double) throws -> String {
        guard d.isFinite else { throw ATHError(.malformedMessage, "non-finite number") }
        if d == 0 { return "0" }
        let (digits, n) = shortestDigits(abs(d))
        let k = digits.count
        let sign = d < 0 ? "-" : ""
        // The value is 0.<digits> x 10^n.
        if k <= n && n <= 21 {
            return sign + digits + String(repeating: "0", count: n - k)
        }
        if 0 < n && n <= 21 {
            return sign + digits.prefix(n) + "." + digits.dropFirst(n)
        }
        if -6 < n && n <= 0 {
            return sign + "0." + String(repeating: "0", count: -n) + digits
        }
        let exponent = n - 1
        let mantissa = k == 1 ? digits : digits.prefix(1) + "." + digits.dropFirst()
        return sign + mantissa + "e" + (exponent < 0 ? "-" : "+") + String(abs(exponent))
    }

    /// The shortest decimal digits of a positive finite double (no leading or trailing zeros)
    /// and the exponent n such that the value is 0.<digits> x 10^n.
    static func shortestDigits(_ d: Double) -> (String, Int) {
        let text = "\(d)"
        let parts = text.split(separator: "e")
        let exponent = parts.count == 2 ? Int(parts[1])! : 0
        let mantissa = parts[0].split(separator: ".", omittingEmptySubsequences: false)
        let integer = String(mantissa[0])
        let fraction = mantissa.count == 2 ? String(mantissa[1]) : ""
        var digits = Substring(integer + fraction)
        var n = integer.count + exponent
        while digits.first == "0" {
            digits.removeFirst()
            n -= 1
        }
        while digits.last == "0" { digits.removeLast() }
        return (String(digits), n)
    }

    /// UTF-8 as is; only the quote, the backslash and control characters are escaped.
    static func string(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { utf8 in
            if utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
                escape(utf8, into: &out)
            } else {
                out.append(contentsOf: utf8)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    private static func escape(_ utf8: UnsafeBufferPointer<UInt8>, into out: inout [UInt8]) {
        // Runs that need no escape are copied whole: PEM keys are long lines between newlines.
        var run = 0
        for (i, byte) in utf8.enumerated() {
            let escaped: String
            switch byte {
            case UInt8(ascii: "\""): escaped = #"\""#
            case UInt8(ascii: "\\"): escaped = #"\\"#
            case 0x08: escaped = #"\b"#
            case 0x0C: escaped = #"\f"#
            case 0x0A: escaped = #"\n"#
            case 0x0D: escaped = #"\r"#
            case 0x09: escaped = #"\t"#
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                escaped = #"\u00"# + String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]], as: UTF8.self)
            default: continue
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[run..<i]))
            out += escaped.utf8
            run = i + 1
        }
        out.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[run...]))
    }
}
