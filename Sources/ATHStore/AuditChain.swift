import ATHCore
import Crypto
import Foundation

/// One decision worth keeping: who did what to which subject, and how it ended.
public struct AuditEvent: Codable, Sendable, Equatable {
    public var at: Int64
    public var event: String
    public var actor: String
    public var subject: String
    public var outcome: String
    public var detail: String

    public init(at: Int64, event: String, actor: String, subject: String, outcome: String, detail: String = "") {
        self.at = at
        self.event = event
        self.actor = actor
        self.subject = subject
        self.outcome = outcome
        self.detail = detail
    }
}

/// An audit event as stored: numbered and chained to the one before by SHA-256.
public struct AuditRecord: Codable, Sendable, Equatable {
    public var sequence: Int64
    public var event: AuditEvent
    public var hash: String

    public init(sequence: Int64, event: AuditEvent, hash: String) {
        self.sequence = sequence
        self.event = event
        self.hash = hash
    }
}

/// The audit log's tamper evidence. Record n carries SHA-256(hash of record n-1, a newline, the
/// canonical JSON of event n), record 1 chaining to the empty string, and records are numbered
/// without gaps. Changing, removing or reordering a record breaks every hash after it; what a chain
/// alone cannot show is the loss of its newest records, so an operator keeps an anchor (a
/// sequence number and its hash, printed by `ath audit verify`) and checks later runs against it.
/// Every store appends through `AuditChain.link`, so the rule lives in one place.
public enum AuditChain {
    /// The hash of `event` following a record whose hash is `previous` ("" for the first).
    public static func hash(previous: String, event: AuditEvent) throws -> String {
        var input = Array(previous.utf8)
        input.append(0x0A)
        input += try CanonicalJSON.bytes(of: event)
        return Base64URL.encode(Data(SHA256.hash(data: input)))
    }

    /// Numbers and hashes `events` to follow `last` (nil for an empty log).
    public static func link(_ events: [AuditEvent], after last: (sequence: Int64, hash: String)?) throws -> [AuditRecord] {
        var (sequence, previous) = last ?? (0, "")
        return try events.map { event in
            sequence += 1
            previous = try hash(previous: previous, event: event)
            return AuditRecord(sequence: sequence, event: event, hash: previous)
        }
    }

    /// Where a check of the chain stopped.
    public struct Verification: Codable, Sendable, Equatable {
        /// Records read and found in order.
        public var verified: Int64
        /// The last good record's number and hash: the anchor to keep.
        public var headSequence: Int64
        public var headHash: String
        /// The first record that does not follow from the one before (or is missing), if any.
        public var brokenAt: Int64?
        public var problem: String?

        public var intact: Bool { brokenAt == nil }

        enum CodingKeys: String, CodingKey {
            case verified, problem, intact
            case headSequence = "head_sequence"
            case headHash = "head_hash"
            case brokenAt = "broken_at"
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            verified = try c.decode(Int64.self, forKey: .verified)
            headSequence = try c.decode(Int64.self, forKey: .headSequence)
            headHash = try c.decode(String.self, forKey: .headHash)
            brokenAt = try c.decodeIfPresent(Int64.self, forKey: .brokenAt)
            problem = try c.decodeIfPresent(String.self, forKey: .problem)
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(verified, forKey: .verified)
            try c.encode(headSequence, forKey: .headSequence)
            try c.encode(headHash, forKey: .headHash)
            try c.encodeIfPresent(brokenAt, forKey: .brokenAt)
            try c.encodeIfPresent(problem, forKey: .problem)
            try c.encode(intact, forKey: .intact)
        }

        init() {
            verified = 0
            headSequence = 0
            headHash = ""
        }
    }

    /// A check fed one record at a time, so a log of any length is verified in pages.
    public struct Verifier: Sendable {
        public private(set) var result = Verification()
        /// The anchor to meet on the way: the record with this number must have this hash.
        let anchor: (sequence: Int64, hash: String)?

        public init(anchor: (sequence: Int64, hash: String)? = nil) {
            self.anchor = anchor
        }

        /// False once the chain is broken; later records are then not looked at.
        public mutating func check(_ record: AuditRecord) throws -> Bool {
            guard result.intact else { return false }
            let expected = result.headSequence + 1
            guard record.sequence == expected else {
                return fail(at: expected, "record \(expected) is missing (the next one is \(record.sequence))")
            }
            guard try AuditChain.hash(previous: result.headHash, event: record.event) == record.hash else {
                return fail(at: record.sequence, "record \(record.sequence) does not match its hash: it or the one before was changed")
            }
            if let anchor, anchor.sequence == record.sequence, anchor.hash != record.hash {
                return fail(at: record.sequence, "record \(record.sequence) no longer has the anchored hash: the log was rewritten")
            }
            result.verified += 1
            result.headSequence = record.sequence
            result.headHash = record.hash
            return true
        }

        /// Ends the check: an anchor beyond the last record means records were cut off the end.
        public mutating func finish() -> Verification {
            if result.intact, let anchor, anchor.sequence > result.headSequence {
                _ = fail(at: result.headSequence + 1, "the log ends at record \(result.headSequence), before the anchor \(anchor.sequence): records were removed")
            }
            return result
        }

        private mutating func fail(at sequence: Int64, _ problem: String) -> Bool {
            result.brokenAt = sequence
            result.problem = problem
            return false
        }
    }

    /// Reads the whole log from `store` in pages and checks it.
    public static func verify(_ store: any AuditLog, anchor: (sequence: Int64, hash: String)? = nil, pageSize: Int = 5_000) async throws
        -> Verification
    {
        var verifier = Verifier(anchor: anchor)
        var after: Int64 = 0
        while true {
            let page = try await store.auditRecords(after: after, limit: pageSize)
            for record in page where try !verifier.check(record) { return verifier.finish() }
            guard let last = page.last, page.count == pageSize else { break }
            after = last.sequence
        }
        return verifier.finish()
    }
}
