import ATHCore
import ATHStore
import ATHStoreSQLite
import Foundation
import GRDB
import Testing

/// The Act Auth account model in the SQLite store: internal ids that stay inside, external ids
/// and aliases that each name one account, keys that rotate and revoke, and duplicates that
/// write nothing.
@Suite struct AccountStoreTests {
    func freshStore() throws -> (SQLiteStore, String) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ath-accounts-\(UUID().uuidString).sqlite").path
        return (try SQLiteStore(path: path), path)
    }

    /// Several openers of one new file at once (`ath gateway` and `ath authz` started together):
    /// each finds the schema whole, none fails on a migration another applied. Without the
    /// migration lock, the gateway benchmark's two processes failed with "duplicate column name".
    @Test func storesOpenedAtOnceMigrateOnce() async throws {
        for _ in 0..<5 {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("ath-open-\(UUID().uuidString).sqlite").path
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<6 { group.addTask { _ = try SQLiteStore(path: path) } }
                try await group.waitForAll()
            }
            let store = try SQLiteStore(path: path)
            try await store.registerAccount(Account(did: "did:ath:a", kind: .user, name: "A"), key: nil)
            #expect(try await store.account(did: "did:ath:a") != nil)
        }
    }

    @Test func everyIdentifierFindsTheSameAccount() async throws {
        let (store, path) = try freshStore()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let key = PrivateKey.generate()
        try await store.registerAccount(
            Account(did: "did:ath:alice", kind: .user, name: "Alice", aliases: ["alice@example.com", "+15550100"], externalIDs: ["YWxpY2U"]),
            key: key.publicKey)
        let byDID = try #require(try await store.account(did: "did:ath:alice"))
        #expect(byDID.aliases == ["+15550100", "alice@example.com"])
        #expect(byDID.externalIDs == ["YWxpY2U"])
        #expect(try await store.account(did: "YWxpY2U") == byDID)
        #expect(try await store.account(alias: "ALICE@example.com") == byDID)  // aliases ignore case
        #expect(try await store.activeKeys(did: "YWxpY2U") == [key.publicKey])
        try await store.addExternalID("did:key:\(DID.key(key.publicKey).value.dropFirst("did:key:".count))", to: "did:ath:alice")
        #expect(try await store.account(did: DID.key(key.publicKey).value)?.did == "did:ath:alice")
        try await store.addAlias("alice", to: "YWxpY2U")
        #expect(try await store.account(alias: "alice")?.name == "Alice")
    }

    /// Internal ids exist, are unique, and match no external id; nothing outside the store sees them.
    @Test func internalIDsStayInside() async throws {
        let (store, path) = try freshStore()
        defer { try? FileManager.default.removeItem(atPath: path) }
        for i in 0..<5 { try await store.registerAccount(Account(did: "did:ath:a\(i)", kind: .agent, name: "A\(i)"), key: nil) }
        let queue = try DatabaseQueue(path: path)
        let (internalIDs, externalIDs) = try await queue.read { db in
            (try String.fetchAll(db, sql: "SELECT internal_id FROM account"), try String.fetchAll(db, sql: "SELECT value FROM external_id"))
        }
        #expect(Set(internalIDs).count == 5)
        #expect(Set(internalIDs).isDisjoint(with: externalIDs))
        let account = try #require(try await store.account(did: "did:ath:a0"))
        let encoded = String(decoding: try JSONEncoder().encode(account), as: UTF8.self)
        #expect(!internalIDs.contains { encoded.contains($0) })
    }

    @Test func duplicatesAreRefusedAndWriteNothing() async throws {
        let (store, path) = try freshStore()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try await store.registerAccount(Account(did: "did:ath:alice", kind: .user, name: "Alice", aliases: ["alice@example.com"]), key: nil)
        // Each of: the DID, an alias (in another case), an extra external id taken by Alice.
        let attempts = [
            Account(did: "did:ath:alice", kind: .user, name: "Other"),
            Account(did: "did:ath:bob", kind: .user, name: "Bob", aliases: ["bob", "Alice@Example.com"]),
            Account(did: "did:ath:bob", kind: .user, name: "Bob", externalIDs: ["did:ath:alice"]),
        ]
        for attempt in attempts {
            await #expect(throws: StoreError.self) { try await store.registerAccount(attempt, key: PrivateKey.generate().publicKey) }
            // Nothing of the refused registration remains: not Bob, not his first alias, not his key.
            #expect(try await store.account(did: "did:ath:bob") == nil)
            #expect(try await store.account(alias: "bob") == nil)
        }
        #expect(try await store.account(did: "did:ath:alice")?.name == "Alice")
        try await store.registerAccount(Account(did: "did:ath:bob", kind: .user, name: "Bob"), key: nil)
        await #expect(throws: StoreError.duplicate("alias alice@example.com is already taken")) {
            try await store.addAlias("alice@example.com", to: "did:ath:bob")
        }
        await #expect(throws: StoreError.self) { try await store.addExternalID("did:ath:alice", to: "did:ath:bob") }
        await #expect { try await store.addAlias("has space", to: "did:ath:bob") } throws: { ATHError.code($0) == .malformedMessage }
        await #expect { try await store.addExternalID("not base64url!", to: "did:ath:bob") } throws: { ATHError.code($0) == .malformedMessage }
        await #expect(throws: StoreError.notFound("account did:ath:nobody")) { try await store.addAlias("x", to: "did:ath:nobody") }
    }

    @Test func keysRotateAndRevoke() async throws {
        let (store, path) = try freshStore()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (first, second, third) = (PrivateKey.generate(), PrivateKey.generate(.edDSA), PrivateKey.generate())
        try await store.registerAccount(Account(did: "did:ath:alice", kind: .user, name: "Alice"), key: first.publicKey)
        try await store.rotateKey(did: "did:ath:alice", revoking: first.publicKey.thumbprint, to: second.publicKey)
        #expect(try await store.activeKeys(did: "did:ath:alice") == [second.publicKey])
        // Rotating away a key that is not active changes nothing, not even the new key.
        await #expect(throws: StoreError.self) {
            try await store.rotateKey(did: "did:ath:alice", revoking: first.publicKey.thumbprint, to: third.publicKey)
        }
        #expect(try await store.activeKeys(did: "did:ath:alice") == [second.publicKey])
        try await store.revokeKey(did: "did:ath:alice", kid: second.publicKey.thumbprint)
        #expect(try await store.activeKeys(did: "did:ath:alice").isEmpty)
    }

    /// A store written before the account model keeps its accounts and keys.
    @Test func earlierAccountsMigrate() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ath-migrate-\(UUID().uuidString).sqlite").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let key = PrivateKey.generate()
        let queue = try DatabaseQueue(path: path)
        try await queue.write { db in
            try db.execute(
                sql: """
                    CREATE TABLE account (did TEXT PRIMARY KEY NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, developer TEXT);
                    CREATE TABLE account_key (did TEXT NOT NULL REFERENCES account(did), kid TEXT NOT NULL, pem TEXT NOT NULL,
                        revoked_at INTEGER, PRIMARY KEY (did, kid));
                    CREATE TABLE grant_record (
                        id TEXT PRIMARY KEY NOT NULL, handshake_id TEXT NOT NULL UNIQUE, client_did TEXT NOT NULL,
                        user_did TEXT NOT NULL, credential_id TEXT NOT NULL, data TEXT NOT NULL, created_at INTEGER NOT NULL,
                        expires_at INTEGER NOT NULL, revoked_at INTEGER);
                    CREATE TABLE audit (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, event TEXT NOT NULL,
                        actor TEXT NOT NULL, subject TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL,
                        hash TEXT NOT NULL);
                    INSERT INTO account VALUES ('did:ath:bot', 'agent', 'Bot', 'Dev');
                    """)
            try db.execute(sql: "INSERT INTO account_key (did, kid, pem) VALUES ('did:ath:bot', ?, ?)", arguments: [key.publicKey.thumbprint, key.publicKey.pem])
        }
        try queue.close()
        // Replay the old migration history up to v2 on that schema, then open the store.
        let db = try DatabaseQueue(path: path)
        try await db.write { db in
            try db.execute(sql: "CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY)")
            try db.execute(sql: "INSERT INTO grdb_migrations VALUES ('v1'), ('v2-sealed-proof-keys')")
        }
        try db.close()
        let store = try SQLiteStore(path: path)
        #expect(try await store.account(did: "did:ath:bot") == Account(did: "did:ath:bot", kind: .agent, name: "Bot", developer: "Dev"))
        #expect(try await store.activeKeys(did: "did:ath:bot") == [key.publicKey])
    }
}
