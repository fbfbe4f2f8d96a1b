#if canImport(Glibc)
import Glibc
#endif

/// The operating system's CSPRNG, read in one call per value.
///
/// The standard library's generator, which swift-crypto's `SymmetricKey(size:)` also uses, asks
/// the kernel for 8 bytes at a time: four system calls for a 32-byte nonce, twenty for the
/// random values of one server handshake. On Linux this reads the same kernel generator through
/// /dev/urandom, kept open, once per value; anywhere it cannot, it falls back to the standard
/// library's generator, which traps rather than return weak bytes.
enum SystemRandom {
    #if os(Linux)
    private static let device: Int32 = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
    #endif

    static func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        var rest = buffer
        #if os(Linux)
        while device >= 0, !rest.isEmpty {
            let n = read(device, rest.baseAddress, rest.count)
            if n > 0 {
                rest = UnsafeMutableRawBufferPointer(rebasing: rest[n...])
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                break
            }
        }
        #endif
        var generator = SystemRandomNumberGenerator()
        for i in rest.indices { rest[i] = UInt8.random(in: .min ... .max, using: &generator) }
    }

    static func bytes(_ count: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            fill(UnsafeMutableRawBufferPointer(buffer))
            initialized = count
        }
    }
}
