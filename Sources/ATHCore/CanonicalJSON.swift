import Foundation

/// RFC 8785 (JSON Canonicalization Scheme) serialization.
///
/// Every ATH signature covers canonical JSON, so that a peer written in another language
/// computes the same bytes from the same document without sharing our encoder's whitespace,
/// key order or escaping choices.
public enum CanonicalJSON {
    public static func bytes(_ value: JSONValue) throws -> [UInt8] {
        var out = ""
        try write(value, into: &out)
        return Array(out.utf8)
    }

    public static func bytes(of value: some Encodable) throws -> [UInt8] {
        try bytes(JSONValue.of(value))
    }

    private static func write(_ value: JSONValue, into out: inout String) throws {
        switch value {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .integer(let i):
            // I-JSON: integers beyond 2^53 lose precision in other languages' parsers.
            guard abs(i) <= 9_007_199_254_740_991 else {
                throw ATHError(.malformedMessage, "integer outside the I-JSON range")
            }
            out += String(i)
        case .number(let d): out += try number(d)
        case .string(let s): string(s, into: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                try write(item, into: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            // Keys sort by their UTF-16 code units (RFC 8785 section 3.2.3).
            let keys = members.keys.sorted { Array($0.utf16).lexicographicallyPrecedes(Array($1.utf16)) }
            for (i, key) in keys.enumerated() {
                if i > 0 { out += "," }
                string(key, into: &out)
                out += ":"
                try write(members[key]!, into: &out)
            }
            out += "}"
        }
    }

    /// ECMAScript Number.prototype.toString for finite doubles.
    public static func number(_ d: Double) throws -> String {
        guard d.isFinite else { throw ATHError(.malformedMessage, "non-finite number") }
        if d == 0 { return "0" }
        if d == d.rounded(), abs(d) < 1e21 {
            return String(Int64(d))
        }
        // Swift prints the shortest round-tripping digits, as ECMAScript does; only the
        // exponent notation differs ("1e-07" against "1e-7", "1e+21" alike).
        var s = "\(d)"
        if let e = s.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            let mantissa = String(s[..<e])
            var exponent = String(s[s.index(after: e)...])
            var sign = "+"
            if exponent.hasPrefix("-") {
                sign = "-"
                exponent.removeFirst()
            } else if exponent.hasPrefix("+") {
                exponent.removeFirst()
            }
            while exponent.count > 1 && exponent.hasPrefix("0") { exponent.removeFirst() }
            let m = mantissa.hasSuffix(".0") ? String(mantissa.dropLast(2)) : mantissa
            s = m + "e" + sign + exponent
        } else if abs(d) < 1e-6 {
            s = String(format: "%g", d)
        }
        return s
    }

    private static func string(_ s: String, into out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}
