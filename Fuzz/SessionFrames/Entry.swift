import Foundation

/// libFuzzer calls this with each input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    SessionFrameFuzz.run(start.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? [])
    return 0
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func runDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// Built with `-sanitize=fuzzer -DFUZZING` (see docs/FUZZING.md): SwiftPM links an executable's
/// entry point as `<target>_main`, so that is where libFuzzer's driver takes over.
@_cdecl("FuzzSessionFrames_main")
public func fuzzingMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return runDriver(&argc, &argv, fuzzOne)
}
#else
/// In an ordinary build: runs the inputs in the files and directories given (a corpus, or a
/// crash libFuzzer wrote), so that they can be replayed without the fuzzer.
@main enum Replay {
    static func main() throws {
        var files: [URL] = []
        for path in CommandLine.arguments.dropFirst() {
            let url = URL(fileURLWithPath: path)
            if let names = try? FileManager.default.contentsOfDirectory(atPath: path) {
                files += names.sorted().map { url.appendingPathComponent($0) }
            } else {
                files.append(url)
            }
        }
        for file in files { SessionFrameFuzz.run(Array(try Data(contentsOf: file))) }
        print("replayed \(files.count) inputs")
    }
}
#endif
