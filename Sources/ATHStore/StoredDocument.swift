import ATHCore
import Foundation

/// How every backend writes a record's document (a handshake in progress with its transcript, a
/// grant, a registration): the columns a store queries are its own, the rest is this JSON.
public enum StoredDocument {
    /// The format this release writes, in each document's `_format` member. It changes only for
    /// a change an older release would misread, and then in two releases: the first reads the
    /// new format while still writing the old one, the second writes it. So during a rolling
    /// upgrade no instance writes what another cannot read (docs/OPERATIONS.md).
    public static let writtenFormat: Int64 = 1
    /// The formats this release reads; a document without `_format` predates it and is format 1.
    public static let readableFormats: ClosedRange<Int64> = 1...1
    static let formatMember = "_format"

    /// Stored documents (a handshake in progress with its transcript, a grant) are written and
    /// read with the protocol's own JSON coder: Foundation's `JSONEncoder` and `JSONDecoder` took
    /// about 15 % of an HTTP handshake's CPU, most of it on the transcript, which is a JSON tree
    /// already. Both write plain JSON, so rows written by either are read alike.
    public static func encode(_ value: some Encodable) throws -> String {
        formatted(try CanonicalJSON.bytes(of: value))
    }

    /// A handshake, whose transcript is written from the canonical bytes it keeps
    /// (`ServerHandshake.storedJSON`): the same document, without canonicalizing it again.
    public static func encode(_ handshake: ServerHandshake) throws -> String {
        formatted(try handshake.storedJSON())
    }

    private static func formatted(_ bytes: [UInt8]) -> String {
        // Every document is an object: the format goes first, without re-encoding the rest.
        guard bytes.first == UInt8(ascii: "{") else { return String(decoding: bytes, as: UTF8.self) }
        let rest = bytes.dropFirst()
        let head = "{\"\(formatMember)\":\(writtenFormat)" + (rest.first == UInt8(ascii: "}") ? "" : ",")
        return head + String(decoding: rest, as: UTF8.self)
    }

    /// A stored document that does not decode is the store's fault, never the client's. One of a
    /// newer format than this release reads says so: the instance is older than the one that
    /// wrote it, and must be upgraded. Members this release does not know are ignored.
    public static func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        let tree: JSONValue
        do {
            tree = try JSONValue.parse(Array(text.utf8))
        } catch {
            throw StoreError.corrupt("a stored \(T.self) does not decode: \(error)")
        }
        if case .object(let members) = tree, let format = members[formatMember] {
            guard case .integer(let n) = format, n >= 1 else { throw StoreError.corrupt("a stored \(T.self) has a malformed \(formatMember)") }
            guard readableFormats.contains(n) else {
                throw StoreError.corrupt(
                    "a stored \(T.self) is in format \(n), written by a newer release; this one reads formats up to \(readableFormats.upperBound): upgrade this instance"
                )
            }
        }
        do {
            return try tree.decode(T.self)
        } catch {
            throw StoreError.corrupt("a stored \(T.self) does not decode: \(error)")
        }
    }
}
