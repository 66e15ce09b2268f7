import NIOCore

/// One server-sent event as it appeared on the wire.
public struct SSEEvent: Sendable {
    /// The whole event, its terminating blank line included: forwarding `raw` reproduces the input exactly.
    public var raw: ByteBuffer
    /// The `data` field's value (several `data:` lines joined by `\n`), or nil when the event has no data.
    public var data: ByteBuffer?
    /// Where `data` starts inside `raw`, when it came from a single `data:` line (so it can be spliced in place).
    public var dataOffset: Int?
}

/// Splits a byte stream into server-sent events (WHATWG HTML, "event stream" parsing: lines end with LF, CRLF or
/// CR; an empty line ends an event). Bytes of an unfinished event are kept until the rest arrives.
public struct SSEFramer: Sendable {
    private var pending = ByteBuffer()
    /// Offset in `pending` up to which lines were already scanned for the current event.
    private var scanned = 0

    public init() {}

    /// Bytes of an unfinished event still held.
    public var bufferedBytes: Int { pending.readableBytes }

    /// Hands back the bytes of an unfinished event (the stream ended without its blank line), leaving none held.
    public mutating func drain() -> ByteBuffer {
        let rest = pending
        pending = ByteBuffer()
        scanned = 0
        return rest
    }

    /// Feeds the next chunk; returns the events completed by it, in order.
    public mutating func feed(_ chunk: ByteBuffer) -> [SSEEvent] {
        var chunk = chunk
        if pending.readableBytes == 0 {
            pending = chunk
        } else {
            pending.writeBuffer(&chunk)
        }
        var events: [SSEEvent] = []
        while let event = nextEvent() { events.append(event) }
        if pending.readableBytes == 0 {
            pending = ByteBuffer()
            scanned = 0
        }
        return events
    }

    private mutating func nextEvent() -> SSEEvent? {
        let start = scanned
        let (length, resume): (Int?, Int) = pending.withUnsafeReadableBytes { p in
            var i = start
            var lineStart = i
            while true {
                i = Self.lineBreak(p, from: i)
                if i == p.count { break }
                let c = p[i]
                var next = i + 1
                if c == UInt8(ascii: "\r") {
                    if next == p.count { break }  // a CR at the end may be the start of CRLF: wait
                    if p[next] == UInt8(ascii: "\n") { next += 1 }
                }
                if i == lineStart { return (next, 0) }  // empty line: the event ends here
                i = next
                lineStart = next
            }
            return (nil, lineStart)
        }
        scanned = resume
        guard let length else { return nil }
        let raw = pending.readSlice(length: length)!
        let (data, offset) = Self.data(of: raw)
        return SSEEvent(raw: raw, data: data, dataOffset: offset)
    }

    /// The event's data: `data:` field values (one leading space removed), joined by LF.
    static func data(of raw: ByteBuffer) -> (ByteBuffer?, Int?) {
        var result: ByteBuffer?
        var offset: Int?
        var lines = 0
        raw.withUnsafeReadableBytes { p in
            var lineStart = 0
            var i = 0
            while i < p.count {
                i = Self.lineBreak(p, from: i)
                if i == p.count { break }
                let c = p[i]
                // The line is p[lineStart..<i]: a `data` field is "data" alone or "data:" then the value.
                if i - lineStart >= 4 && p[lineStart] == UInt8(ascii: "d") && p[lineStart + 1] == UInt8(ascii: "a")
                    && p[lineStart + 2] == UInt8(ascii: "t") && p[lineStart + 3] == UInt8(ascii: "a")
                {
                    var valueStart = lineStart + 4
                    if valueStart == i || p[valueStart] == UInt8(ascii: ":") {
                        if valueStart < i { valueStart += 1 }
                        if valueStart < i && p[valueStart] == UInt8(ascii: " ") { valueStart += 1 }
                        let value = raw.getSlice(at: raw.readerIndex + valueStart, length: i - valueStart)!
                        lines += 1
                        if result == nil {
                            offset = valueStart
                            result = value
                        } else {
                            result!.writeInteger(UInt8(ascii: "\n"))
                            result!.writeImmutableBuffer(value)
                        }
                    }
                }
                if c == UInt8(ascii: "\r") && i + 1 < p.count && p[i + 1] == UInt8(ascii: "\n") { i += 1 }
                lineStart = i + 1
                i += 1
            }
        }
        return (result, lines == 1 ? offset : nil)
    }

    /// Where the first CR or LF of `p` from `from` on is, or `p.count`: eight bytes at a time, since an event's
    /// lines are mostly long JSON chunks.
    @inline(__always)
    static func lineBreak(_ p: UnsafeRawBufferPointer, from: Int) -> Int {
        var i = from
        let n = p.count
        if let base = p.baseAddress, n >= 8 {
            while i <= n - 8 {
                let w = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                let hit = SWAR.bytesEqual(w, 0x0A) | SWAR.bytesEqual(w, 0x0D)
                if hit != 0 { return i + hit.trailingZeroBitCount &>> 3 }
                i += 8
            }
        }
        while i < n {
            let c = p[i]
            if c == UInt8(ascii: "\n") || c == UInt8(ascii: "\r") { return i }
            i += 1
        }
        return n
    }
}
