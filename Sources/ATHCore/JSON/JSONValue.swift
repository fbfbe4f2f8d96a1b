import Foundation

/// A JSON document as received, before it is mapped onto a message type.
///
/// Signatures cover the canonical form of what was actually on the wire, so a receiver must
/// canonicalize the parsed document rather than its own re-encoding of a typed message: a
/// field it does not know must still count.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// The integers every peer reads exactly (I-JSON, RFC 7493 section 2.2: ±(2^53 − 1)). The
    /// canonical form refuses the rest, and so does decoding into a message's integer field:
    /// every integer the protocol takes off the wire is within this range before any arithmetic
    /// sees it, so that sums and differences with the clock cannot overflow.
    public static let safeIntegers: ClosedRange<Int64> = -9_007_199_254_740_991...9_007_199_254_740_991

    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// Parses UTF-8 I-JSON (`JSONParser`); anything that is not a single JSON value, or that
    /// repeats a member name, is malformed.
    public static func parse(_ data: some DataProtocol) throws -> JSONValue {
        if let value = try data.withContiguousStorageIfAvailable({ try JSONParser.parse($0) }) { return value }
        return try Array(data).withUnsafeBufferPointer { try JSONParser.parse($0) }
    }

    /// Converts any Encodable value to its JSON document.
    public static func of(_ value: some Encodable) throws -> JSONValue {
        try JSONValueCoder.encode(value)
    }

    /// Decodes a typed message from this document.
    public func decode<T: Decodable>(_ type: T.Type) throws -> T {
        do {
            return try JSONValueCoder.decode(T.self, from: self)
        } catch let error as DecodingError {
            throw ATHError(.malformedMessage, "message does not match \(T.self): \(Self.describe(error))")
        }
    }

    static func describe(_ error: DecodingError) -> String {
        switch error {
        case .keyNotFound(let key, _): return "missing field '\(key.stringValue)'"
        case .typeMismatch(_, let ctx), .valueNotFound(_, let ctx), .dataCorrupted(let ctx):
            let path = ctx.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? ctx.debugDescription : "bad field '\(path)'"
        @unknown default: return "undecodable"
        }
    }
}

extension JSONValue: Codable {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        // Most common kinds first: every failed attempt costs a thrown DecodingError.
        if c.decodeNil() {
            self = .null
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let o = try? c.decode([String: JSONValue].self) {
            self = .object(o)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else if let i = try? c.decode(Int64.self) {
            self = .integer(i)
        } else if let d = try? c.decode(Double.self) {
            self = .number(d)
        } else {
            self = .bool(try c.decode(Bool.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .integer(let i): try c.encode(i)
        case .number(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByDictionaryLiteral, ExpressibleByArrayLiteral, ExpressibleByFloatLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .integer(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
}
