import NIOCore

/// Writes the parts of a head into memory reserved once: each `ByteBuffer.write…` call checks uniqueness and
/// capacity and makes a dynamic exclusivity check of the buffer's storage (~90 instructions), and a response head
/// was written in ~30 such calls. Callers give an upper bound of what they write.
struct HeadWriter {
    private let base: UnsafeMutableRawPointer
    private(set) var count = 0
    private let limit: Int

    fileprivate init(_ out: UnsafeMutableRawBufferPointer) {
        base = out.baseAddress!
        limit = out.count
    }

    /// Checked in release builds too: a wrong bound must stop the process, never write past the buffer.
    @inline(__always)
    private mutating func reserve(_ n: Int) -> UnsafeMutableRawPointer {
        precondition(count + n <= limit, "HeadWriter: bound too small")
        let p = base + count
        count += n
        return p
    }

    @inline(__always)
    mutating func put(_ s: StaticString) {
        let n = s.utf8CodeUnitCount
        reserve(n).copyMemory(from: s.utf8Start, byteCount: n)
    }

    @inline(__always)
    mutating func put(_ b: UnsafeRawBufferPointer) {
        guard let src = b.baseAddress, b.count > 0 else { return }
        reserve(b.count).copyMemory(from: src, byteCount: b.count)
    }

    @inline(__always)
    mutating func put(_ s: String) {
        var s = s
        s.withUTF8 { put(UnsafeRawBufferPointer($0)) }
    }

    /// A field value the sidecar makes, with every control character but HTAB (``HeaderBytes/isControl(_:)``)
    /// replaced by a space: values the sidecar puts in heads (a client's model name, say) can never end a header
    /// line or start another.
    @inline(__always)
    mutating func putValue(_ s: String) {
        var s = s
        s.withUTF8 { v in
            let p = reserve(v.count).assumingMemoryBound(to: UInt8.self)
            for i in 0..<v.count {
                let b = v[i]
                p[i] = HeaderBytes.isControl(b) ? UInt8(ascii: " ") : b
            }
        }
    }

    /// A non-negative decimal integer (negative values as 0).
    @inline(__always)
    mutating func putDecimal(_ value: Int) { putDecimal(UInt(max(0, value))) }

    /// A decimal integer, with leading zeros up to `minimumDigits`.
    @inline(__always)
    mutating func putDecimal(_ value: UInt, minimumDigits: Int = 1) {
        var v = value
        var digits = 1
        var t = v
        while t >= 10 {
            t /= 10
            digits += 1
        }
        digits = max(digits, minimumDigits)
        let p = reserve(digits).assumingMemoryBound(to: UInt8.self)
        var i = digits - 1
        repeat {
            p[i] = UInt8(truncatingIfNeeded: v % 10) + UInt8(ascii: "0")
            v /= 10
            i -= 1
        } while i >= 0
    }

    /// Digits of an `Int` at most.
    static let maxDecimal = 20
}

extension ByteBuffer {
    /// Appends what `body` writes, at most `bound` bytes, in one reservation.
    @inline(__always)
    mutating func writeHead(bound: Int, _ body: (inout HeadWriter) -> Void) {
        writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { out in
            var w = HeadWriter(out)
            body(&w)
            return w.count
        }
    }
}
