import Foundation

/// The target libFuzzer drives, named by `ATH_FUZZ_TARGET` (docs/RELIABILITY.md): one
/// instrumented build serves every decoder.
let target: DecoderFuzz = {
    let name = ProcessInfo.processInfo.environment["ATH_FUZZ_TARGET"] ?? ""
    guard let target = DecoderFuzz(rawValue: name) else {
        fatalError("set ATH_FUZZ_TARGET to one of: \(DecoderFuzz.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    return target
}()

/// libFuzzer calls this with each input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    target.run(start.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? [])
    return 0
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func runDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// Built with `-sanitize=fuzzer -DFUZZING`: SwiftPM links an executable's entry point as
/// `<target>_main`, so that is where libFuzzer's driver takes over.
@_cdecl("FuzzDecoders_main")
public func fuzzingMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    _ = Scenario.shared  // built before the first input, not timed as part of it
    var argc = argc
    var argv = argv
    return runDriver(&argc, &argv, fuzzOne)
}
#else
/// In an ordinary build: `FuzzDecoders <target> <files or directories>` replays inputs (a
/// corpus, or a crash libFuzzer wrote); `FuzzDecoders --seeds <dir>` writes each target's
/// genuine inputs to `<dir>/<target>/`.
@main enum Replay {
    static func main() throws {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments == ["--check"] {
            let failures = DecoderFuzz.genuineFailures()
            print(failures.isEmpty ? "every genuine input passes" : "genuine inputs refused: \(failures.joined(separator: ", "))")
            exit(failures.isEmpty ? 0 : 1)
        }
        if arguments.first == "--seeds", arguments.count == 2 {
            for (target, inputs) in DecoderFuzz.seeds() {
                let dir = URL(fileURLWithPath: arguments[1]).appendingPathComponent(target.rawValue)
                try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
                for (index, input) in inputs.enumerated() {
                    try Data(input).write(to: dir.appendingPathComponent("seed-\(index)"))
                }
            }
            return
        }
        guard let name = arguments.first, let target = DecoderFuzz(rawValue: name) else {
            print("usage: FuzzDecoders <\(DecoderFuzz.allCases.map(\.rawValue).joined(separator: "|"))> <inputs…> | --seeds <dir>")
            exit(2)
        }
        var files: [URL] = []
        for path in arguments.dropFirst() {
            let url = URL(fileURLWithPath: path)
            if let names = try? FileManager.default.contentsOfDirectory(atPath: path) {
                files += names.sorted().map { url.appendingPathComponent($0) }
            } else {
                files.append(url)
            }
        }
        for file in files { target.run(Array(try Data(contentsOf: file))) }
        print("replayed \(files.count) inputs")
    }
}
#endif
