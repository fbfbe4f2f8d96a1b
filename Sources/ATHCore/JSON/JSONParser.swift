/// A strict I-JSON (RFC 7493) parser for what arrives on the wire.
///
/// Signatures cover the canonical form (RFC 8785) of the parsed document, and RFC 8785 assumes
/// I-JSON: no duplicate member names, no lone surrogates, numbers that fit a double. Foundation's
/// `JSONDecoder` keeps the first of two duplicate members where other languages keep the last,
/// so the same bytes would canonicalize differently at two peers; this parser refuses them. It
/// also builds the tree in one pass, without the thrown errors a `Decodable` tree costs.
enum JSONParser {
    static let maxDepth = 64

    static func parse(_ bytes: UnsafeBufferPointer<UInt8>) throws -> JSONValue {
        var reader = Reader(bytes: bytes)
        reader.skipWhitespace()
        let value = try reader.value(depth: 0)
        reader.skipWhitespace()
        guard reader.atEnd else { throw reader.error("text after the JSON value") }
        return value
    }

    struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        var at = 0

        var atEnd: Bool { at >= bytes.count }
        var peek: UInt8? { at < bytes.count ? bytes[at] : nil }

        func error(_ what: String) -> ATHError {
            ATHError(.malformedMessage, "body is not valid JSON: \(what) at byte \(at)")
        }

        mutating func skipWhitespace() {
            while let b = peek, b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 { at += 1 }
        }

        mutating func expect(_ literal: StaticString, _ value: JSONValue) throws -> JSONValue {
            let count = literal.utf8CodeUnitCount
            guard at + count <= bytes.count,
                UnsafeBufferPointer(start: literal.utf8Start, count: count).elementsEqual(bytes[at..<at + count])
            else { throw error("unknown literal") }
            at += count
            return value
        }

        mutating func value(depth: Int) throws -> JSONValue {
            guard depth < JSONParser.maxDepth else { throw error("nesting deeper than \(JSONParser.maxDepth)") }
            guard let first = peek else { throw error("unexpected end") }
            switch first {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): return try expect("true", .bool(true))
            case UInt8(ascii: "f"): return try expect("false", .bool(false))
            case UInt8(ascii: "n"): return try expect("null", .null)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
            default: throw error("unexpected character")
            }
        }

        mutating func object(depth: Int) throws -> JSONValue {
            at += 1
            var members: [String: JSONValue] = Dictionary(minimumCapacity: 8)
            skipWhitespace()
            if peek == UInt8(ascii: "}") {
                at += 1
                return .object(members)
            }
            while true {
                skipWhitespace()
                guard peek == UInt8(ascii: "\"") else { throw error("expected a member name") }
                let key = try string()
                skipWhitespace()
                guard peek == UInt8(ascii: ":") else { throw error("expected ':'") }
                at += 1
                skipWhitespace()
                let value = try value(depth: depth + 1)
                guard members.updateValue(value, forKey: key) == nil else {
                    throw error("duplicate member '\(key.prefix(64))'")
                }
                skipWhitespace()
                switch peek {
                case UInt8(ascii: ","): at += 1
                case UInt8(ascii: "}"):
                    at += 1
                    return .object(members)
                default: throw error("expected ',' or '}'")
                }
            }
        }

        mutating func array(depth: Int) throws -> JSONValue {
            at += 1
            var elements: [JSONValue] = []
            skipWhitespace()
            if peek == UInt8(ascii: "]") {
                at += 1
                return .array(elements)
            }
            while true {
                skipWhitespace()
                elements.append(try value(depth: depth + 1))
                skipWhitespace()
                switch peek {
                case UInt8(ascii: ","): at += 1
                case UInt8(ascii: "]"):
                    at += 1
                    return .array(elements)
                default: throw error("expected ',' or ']'")
                }
            }
        }

        mutating func string() throws -> String {
            at += 1
            let start = at
            // Fast path: no escapes, so the bytes are the string (validated as UTF-8 below).
            var ascii = true
            while let b = peek, b != UInt8(ascii: "\""), b != UInt8(ascii: "\\") {
                guard b >= 0x20 else { throw error("control character in a string") }
                ascii = ascii && b < 0x80
                at += 1
            }
            guard let stop = peek else { throw error("unterminated string") }
            if stop == UInt8(ascii: "\"") {
                at += 1
                // ASCII is valid UTF-8 as it stands: no validation to run (nearly every string
                // of the protocol: identifiers, base64url, DIDs).
                if ascii { return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<at - 1]), as: UTF8.self) }
                return try utf8(bytes[start..<at - 1])
            }
            var out = Array(bytes[start..<at])
            while true {
                guard let b = peek else { throw error("unterminated string") }
                at += 1
                switch b {
                case UInt8(ascii: "\""): return try utf8(out[...])
                case UInt8(ascii: "\\"): try escape(into: &out)
                case 0..<0x20: throw error("control character in a string")
                default: out.append(b)
                }
            }
        }

        func utf8(_ slice: some Collection<UInt8>) throws -> String {
            guard let s = String(validating: slice, as: UTF8.self) else { throw error("string is not UTF-8") }
            return s
        }

        mutating func escape(into out: inout [UInt8]) throws {
            guard let b = peek else { throw error("unterminated escape") }
            at += 1
            switch b {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(b)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if (0xD800..<0xDC00).contains(scalar) {
                    // I-JSON: a high surrogate must be followed by an escaped low one.
                    guard peek == UInt8(ascii: "\\"), at + 1 < bytes.count, bytes[at + 1] == UInt8(ascii: "u") else {
                        throw error("lone surrogate")
                    }
                    at += 2
                    let low = try hex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw error("lone surrogate") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..<0xE000).contains(scalar) {
                    throw error("lone surrogate")
                }
                out += String(Character(Unicode.Scalar(scalar)!)).utf8
            default: throw error("unknown escape")
            }
        }

        mutating func hex4() throws -> UInt32 {
            guard at + 4 <= bytes.count else { throw error("short \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let b = bytes[at]
                let digit: UInt8
                switch b {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = b - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = b - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = b - UInt8(ascii: "A") + 10
                default: throw error("bad \\u escape")
                }
                v = v << 4 | UInt32(digit)
                at += 1
            }
            return v
        }

        /// RFC 8259 number grammar; integral values that fit are integers, as a JSON number
        /// read back by `JSONValueCoder` would be.
        mutating func number() throws -> JSONValue {
            let start = at
            var integral = true
            if peek == UInt8(ascii: "-") { at += 1 }
            if peek == UInt8(ascii: "0") {
                at += 1
            } else {
                guard try digits() > 0 else { throw error("bad number") }
            }
            if peek == UInt8(ascii: ".") {
                at += 1
                integral = false
                guard try digits() > 0 else { throw error("bad number") }
            }
            if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
                at += 1
                integral = false
                if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { at += 1 }
                guard try digits() > 0 else { throw error("bad number") }
            }
            let text = String(decoding: bytes[start..<at], as: UTF8.self)
            if integral, let i = Int64(text) { return .integer(i) }
            guard let d = Double(text), d.isFinite else { throw error("number out of range") }
            if d == d.rounded(), let i = Int64(exactly: d) { return .integer(i) }
            return .number(d)
        }

        mutating func digits() throws -> Int {
            let start = at
            while let b = peek, b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") { at += 1 }
            return at - start
        }
    }
}
