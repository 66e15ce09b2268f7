import Wire

/// Lossless rewrites: what the model reads is unchanged, only the bytes (and tokens) that carry nothing go.
public enum Lossless {
    /// Minifies JSON found in the text: the whole text when it is one JSON value, the inside of fenced ```json
    /// blocks, and JSON objects or arrays that start a line and span several lines. Whitespace outside strings
    /// goes; strings, numbers, key order and escapes stay byte-identical. Returns the new text and where the
    /// minified values are in it (later steps leave those bytes alone), or nil when nothing changes.
    public static func minifyJSON(_ b: [UInt8]) -> (bytes: [UInt8], spans: [Range<Int>])? {
        let n = b.count
        guard n >= 2 else { return nil }
        // Whole text.
        var s = 0
        while s < n && isBlank(b[s]) { s += 1 }
        if s < n && (b[s] == UInt8(ascii: "{") || b[s] == UInt8(ascii: "[")) {
            if let end = b.withUnsafeBytes({ JSONValidation.valueEnd(UnsafeRawBufferPointer(rebasing: $0[s...])) }) {
                var t = s + end
                while t < n && isBlank(b[t]) { t += 1 }
                if t == n {
                    var out = [UInt8]()
                    out.reserveCapacity(n)
                    appendMinified(b, s, s + end, to: &out)
                    return out.count == n ? nil : (out, [0..<out.count])
                }
            }
        }
        // Embedded values at line starts.
        var out = [UInt8]()
        var spans: [Range<Int>] = []
        var copied = 0
        var i = 0
        var changed = false
        var inFence = false
        var fenceIsJSON = false
        while i < n {
            let lineStart = i
            let lineEnd = lineEndIndex(b, from: i)
            var k = lineStart
            while k < lineEnd && (b[k] == 0x20 || b[k] == 0x09) { k += 1 }
            if lineEnd - k >= 3 && b[k] == 0x60 && b[k + 1] == 0x60 && b[k + 2] == 0x60 {
                if !inFence {
                    let tag = b[(k + 3)..<lineEnd]
                    fenceIsJSON = tag.starts(with: Array("json".utf8)) || tag.starts(with: Array("JSON".utf8))
                }
                inFence.toggle()
                i = lineEnd + 1
                continue
            }
            if k < lineEnd && (b[k] == UInt8(ascii: "{") || b[k] == UInt8(ascii: "[")) && (!inFence || fenceIsJSON) {
                if let len = b.withUnsafeBytes({ JSONValidation.valueEnd(UnsafeRawBufferPointer(rebasing: $0[k...])) }) {
                    let end = k + len
                    // Only multi-line values: a one-line array in prose ("[1] ...") stays as written.
                    if b[k..<end].contains(0x0A) {
                        if out.isEmpty { out.reserveCapacity(n) }
                        out.append(contentsOf: b[copied..<k])
                        let before = out.count
                        appendMinified(b, k, end, to: &out)
                        if out.count - before != end - k { changed = true }
                        spans.append(before..<out.count)
                        copied = end
                        i = end
                        while i < n && b[i] != 0x0A { i += 1 }
                        i += 1
                        continue
                    }
                }
            }
            i = lineEnd + 1
        }
        guard changed else { return nil }
        out.append(contentsOf: b[copied..<n])
        return (out, spans)
    }

    @inline(__always)
    static func isBlank(_ c: UInt8) -> Bool { c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 }

    /// The index of the first line feed at or after `i`, or `b.count`: ``TextCompressor/lineEnd(_:_:_:)`` (memchr;
    /// these scans run over whole prompts, byte-at-a-time loops took ~12 instructions a byte).
    @inline(__always)
    static func lineEndIndex(_ b: [UInt8], from i: Int) -> Int {
        b.withUnsafeBufferPointer { buf in
            guard let base = buf.baseAddress else { return buf.count }
            return TextCompressor.lineEnd(base, i, buf.count)
        }
    }

    /// Copies the valid JSON `b[s..<e]` without insignificant whitespace.
    static func appendMinified(_ b: [UInt8], _ s: Int, _ e: Int, to out: inout [UInt8]) {
        var i = s
        while i < e {
            let c = b[i]
            if c == UInt8(ascii: "\"") {
                var j = i + 1
                while j < e && b[j] != UInt8(ascii: "\"") {
                    j += b[j] == UInt8(ascii: "\\") ? 2 : 1
                }
                out.append(contentsOf: b[i...min(j, e - 1)])
                i = j + 1
            } else if isBlank(c) {
                i += 1
            } else {
                out.append(c)
                i += 1
            }
        }
    }

    /// Splits `b` into blocks separated by blank lines: (start, end) byte ranges, separators excluded.
    static func blocks(_ b: [UInt8]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        let n = b.count
        var i = 0
        var start = 0
        while i < n {
            i = lineEndIndex(b, from: i)  // the next line break (memchr), or n
            if i < n {
                var j = i + 1
                var sawBlank = false
                while j < n {
                    var k = j
                    while k < n && (b[k] == 0x20 || b[k] == 0x09 || b[k] == 0x0D) { k += 1 }
                    if k < n && b[k] == 0x0A {
                        sawBlank = true
                        j = k + 1
                    } else {
                        break
                    }
                }
                if sawBlank {
                    if i > start { out.append(start..<i) }
                    start = j
                    i = j
                    continue
                }
            }
            i += 1
        }
        if n > start { out.append(start..<n) }
        return out
    }
}
