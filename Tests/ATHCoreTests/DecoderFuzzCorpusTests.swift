import Foundation
import Testing
import ATHTestSupport

/// The decoders' fuzz targets (Fuzz/Decoders, docs/RELIABILITY.md) replay their committed
/// corpora without a finding, and the genuine inputs their oracles compare with pass: an oracle
/// "nothing forged verifies" proves nothing if nothing verifies at all.
@Suite struct DecoderFuzzCorpusTests {
    static let targets = ["json", "handshake", "proof", "jwt", "encoding", "pem", "der", "aic", "webhook", "session-frames", "attestation", "operations", "ticket"]

    func run(_ arguments: [String]) throws -> (Int32, String) {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("FuzzDecoders")
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, printed)
    }

    @Test(arguments: targets)
    func theCorpusReplaysCleanly(_ target: String) throws {
        let corpus = VectorTests.directory.appendingPathComponent("../../../Fuzz/Decoders/corpus/\(target)").standardizedFileURL
        let inputs = try FileManager.default.contentsOfDirectory(atPath: corpus.path)
        #expect(inputs.count >= (target == "session-frames" ? 100 : 1))
        let (status, printed) = try run([target, corpus.path])
        #expect(status == 0, "\(printed)")
        #expect(printed.contains("replayed \(inputs.count) inputs"))
    }

    @Test func theOraclesGenuineInputsPass() throws {
        let (status, printed) = try run(["--check"])
        #expect(status == 0 && printed.contains("every genuine input passes"), "\(printed)")
    }
}
