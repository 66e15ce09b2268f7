/// Eight bytes at a time in one register, for scans over byte runs (JSON strings, SSE lines, the compressor's
/// protected spans).
public enum SWAR {
    /// 0x80 in every byte of `w` equal to `c`, 0 elsewhere (exact: no carries between bytes).
    @inlinable @inline(__always)
    public static func bytesEqual(_ w: UInt64, _ c: UInt8) -> UInt64 {
        let x = w ^ (0x0101_0101_0101_0101 &* UInt64(c))
        let low7: UInt64 = 0x7F7F_7F7F_7F7F_7F7F
        return ~(((x & low7) &+ low7) | x | low7)
    }
}
