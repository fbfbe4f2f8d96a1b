import ATHCore
import Foundation

/// How every backend writes a record's document (a handshake in progress with its transcript, a
/// grant, a registration): the columns a store queries are its own, the rest is this JSON.
public enum StoredDocument {
    /// Stored documents (a handshake in progress with its transcript, a grant) are written and
    /// read with the protocol's own JSON coder: Foundation's `JSONEncoder` and `JSONDecoder` took
    /// about 15 % of an HTTP handshake's CPU, most of it on the transcript, which is a JSON tree
    /// already. Both write plain JSON, so rows written by either are read alike.
    public static func encode(_ value: some Encodable) throws -> String {
        String(decoding: try CanonicalJSON.bytes(of: value), as: UTF8.self)
    }

    /// A stored document that does not decode is the store's fault, never the client's.
    public static func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        do {
            return try JSONValue.parse(Array(text.utf8)).decode(T.self)
        } catch {
            throw StoreError.corrupt("a stored \(T.self) does not decode: \(error)")
        }
    }
}
