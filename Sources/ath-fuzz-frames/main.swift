import ATHCore
import Crypto
import Foundation

/// The session frame decoder under libFuzzer (Fuzz/README.md). Every input is opened by a
/// stream and a datagram opener, then as an RPC payload of each kind; nothing may crash, and
/// nothing unauthenticated may open.
let sessionID = (0..<16).map(UInt8.init)
let secret = SymmetricKey(data: [UInt8](repeating: 0x11, count: 32))

func fuzzOne(_ bytes: [UInt8]) {
    for ordering in [SessionOpener.Ordering.stream, .window(64)] {
        var opener = SessionOpener(
            keys: SessionTrafficKeys(secret: secret, suite: .aes256gcm), direction: .clientToServer, sessionID: sessionID, ordering: ordering)
        if case .success = opener.open(bytes) { fatalError("an input nobody sealed opened") }
    }
    for kind in SessionFrame.Kind.allCases { _ = try? SessionRPC.Message(kind: kind, payload: bytes) }
}

#if FUZZING
    @_cdecl("LLVMFuzzerTestOneInput")
    public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
        fuzzOne(Array(UnsafeBufferPointer(start: data, count: size)))
        return 0
    }
#else
    // Without libFuzzer: replay the files given (a corpus, or crashes found earlier).
    var count = 0
    for path in CommandLine.arguments.dropFirst() {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: path).map { path + "/" + $0 }) ?? [path]
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else { continue }
            fuzzOne(Array(data))
            count += 1
        }
    }
    print("replayed \(count) inputs without a failure")
#endif
