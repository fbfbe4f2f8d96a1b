import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `Foundation.Process` for the tests, started with `posix_spawn`, with the part of `Process`'s
/// interface they use, so that they read alike.
///
/// On Linux, Foundation's `Process.run()` closes the child's inherited descriptors by listing
/// /proc/self/fd, and copies the whole 256-byte name field of each directory entry, however short
/// (swift-corelibs-foundation#5472, in Swift 6.3.1): now and then the copy runs past the end of a
/// mapped page, and the whole test run dies of SIGSEGV, more often the more descriptors the test
/// process holds (its servers' sockets). Here the child closes every descriptor above 2 by
/// `posix_spawn_file_actions_addclosefrom_np` instead.
public final class ChildProcess: @unchecked Sendable {
    public enum TerminationReason: Sendable { case exit, uncaughtSignal }

    // Set before `run`, as with `Process`.
    public var executableURL: URL?
    public var arguments: [String]?
    /// nil: this process's environment.
    public var environment: [String: String]?
    public var currentDirectoryURL: URL?
    /// A `Pipe`, a `FileHandle` (`FileHandle.nullDevice` included) or nil (/dev/null); by default
    /// this process's own.
    public var standardInput: Any? = FileHandle.standardInput
    public var standardOutput: Any? = FileHandle.standardOutput
    public var standardError: Any? = FileHandle.standardError

    public private(set) var processIdentifier: Int32 = 0
    /// The wait status once the child was reaped.
    private let reaped = Mutex<Int32?>(nil)

    public init() {}

    public func run() throws {
        guard let path = executableURL?.path else { throw POSIXError(.ENOENT) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var opened: [Int32] = []
        defer { for fd in opened { close(fd) } }
        func descriptor(_ stream: Any?, forReading: Bool) throws -> Int32 {
            switch stream {
            case let pipe as Pipe:
                return forReading ? pipe.fileHandleForReading.fileDescriptor : pipe.fileHandleForWriting.fileDescriptor
            case let handle as FileHandle where handle !== FileHandle.nullDevice:
                return handle.fileDescriptor
            default:
                let fd = open("/dev/null", O_RDWR | O_CLOEXEC)
                guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
                opened.append(fd)
                return fd
            }
        }
        let streams = [
            (try descriptor(standardInput, forReading: true), STDIN_FILENO),
            (try descriptor(standardOutput, forReading: false), STDOUT_FILENO),
            (try descriptor(standardError, forReading: false), STDERR_FILENO),
        ]
        for (fd, target) in streams { try check(posix_spawn_file_actions_adddup2(&actions, fd, target)) }
        try check(GNUSpawn.addClosefrom(&actions, 3))
        if let directory = currentDirectoryURL?.path { try check(GNUSpawn.addChdir(&actions, directory)) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Its own process group, as `Process` does: a Ctrl-C at the terminal goes to the test run only.
        try check(posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP)))
        try check(posix_spawnattr_setpgroup(&attributes, 0))

        let argv = ([path] + (arguments ?? [])).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        let env = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in env { free(p) } }
        var pid: pid_t = 0
        try check(posix_spawn(&pid, path, &actions, &attributes, argv, env))
        processIdentifier = pid
        // The child's ends, closed here as `Process` does, so that reading gets end of file when it exits.
        if let pipe = standardInput as? Pipe { try? pipe.fileHandleForReading.close() }
        if let pipe = standardOutput as? Pipe { try? pipe.fileHandleForWriting.close() }
        if let pipe = standardError as? Pipe, standardError as AnyObject !== standardOutput as AnyObject {
            try? pipe.fileHandleForWriting.close()
        }
    }

    /// glibc's extensions (2.34 and 2.29), which Swift's Glibc module does not declare (it is
    /// built without _GNU_SOURCE), found by name.
    private enum GNUSpawn {
        typealias AddClosefrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32

        static func addClosefrom(_ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>, _ from: Int32) -> Int32 {
            guard let f = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return ENOSYS }
            return unsafeBitCast(f, to: AddClosefrom.self)(actions, from)
        }

        static func addChdir(_ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>, _ path: String) -> Int32 {
            guard let f = dlsym(nil, "posix_spawn_file_actions_addchdir_np") else { return ENOSYS }
            return path.withCString { unsafeBitCast(f, to: AddChdir.self)(actions, $0) }
        }
    }

    private func check(_ result: Int32) throws {
        guard result == 0 else { throw POSIXError(POSIXErrorCode(rawValue: result) ?? .EIO) }
    }

    /// The wait status, reaping the child if it has exited; nil while it runs.
    private func status() -> Int32? {
        reaped.withLock { reaped in
            guard reaped == nil, processIdentifier > 0 else { return reaped }
            var raw: Int32 = 0
            if waitpid(processIdentifier, &raw, WNOHANG) == processIdentifier { reaped = raw }
            return reaped
        }
    }

    public var isRunning: Bool { processIdentifier > 0 && status() == nil }

    public func waitUntilExit() {
        while isRunning { usleep(10_000) }
    }

    private var signaled: Bool { status().map { ($0 & 0x7f) != 0 && ($0 & 0x7f) != 0x7f } ?? false }

    /// The exit code, or the signal that ended it.
    public var terminationStatus: Int32 {
        guard let raw = status() else { preconditionFailure("the process is still running") }
        return signaled ? raw & 0x7f : (raw >> 8) & 0xff
    }

    public var terminationReason: TerminationReason { signaled ? .uncaughtSignal : .exit }

    public func terminate() { if processIdentifier > 0 { kill(processIdentifier, SIGTERM) } }
    public func interrupt() { if processIdentifier > 0 { kill(processIdentifier, SIGINT) } }
}
