import ATHCore
import Foundation

/// The hash-chained audit log (`AuditChain`): one gapless sequence.
public protocol AuditLog: Sendable {
    /// Appends in order, each record numbered one past the last and chained to it (`AuditChain`).
    func appendAudit(_ events: [AuditEvent]) async throws
    /// The newest `limit` records, oldest first.
    func auditEvents(limit: Int) async throws -> [AuditRecord]
    /// Up to `limit` records numbered above `sequence`, in order: the way to read the whole log.
    func auditRecords(after sequence: Int64, limit: Int) async throws -> [AuditRecord]
}
