/// Maps Codable types straight onto `JSONValue` and back.
///
/// Every handshake step converts typed messages to documents (to canonicalize and sign them)
/// and documents to typed messages (to read what arrived). Going through `JSONEncoder` and
/// `JSONDecoder` serializes to bytes and parses them again each way; profiles put that round
/// trip at a quarter of the server's handshake time. The tree produced here is the one the
/// round trip produced (integral floating-point values become integers, nil optionals are left
/// out), so canonical bytes and signatures do not change; the test vectors hold it to that.
enum JSONValueCoder {
    static func encode(_ value: some Encodable) throws -> JSONValue {
        try box(value, at: Path())
    }

    static func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        try unbox(T.self, from: value, at: Path())
    }

    // MARK: Encoding

    fileprivate static func box<T: Encodable>(_ value: T, at path: @autoclosure () -> Path) throws -> JSONValue {
        // Type comparisons, not `as?` casts: a failing dynamic cast costs more than the
        // encoding, and most values here are of none of these types.
        if T.self == JSONValue.self { return value as! JSONValue }
        if T.self == String.self { return .string(value as! String) }
        if T.self == Bool.self { return .bool(value as! Bool) }
        if T.self == Double.self { return try number(value as! Double, at: path()) }
        if T.self == Int.self { return .integer(Int64(value as! Int)) }
        if T.self == Int64.self { return .integer(value as! Int64) }
        let slot = Slot()
        try value.encode(to: ValueEncoder(slot: slot, path: path()))
        return slot.resolved
    }

    fileprivate static func number(_ v: Double, at path: @autoclosure () -> Path) throws -> JSONValue {
        guard v.isFinite else {
            throw EncodingError.invalidValue(v, .init(codingPath: path().keys, debugDescription: "JSON has no \(v)"))
        }
        // What a JSON parser reads back from the number's text: integral values are integers.
        if v == v.rounded(), let i = Int64(exactly: v) { return .integer(i) }
        return .number(v)
    }

    fileprivate static func integer(_ v: some BinaryInteger, at path: @autoclosure () -> Path) throws -> JSONValue {
        guard let i = Int64(exactly: v) else {
            throw EncodingError.invalidValue(v, .init(codingPath: path().keys, debugDescription: "\(v) does not fit in 64 signed bits"))
        }
        return .integer(i)
    }

    /// A container written to after it was handed out (nested containers, super encoders).
    fileprivate final class Slot {
        var single: JSONValue?
        /// In the order written; the object is built once, at the end, at its final size (a
        /// dictionary grown member by member, then mapped, was most of this coder's cost).
        var members: [(key: String, value: Pending)]?
        var elements: [Pending]?

        var resolved: JSONValue {
            if let members {
                // A key written twice keeps its last value, as a dictionary assignment would.
                return .object(Dictionary(members.lazy.map { ($0.key, $0.value.resolved) }, uniquingKeysWith: { _, last in last }))
            }
            if let elements { return .array(elements.map(\.resolved)) }
            return single ?? .object([:])
        }
    }

    fileprivate enum Pending {
        case value(JSONValue)
        case slot(Slot)

        var resolved: JSONValue {
            switch self {
            case .value(let v): v
            case .slot(let s): s.resolved
            }
        }
    }

    fileprivate struct ValueEncoder: Encoder {
        let slot: Slot
        let path: Path
        var codingPath: [any CodingKey] { path.keys }
        var userInfo: [CodingUserInfoKey: Any] { [:] }

        func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
            if slot.members == nil {
                slot.members = []
                slot.members!.reserveCapacity(16)
            }
            return KeyedEncodingContainer(KeyedEncoder<Key>(slot: slot, path: path))
        }

        func unkeyedContainer() -> any UnkeyedEncodingContainer {
            if slot.elements == nil { slot.elements = [] }
            return UnkeyedEncoder(slot: slot, path: path)
        }

        func singleValueContainer() -> any SingleValueEncodingContainer {
            SingleEncoder(slot: slot, path: path)
        }
    }

    fileprivate struct KeyedEncoder<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let slot: Slot
        let path: Path
        var codingPath: [any CodingKey] { path.keys }

        private func put(_ value: JSONValue, _ key: Key) { slot.members!.append((key.stringValue, .value(value))) }

        mutating func encodeNil(forKey key: Key) throws { put(.null, key) }
        mutating func encode(_ value: Bool, forKey key: Key) throws { put(.bool(value), key) }
        mutating func encode(_ value: String, forKey key: Key) throws { put(.string(value), key) }
        mutating func encode(_ value: Double, forKey key: Key) throws { put(try number(value, at: path.appending(key)), key) }
        mutating func encode(_ value: Float, forKey key: Key) throws {
            put(try number(Double(value), at: path.appending(key)), key)
        }
        mutating func encode(_ value: Int, forKey key: Key) throws { put(.integer(Int64(value)), key) }
        mutating func encode(_ value: Int8, forKey key: Key) throws { put(.integer(Int64(value)), key) }
        mutating func encode(_ value: Int16, forKey key: Key) throws { put(.integer(Int64(value)), key) }
        mutating func encode(_ value: Int32, forKey key: Key) throws { put(.integer(Int64(value)), key) }
        mutating func encode(_ value: Int64, forKey key: Key) throws { put(.integer(value), key) }
        mutating func encode(_ value: UInt, forKey key: Key) throws { put(try integer(value, at: path.appending(key)), key) }
        mutating func encode(_ value: UInt8, forKey key: Key) throws { put(.integer(Int64(value)), key) }
        mutating func encode(_ value: UInt16, forKey key: Key) throws { put(.integer(Int64(value)), key) }
        mutating func encode(_ value: UInt32, forKey key: Key) throws { put(.integer(Int64(value)), key) }
        mutating func encode(_ value: UInt64, forKey key: Key) throws { put(try integer(value, at: path.appending(key)), key) }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            put(try box(value, at: path.appending(key)), key)
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key)
            -> KeyedEncodingContainer<NestedKey>
        {
            ValueEncoder(slot: nested(key), path: path.appending(key)).container(keyedBy: keyType)
        }

        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            ValueEncoder(slot: nested(key), path: path.appending(key)).unkeyedContainer()
        }

        mutating func superEncoder() -> any Encoder {
            ValueEncoder(slot: nested(SuperKey.super), path: path.appending(SuperKey.super))
        }

        mutating func superEncoder(forKey key: Key) -> any Encoder {
            ValueEncoder(slot: nested(key), path: path.appending(key))
        }

        private func nested(_ key: any CodingKey) -> Slot {
            let child = Slot()
            slot.members!.append((key.stringValue, .slot(child)))
            return child
        }
    }

    fileprivate struct UnkeyedEncoder: UnkeyedEncodingContainer {
        let slot: Slot
        let path: Path
        var codingPath: [any CodingKey] { path.keys }
        var count: Int { slot.elements!.count }

        private var nextPath: Path { path.appending(IndexKey(count)) }
        private func append(_ value: JSONValue) { slot.elements!.append(.value(value)) }

        mutating func encodeNil() throws { append(.null) }
        mutating func encode(_ value: Bool) throws { append(.bool(value)) }
        mutating func encode(_ value: String) throws { append(.string(value)) }
        mutating func encode(_ value: Double) throws { append(try number(value, at: nextPath)) }
        mutating func encode(_ value: Float) throws { append(try number(Double(value), at: nextPath)) }
        mutating func encode(_ value: Int) throws { append(.integer(Int64(value))) }
        mutating func encode(_ value: Int8) throws { append(.integer(Int64(value))) }
        mutating func encode(_ value: Int16) throws { append(.integer(Int64(value))) }
        mutating func encode(_ value: Int32) throws { append(.integer(Int64(value))) }
        mutating func encode(_ value: Int64) throws { append(.integer(value)) }
        mutating func encode(_ value: UInt) throws { append(try integer(value, at: nextPath)) }
        mutating func encode(_ value: UInt8) throws { append(.integer(Int64(value))) }
        mutating func encode(_ value: UInt16) throws { append(.integer(Int64(value))) }
        mutating func encode(_ value: UInt32) throws { append(.integer(Int64(value))) }
        mutating func encode(_ value: UInt64) throws { append(try integer(value, at: nextPath)) }
        mutating func encode<T: Encodable>(_ value: T) throws { append(try box(value, at: nextPath)) }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type)
            -> KeyedEncodingContainer<NestedKey>
        {
            ValueEncoder(slot: nested(), path: nextPath).container(keyedBy: keyType)
        }

        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            ValueEncoder(slot: nested(), path: nextPath).unkeyedContainer()
        }

        mutating func superEncoder() -> any Encoder { ValueEncoder(slot: nested(), path: nextPath) }

        private func nested() -> Slot {
            let child = Slot()
            slot.elements!.append(.slot(child))
            return child
        }
    }

    fileprivate struct SingleEncoder: SingleValueEncodingContainer {
        let slot: Slot
        let path: Path
        var codingPath: [any CodingKey] { path.keys }

        private func set(_ value: JSONValue) { slot.single = value }

        mutating func encodeNil() throws { set(.null) }
        mutating func encode(_ value: Bool) throws { set(.bool(value)) }
        mutating func encode(_ value: String) throws { set(.string(value)) }
        mutating func encode(_ value: Double) throws { set(try number(value, at: path)) }
        mutating func encode(_ value: Float) throws { set(try number(Double(value), at: path)) }
        mutating func encode(_ value: Int) throws { set(.integer(Int64(value))) }
        mutating func encode(_ value: Int8) throws { set(.integer(Int64(value))) }
        mutating func encode(_ value: Int16) throws { set(.integer(Int64(value))) }
        mutating func encode(_ value: Int32) throws { set(.integer(Int64(value))) }
        mutating func encode(_ value: Int64) throws { set(.integer(value)) }
        mutating func encode(_ value: UInt) throws { set(try integer(value, at: path)) }
        mutating func encode(_ value: UInt8) throws { set(.integer(Int64(value))) }
        mutating func encode(_ value: UInt16) throws { set(.integer(Int64(value))) }
        mutating func encode(_ value: UInt32) throws { set(.integer(Int64(value))) }
        mutating func encode(_ value: UInt64) throws { set(try integer(value, at: path)) }
        mutating func encode<T: Encodable>(_ value: T) throws { set(try box(value, at: path)) }
    }

    // MARK: Decoding

    fileprivate static func unbox<T: Decodable>(_ type: T.Type, from value: JSONValue, at path: @autoclosure () -> Path) throws -> T {
        if T.self == JSONValue.self { return value as! T }
        if T.self == String.self { return try string(value, at: path()) as! T }
        if T.self == Bool.self { return try bool(value, at: path()) as! T }
        if T.self == Int.self { return try integer(Int.self, value, at: path()) as! T }
        if T.self == Int64.self { return try integer(Int64.self, value, at: path()) as! T }
        if T.self == Double.self { return try double(value, at: path()) as! T }
        return try T(from: ValueDecoder(value: value, path: path()))
    }

    fileprivate static func mismatch(_ type: Any.Type, _ value: JSONValue, at path: Path) -> DecodingError {
        if value == .null {
            return .valueNotFound(type, .init(codingPath: path.keys, debugDescription: "expected \(type), found null"))
        }
        return .typeMismatch(type, .init(codingPath: path.keys, debugDescription: "expected \(type), found \(value.kind)"))
    }

    fileprivate static func string(_ value: JSONValue, at path: @autoclosure () -> Path) throws -> String {
        guard case .string(let s) = value else { throw mismatch(String.self, value, at: path()) }
        return s
    }

    fileprivate static func bool(_ value: JSONValue, at path: @autoclosure () -> Path) throws -> Bool {
        guard case .bool(let b) = value else { throw mismatch(Bool.self, value, at: path()) }
        return b
    }

    fileprivate static func double(_ value: JSONValue, at path: @autoclosure () -> Path) throws -> Double {
        switch value {
        case .integer(let i): return Double(i)
        case .number(let d): return d
        default: throw mismatch(Double.self, value, at: path())
        }
    }

    fileprivate static func integer<I: FixedWidthInteger>(
        _ type: I.Type, _ value: JSONValue, at path: @autoclosure () -> Path
    ) throws -> I {
        // Only I-JSON's exact integers (`JSONValue.safeIntegers`): a field decoded here is then
        // safe to add to or subtract from a clock reading without overflow.
        let converted: I?
        switch value {
        case .integer(let i): converted = JSONValue.safeIntegers.contains(i) ? I(exactly: i) : nil
        case .number(let d): converted = Int64(exactly: d).flatMap { JSONValue.safeIntegers.contains($0) ? I(exactly: $0) : nil }
        default: throw mismatch(I.self, value, at: path())
        }
        guard let converted else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: path().keys, debugDescription: "number is not an integer within ±(2^53 − 1) that fits in \(I.self)"))
        }
        return converted
    }

    fileprivate struct ValueDecoder: Decoder {
        let value: JSONValue
        let path: Path
        var codingPath: [any CodingKey] { path.keys }
        var userInfo: [CodingUserInfoKey: Any] { [:] }

        func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
            guard case .object(let members) = value else { throw mismatch([String: JSONValue].self, value, at: path) }
            return KeyedDecodingContainer(KeyedDecoder<Key>(members: members, path: path))
        }

        func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
            guard case .array(let elements) = value else { throw mismatch([JSONValue].self, value, at: path) }
            return UnkeyedDecoder(elements: elements, path: path)
        }

        func singleValueContainer() throws -> any SingleValueDecodingContainer {
            SingleDecoder(value: value, path: path)
        }
    }

    fileprivate struct KeyedDecoder<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let members: [String: JSONValue]
        let path: Path
        var codingPath: [any CodingKey] { path.keys }

        var allKeys: [Key] { members.keys.compactMap(Key.init(stringValue:)) }
        func contains(_ key: Key) -> Bool { members[key.stringValue] != nil }

        private func member(_ key: Key) throws -> JSONValue {
            guard let v = members[key.stringValue] else {
                throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "no value for '\(key.stringValue)'"))
            }
            return v
        }

        func decodeNil(forKey key: Key) throws -> Bool { try member(key) == .null }
        func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try bool(member(key), at: path.appending(key)) }
        func decode(_ type: String.Type, forKey key: Key) throws -> String { try string(member(key), at: path.appending(key)) }
        func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try double(member(key), at: path.appending(key)) }
        func decode(_ type: Float.Type, forKey key: Key) throws -> Float { Float(try double(member(key), at: path.appending(key))) }
        func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try integer(type, member(key), at: path.appending(key)) }
        func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try integer(type, member(key), at: path.appending(key)) }
        func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try integer(type, member(key), at: path.appending(key)) }
        func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try integer(type, member(key), at: path.appending(key)) }
        func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try integer(type, member(key), at: path.appending(key)) }
        func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try integer(type, member(key), at: path.appending(key)) }
        func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try integer(type, member(key), at: path.appending(key)) }
        func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try integer(type, member(key), at: path.appending(key)) }
        func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try integer(type, member(key), at: path.appending(key)) }
        func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try integer(type, member(key), at: path.appending(key)) }
        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
            try unbox(type, from: member(key), at: path.appending(key))
        }

        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws
            -> KeyedDecodingContainer<NestedKey>
        {
            try ValueDecoder(value: member(key), path: path.appending(key)).container(keyedBy: type)
        }

        func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
            try ValueDecoder(value: member(key), path: path.appending(key)).unkeyedContainer()
        }

        func superDecoder() throws -> any Decoder {
            ValueDecoder(value: members[SuperKey.super.stringValue] ?? .null, path: path.appending(SuperKey.super))
        }

        func superDecoder(forKey key: Key) throws -> any Decoder {
            ValueDecoder(value: members[key.stringValue] ?? .null, path: path.appending(key))
        }
    }

    fileprivate struct UnkeyedDecoder: UnkeyedDecodingContainer {
        let elements: [JSONValue]
        let path: Path
        var codingPath: [any CodingKey] { path.keys }
        var currentIndex = 0

        init(elements: [JSONValue], path: Path) {
            self.elements = elements
            self.path = path
        }

        var count: Int? { elements.count }
        var isAtEnd: Bool { currentIndex >= elements.count }

        private mutating func next<T>(_ type: T.Type, _ read: (JSONValue, () -> Path) throws -> T) throws -> T {
            let index = currentIndex, path = self.path
            guard !isAtEnd else {
                throw DecodingError.valueNotFound(
                    type, .init(codingPath: path.appending(IndexKey(index)).keys, debugDescription: "array has no more elements"))
            }
            let result = try read(elements[currentIndex], { path.appending(IndexKey(index)) })
            currentIndex += 1
            return result
        }

        mutating func decodeNil() throws -> Bool {
            guard !isAtEnd, elements[currentIndex] == .null else { return false }
            currentIndex += 1
            return true
        }

        mutating func decode(_ type: Bool.Type) throws -> Bool { try next(type) { try bool($0, at: $1()) } }
        mutating func decode(_ type: String.Type) throws -> String { try next(type) { try string($0, at: $1()) } }
        mutating func decode(_ type: Double.Type) throws -> Double { try next(type) { try double($0, at: $1()) } }
        mutating func decode(_ type: Float.Type) throws -> Float { Float(try next(Double.self) { try double($0, at: $1()) }) }
        mutating func decode(_ type: Int.Type) throws -> Int { try next(type) { try integer(type, $0, at: $1()) } }
        mutating func decode(_ type: Int8.Type) throws -> Int8 { try next(type) { try integer(type, $0, at: $1()) } }
        mutating func decode(_ type: Int16.Type) throws -> Int16 { try next(type) { try integer(type, $0, at: $1()) } }
        mutating func decode(_ type: Int32.Type) throws -> Int32 { try next(type) { try integer(type, $0, at: $1()) } }
        mutating func decode(_ type: Int64.Type) throws -> Int64 { try next(type) { try integer(type, $0, at: $1()) } }
        mutating func decode(_ type: UInt.Type) throws -> UInt { try next(type) { try integer(type, $0, at: $1()) } }
        mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try next(type) { try integer(type, $0, at: $1()) } }
        mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try next(type) { try integer(type, $0, at: $1()) } }
        mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try next(type) { try integer(type, $0, at: $1()) } }
        mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try next(type) { try integer(type, $0, at: $1()) } }
        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try next(type) { try unbox(type, from: $0, at: $1()) } }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws
            -> KeyedDecodingContainer<NestedKey>
        {
            try nextDecoder().container(keyedBy: type)
        }

        mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
            try nextDecoder().unkeyedContainer()
        }

        mutating func superDecoder() throws -> any Decoder { try nextDecoder() }

        private mutating func nextDecoder() throws -> ValueDecoder {
            try next(ValueDecoder.self) { ValueDecoder(value: $0, path: $1()) }
        }
    }

    fileprivate struct SingleDecoder: SingleValueDecodingContainer {
        let value: JSONValue
        let path: Path
        var codingPath: [any CodingKey] { path.keys }

        func decodeNil() -> Bool { value == .null }
        func decode(_ type: Bool.Type) throws -> Bool { try bool(value, at: path) }
        func decode(_ type: String.Type) throws -> String { try string(value, at: path) }
        func decode(_ type: Double.Type) throws -> Double { try double(value, at: path) }
        func decode(_ type: Float.Type) throws -> Float { Float(try double(value, at: path)) }
        func decode(_ type: Int.Type) throws -> Int { try integer(type, value, at: path) }
        func decode(_ type: Int8.Type) throws -> Int8 { try integer(type, value, at: path) }
        func decode(_ type: Int16.Type) throws -> Int16 { try integer(type, value, at: path) }
        func decode(_ type: Int32.Type) throws -> Int32 { try integer(type, value, at: path) }
        func decode(_ type: Int64.Type) throws -> Int64 { try integer(type, value, at: path) }
        func decode(_ type: UInt.Type) throws -> UInt { try integer(type, value, at: path) }
        func decode(_ type: UInt8.Type) throws -> UInt8 { try integer(type, value, at: path) }
        func decode(_ type: UInt16.Type) throws -> UInt16 { try integer(type, value, at: path) }
        func decode(_ type: UInt32.Type) throws -> UInt32 { try integer(type, value, at: path) }
        func decode(_ type: UInt64.Type) throws -> UInt64 { try integer(type, value, at: path) }
        func decode<T: Decodable>(_ type: T.Type) throws -> T { try unbox(type, from: value, at: path) }
    }

    fileprivate struct IndexKey: CodingKey {
        let intValue: Int?
        var stringValue: String { "\(intValue!)" }
        init(_ index: Int) { intValue = index }
        init?(stringValue: String) { nil }
        init?(intValue: Int) { self.intValue = intValue }
    }

    fileprivate enum SuperKey: String, CodingKey { case `super` }

    /// Where a value sits, for error messages only: built as a chain when a container is
    /// handed out and turned into `codingPath` when asked for, instead of copying an array of
    /// keys into every nested value's decoder (a profile's largest item in this coder).
    fileprivate struct Path {
        final class Node {
            let parent: Node?
            let key: any CodingKey
            init(parent: Node?, key: any CodingKey) {
                self.parent = parent
                self.key = key
            }
        }

        var node: Node?

        init() { node = nil }
        private init(node: Node) { self.node = node }

        func appending(_ key: any CodingKey) -> Path { Path(node: Node(parent: node, key: key)) }

        var keys: [any CodingKey] {
            var keys: [any CodingKey] = []
            var node = self.node
            while let n = node {
                keys.append(n.key)
                node = n.parent
            }
            return keys.reversed()
        }
    }
}

extension JSONValue {
    /// The JSON kind, for error messages.
    var kind: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .integer, .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}
