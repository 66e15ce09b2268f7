/// A fast 64-bit hash of a byte run, eight bytes a step (xor, multiply, rotate) and a full avalanche at the end:
/// for keys that stand for whole texts (token-count cache keys, repeated-block detection), where the standard
/// library's SipHash (~7 instructions a byte) cost more than the work it saved. Not for hash tables exposed to
/// chosen keys without a secret `seed`.
public enum ByteHash {
    /// The hash of `bytes` (see below).
    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0, foldingCase: Bool = false) -> UInt64 {
        guard let base = bytes.baseAddress else { return hash(UnsafeRawPointer(bitPattern: 1)!, count: 0, seed: seed) }
        return hash(base, count: bytes.count, seed: seed, foldingCase: foldingCase)
    }

    /// The hash of `count` bytes at `p`. With `foldingCase`, ASCII letters hash as their lowercase (other bytes,
    /// UTF-8 included, as they are).
    public static func hash(_ p: UnsafeRawPointer, count: Int, seed: UInt64 = 0, foldingCase: Bool = false) -> UInt64 {
        let k: UInt64 = 0x9E37_79B9_7F4A_7C15
        let ones: UInt64 = 0x0101_0101_0101_0101
        @inline(__always) func word(_ w: UInt64) -> UInt64 {
            guard foldingCase else { return w }
            // Bytes in A...Z get 0x20: per byte, (c & 0x7F) + 0x3F sets the top bit from 'A' up, (c & 0x7F) + 0x25
            // from '[' up; only where the byte's own top bit is clear (ASCII).
            let low = w & (0x7F &* ones)
            let upper = (low &+ (0x3F &* ones)) & ~(low &+ (0x25 &* ones)) & ~w & (0x80 &* ones)
            return w | (upper >> 2)
        }
        var h = (seed ^ UInt64(count)) &* k
        var i = 0
        while i + 8 <= count {
            h = (h ^ word(p.loadUnaligned(fromByteOffset: i, as: UInt64.self))) &* k
            h = (h << 31) | (h >> 33)
            i += 8
        }
        var tail: UInt64 = 0
        var shift: UInt64 = 0
        while i < count {
            tail |= UInt64(p.load(fromByteOffset: i, as: UInt8.self)) << shift
            shift += 8
            i += 1
        }
        h = (h ^ word(tail)) &* k
        h ^= h >> 32
        h &*= 0xD6E8_FEB8_6659_FD93
        h ^= h >> 32
        h &*= 0xD6E8_FEB8_6659_FD93
        h ^= h >> 32
        return h
    }
}
