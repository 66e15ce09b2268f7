#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOHTTP1

// HTTP/1.1 on the plain-HTTP upstream side and on the client side's responses, as bytes: the upstream's response
// head is parsed once into byte ranges (no String per header), its forwarded lines are copied to the client as they
// came, and the heads the sidecar writes are serialized directly. NIO's generic codec (llhttp callbacks, an
// `HTTPHeaders` per head, an encoder pass per part) was the largest user-space cost per proxied request.

/// One header line's name and value as byte ranges (offsets from the block's reader index).
struct RawField {
    var nameStart: Int32
    var nameEnd: Int32
    var valueStart: Int32
    var valueEnd: Int32
}

/// A parsed head kept as its bytes plus the ranges of its header lines: lookups compare bytes, forwarding copies
/// lines, and no String is made unless a value is asked for.
protocol RawHeaderBlock {
    var bytes: ByteBuffer { get }
    var fields: [RawField] { get }
}

extension RawHeaderBlock {
    @inline(__always)
    func withName<R>(_ f: RawField, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        bytes.withUnsafeReadableBytes { all in
            body(UnsafeRawBufferPointer(rebasing: all[Int(f.nameStart)..<Int(f.nameEnd)]))
        }
    }

    @inline(__always)
    func withValue<R>(_ f: RawField, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        bytes.withUnsafeReadableBytes { all in
            body(UnsafeRawBufferPointer(rebasing: all[Int(f.valueStart)..<Int(f.valueEnd)]))
        }
    }

    func name(_ f: RawField) -> String {
        bytes.getString(at: bytes.readerIndex + Int(f.nameStart), length: Int(f.nameEnd - f.nameStart)) ?? ""
    }

    func value(_ f: RawField) -> String {
        bytes.getString(at: bytes.readerIndex + Int(f.valueStart), length: Int(f.valueEnd - f.valueStart)) ?? ""
    }

    /// Whether there is an `Upgrade` header (the cheap test before ``RawRequestHead/websocketUpgrade``).
    var hasUpgradeHeader: Bool {
        for f in fields where f.nameEnd - f.nameStart == 7 {
            if withName(f, { HeaderBytes.equalsIgnoringCase($0, "upgrade") }) { return true }
        }
        return false
    }

    /// The first value of header `lower` (a lowercase name).
    func first(_ lower: StaticString) -> String? {
        for f in fields where withName(f, { HeaderBytes.equalsIgnoringCase($0, lower) }) { return value(f) }
        return nil
    }

    /// Whether header `lower`'s first value starts with `prefix` (ASCII case-insensitive), without a String.
    func firstValue(_ lower: StaticString, hasPrefix prefix: StaticString) -> Bool {
        for f in fields where withName(f, { HeaderBytes.equalsIgnoringCase($0, lower) }) {
            return withValue(f) { HeaderBytes.hasPrefixIgnoringCase($0, prefix) }
        }
        return false
    }

    /// HTTP keep-alive semantics: 1.1 unless `Connection: close`, 1.0 only with `Connection: keep-alive`.
    func isKeepAlive(minorVersion: Int) -> Bool {
        var close = false
        var keep = false
        for f in fields where withName(f, { HeaderBytes.equalsIgnoringCase($0, "connection") }) {
            withValue(f) { v in
                HeaderBytes.forEachToken(v) { t in
                    if HeaderBytes.equalsIgnoringCase(t, "close") { close = true }
                    if HeaderBytes.equalsIgnoringCase(t, "keep-alive") { keep = true }
                }
            }
        }
        return minorVersion >= 1 ? !close : keep && !close
    }

    /// Header names listed in `Connection` besides hop-by-hop ones (`keep-alive` among them) and `close`
    /// (lowercased); empty, without allocating, in the usual case.
    func connectionTokens() -> [String] {
        var named: [String] = []
        for f in fields where withName(f, { HeaderBytes.equalsIgnoringCase($0, "connection") }) {
            withValue(f) { v in
                HeaderBytes.forEachToken(v) { t in
                    if HeaderBytes.equalsIgnoringCase(t, "close") || ForwardingHeaders.isHopByHop(t) { return }
                    named.append(String(decoding: t, as: UTF8.self).lowercased())
                }
            }
        }
        return named
    }

    /// Copies every header line for which `keep` holds into `out`, as received ("name: value\r\n").
    func copyLines(into out: inout ByteBuffer, where keep: (UnsafeRawBufferPointer) -> Bool) {
        bytes.withUnsafeReadableBytes { all in
            // Each kept line is at most its bytes in the block plus a CRLF.
            out.writeHead(bound: all.count + 2 * fields.count) { w in
                for f in fields {
                    let name = UnsafeRawBufferPointer(rebasing: all[Int(f.nameStart)..<Int(f.nameEnd)])
                    guard keep(name) else { continue }
                    w.put(UnsafeRawBufferPointer(rebasing: all[Int(f.nameStart)..<Int(f.valueEnd)]))
                    w.put("\r\n")
                }
            }
        }
    }

    /// The fields as `HTTPHeaders` (for AsyncHTTPClient and HTTP/2).
    var httpHeaders: HTTPHeaders {
        var out = HTTPHeaders()
        out.reserveCapacity(fields.count)
        for f in fields { out.add(name: name(f), value: value(f)) }
        return out
    }
}

/// An upstream response head as received: status, reason, and each header line as byte ranges into `bytes`.
struct RawResponseHead: RawHeaderBlock {
    let bytes: ByteBuffer
    let status: Int
    let minorVersion: Int
    let reasonStart: Int
    let reasonEnd: Int
    let fields: [RawField]

    var reason: String {
        bytes.getString(at: bytes.readerIndex + reasonStart, length: reasonEnd - reasonStart) ?? ""
    }

    var isKeepAlive: Bool { isKeepAlive(minorVersion: minorVersion) }
}

/// A client's HTTP/1.x request head as received.
struct RawRequestHead: RawHeaderBlock {
    let bytes: ByteBuffer
    let method: HTTPMethod
    let uri: String
    let minorVersion: Int
    let fields: [RawField]
}

/// Why an HTTP/1 message could not be parsed; for a client's request, the status to answer with.
struct HTTPWireError: Error, CustomStringConvertible {
    let status: Int
    let description: String

    init(_ description: String, status: Int = 400) {
        self.status = status
        self.description = description
    }
}

/// Incremental HTTP/1.x response parser (RFC 9112): status line, header fields, then the body framed by
/// Transfer-Encoding chunked, Content-Length, or the connection's close. Interim 1xx heads are skipped. Body bytes
/// come out as slices of the input (no copy); partial framing stays in the caller's buffer until more arrives.
struct ResponseParser {
    typealias Event = HTTPMessageEvent<RawResponseHead>

    private enum State {
        case head
        case body(BodyReader)
    }

    static let maxHeadBytes = 64 * 1024
    private var state = State.head
    /// The connection closes after this response (close-delimited, `Connection: close`, or HTTP/1.0 chunked).
    private(set) var mustClose = false

    /// Waiting for the connection to close to end the body.
    var isCloseDelimited: Bool {
        if case .body(let reader) = state { return reader.isCloseDelimited }
        return false
    }

    /// Between responses.
    var isIdle: Bool {
        if case .head = state { return true }
        return false
    }

    mutating func reset() {
        state = .head
        mustClose = false
    }

    /// The next event from `buffer` (consuming what it used), or nil when more bytes are needed. `noBody`: the
    /// request was HEAD, so the response has no body whatever its headers say.
    mutating func next(_ buffer: inout ByteBuffer, noBody: Bool) throws(HTTPWireError) -> Event? {
        while true {
            switch state {
            case .head:
                guard let head = try Self.parseHead(&buffer) else { return nil }
                if head.status < 200 {
                    if head.status == 101 { throw HTTPWireError("unexpected 101 Switching Protocols") }
                    continue  // interim response: the real head follows
                }
                try frame(head, noBody: noBody)
                return .head(head)
            case .body(var reader):
                let event: Event? = try reader.next(&buffer)
                state = event?.isEnd == true ? .head : .body(reader)
                return event
            }
        }
    }

    /// Sets the body framing for `head` (RFC 9112 section 6.3).
    private mutating func frame(_ head: RawResponseHead, noBody: Bool) throws(HTTPWireError) {
        mustClose = !head.isKeepAlive
        if noBody || head.status == 204 || head.status == 304 {
            state = .body(BodyReader(.fixed(0), strict: false))
            return
        }
        var chunked: Bool?
        var length: Int?
        for f in head.fields {
            let kind = head.withName(f) { n -> Int in
                if HeaderBytes.equalsIgnoringCase(n, "transfer-encoding") { return 1 }
                if HeaderBytes.equalsIgnoringCase(n, "content-length") { return 2 }
                return 0
            }
            if kind == 1 {
                // The final coding over all Transfer-Encoding lines decides: chunked, or anything else means
                // "read until close" (empty lines add none).
                head.withValue(f) { v in
                    HeaderBytes.forEachToken(v) { chunked = HeaderBytes.equalsIgnoringCase($0, "chunked") }
                }
                if chunked == nil { chunked = false }
            } else if kind == 2 {
                guard let n = head.withValue(f, HeaderBytes.contentLength) else {
                    throw HTTPWireError("invalid Content-Length")
                }
                if let length, length != n { throw HTTPWireError("conflicting Content-Length") }
                length = n
            }
        }
        if let chunked {
            // Both: a message framed two ways is refused (the client would get one framing, the upstream meant
            // the other), as NIO's decoder did.
            if length != nil { throw HTTPWireError("both Transfer-Encoding and Content-Length") }
            if head.minorVersion == 0 { mustClose = true }  // RFC 9112 section 6.1
            if chunked {
                state = .body(BodyReader(.chunked, strict: false))
            } else {
                state = .body(BodyReader(.untilClose, strict: false))
                mustClose = true
            }
        } else if let length {
            state = .body(BodyReader(.fixed(length), strict: false))
        } else {
            state = .body(BodyReader(.untilClose, strict: false))
            mustClose = true
        }
    }

    /// Parses a complete head at the start of `buffer` (consuming it), or returns nil when it is not all there.
    /// The response head at the start of `buffer` (consumed), nil until all of it is there; any status, 1xx
    /// included (the tunnel reads a `101` with it).
    static func parseHead(_ buffer: inout ByteBuffer) throws(HTTPWireError) -> RawResponseHead? {
        guard let scan = HeadLines.scan(buffer) else {
            if buffer.readableBytes > Self.maxHeadBytes { throw HTTPWireError("response head too large") }
            return nil
        }
        guard scan.end <= Self.maxHeadBytes else { throw HTTPWireError("response head too large") }
        let bytes = buffer.readSlice(length: scan.end)!
        guard let statusLine = scan.lines.first else { throw HTTPWireError("empty status line") }
        let result = bytes.withUnsafeReadableBytes { p -> Result<RawResponseHead, HTTPWireError> in
            func bad(_ why: String) -> Result<RawResponseHead, HTTPWireError> { .failure(HTTPWireError(why)) }
            // "HTTP/1.x SP 3DIGIT [SP reason]"
            let (s, e) = statusLine
            guard e - s >= 12, p[s] == UInt8(ascii: "H"), p[s + 1] == UInt8(ascii: "T"), p[s + 2] == UInt8(ascii: "T"),
                p[s + 3] == UInt8(ascii: "P"), p[s + 4] == UInt8(ascii: "/"), p[s + 5] == UInt8(ascii: "1"),
                p[s + 6] == UInt8(ascii: "."), p[s + 8] == UInt8(ascii: " ")
            else { return bad("invalid status line") }
            let minor = Int(p[s + 7]) - Int(UInt8(ascii: "0"))
            guard minor == 0 || minor == 1 else { return bad("unsupported HTTP version") }
            var status = 0
            for i in (s + 9)..<(s + 12) {
                let d = Int(p[i]) - Int(UInt8(ascii: "0"))
                guard d >= 0 && d <= 9 else { return bad("invalid status code") }
                status = status * 10 + d
            }
            guard status >= 100 else { return bad("invalid status code") }
            if e - s > 12 && p[s + 12] != UInt8(ascii: " ") { return bad("invalid status line") }
            let reasonStart = min(s + 13, e)
            for i in reasonStart..<e where HeaderBytes.isControl(p[i]) { return bad("invalid reason phrase") }
            let fields: [RawField]
            switch HeadLines.fields(p, scan.lines.dropFirst()) {
            case .success(let f): fields = f
            case .failure(let e): return .failure(e)
            }
            return .success(RawResponseHead(bytes: bytes, status: status, minorVersion: minor,
                                            reasonStart: reasonStart, reasonEnd: e, fields: fields))
        }
        return try result.get()
    }
}

/// What the incremental HTTP/1 parsers deliver: a head, body slices (of the input, no copy), the end.
enum HTTPMessageEvent<Head> {
    case head(Head)
    case body(ByteBuffer)
    case end

    var isEnd: Bool {
        if case .end = self { return true }
        return false
    }
}

/// A message body after its head, as both parsers read it (RFC 9112 sections 6 and 7): a fixed length, chunked
/// (size line, data, CRLF, ..., last chunk, trailer fields up to a blank line; trailers are dropped, the other side
/// is re-framed), or until the connection closes (responses only). Body bytes come out as slices of the input.
/// `strict` is the client side's rules (as llhttp): CRLF only, chunk-size lines up to 4 KB, no control characters
/// in trailer lines, trailer section up to 64 KB (431); upstream responses get lenient line ends (bare LF) and
/// chunk-size lines up to 1 KB.
struct BodyReader {
    enum Framing {
        case fixed(Int)
        case chunked
        case untilClose
    }

    private enum State {
        case fixed(Int)
        case chunkSize
        case chunkData(Int)
        case chunkDataEnd
        case trailers(Int)
        case untilClose
    }

    static let maxTrailerBytes = 64 * 1024
    private var state: State
    private let strict: Bool

    init(_ framing: Framing, strict: Bool) {
        switch framing {
        case .fixed(let n): state = .fixed(n)
        case .chunked: state = .chunkSize
        case .untilClose: state = .untilClose
        }
        self.strict = strict
    }

    var isCloseDelimited: Bool {
        if case .untilClose = state { return true }
        return false
    }

    /// The next `.body` slice or the `.end` from `buffer` (consuming what it used), or nil when more bytes are
    /// needed. After `.end` the reader is done.
    mutating func next<Head>(_ buffer: inout ByteBuffer) throws(HTTPWireError) -> HTTPMessageEvent<Head>? {
        while true {
            switch state {
            case .fixed(let remaining):
                if remaining == 0 { return .end }
                guard buffer.readableBytes > 0 else { return nil }
                let n = min(remaining, buffer.readableBytes)
                state = .fixed(remaining - n)
                return .body(buffer.readSlice(length: n)!)
            case .untilClose:
                guard buffer.readableBytes > 0 else { return nil }
                return .body(buffer.readSlice(length: buffer.readableBytes)!)
            case .chunkSize:
                guard let line = try HeadLines.readLine(&buffer, limit: strict ? 4096 : 1024, strict: strict) else {
                    return nil
                }
                let size = try HeadLines.chunkSize(line, strict: strict)
                state = size == 0 ? .trailers(0) : .chunkData(size)
            case .chunkData(let remaining):
                guard buffer.readableBytes > 0 else { return nil }
                let n = min(remaining, buffer.readableBytes)
                state = n == remaining ? .chunkDataEnd : .chunkData(remaining - n)
                return .body(buffer.readSlice(length: n)!)
            case .chunkDataEnd:
                guard let line = try HeadLines.readLine(&buffer, limit: 2, strict: strict) else { return nil }
                guard line.readableBytes == 0 else { throw HTTPWireError("chunk data not followed by CRLF") }
                state = .chunkSize
            case .trailers(let seen):
                guard let line = try HeadLines.readLine(&buffer, limit: Self.maxTrailerBytes, strict: strict) else {
                    return nil
                }
                if line.readableBytes == 0 {
                    state = .fixed(0)
                    return .end
                }
                if strict {
                    if line.readableBytesView.contains(where: HeaderBytes.isControl) {
                        throw HTTPWireError("invalid trailer line")
                    }
                    guard seen + line.readableBytes <= Self.maxTrailerBytes else {
                        throw HTTPWireError("trailer section too large", status: 431)
                    }
                    state = .trailers(seen + line.readableBytes)
                }
            }
        }
    }
}

/// Finding a head's lines and parsing its field lines, and the chunked framing lines, shared by the request and
/// response parsers.
enum HeadLines {
    /// Reads one line (without its CRLF or bare LF); nil when no full line is buffered yet.
    static func readLine(_ buffer: inout ByteBuffer, limit: Int, strict: Bool = false) throws(HTTPWireError)
        -> ByteBuffer?
    {
        let found: Int? = buffer.withUnsafeReadableBytes { p in
            guard let base = p.baseAddress, p.count > 0 else { return nil }
            guard let hit = memchr(base, 0x0A, p.count) else { return nil }
            return base.distance(to: UnsafeRawPointer(hit))
        }
        guard let lf = found else {
            if buffer.readableBytes > limit + 1 { throw HTTPWireError("framing line too long") }
            return nil
        }
        var length = lf
        if length > 0 && buffer.getInteger(at: buffer.readerIndex + length - 1, as: UInt8.self) == 0x0D {
            length -= 1
        } else if strict {
            throw HTTPWireError("framing line not ended by CRLF")
        }
        if length > limit { throw HTTPWireError("framing line too long") }
        let line = buffer.getSlice(at: buffer.readerIndex, length: length)!
        buffer.moveReaderIndex(forwardBy: lf + 1)
        return line
    }

    /// The size of a chunk-size line: hex digits (leading zeros allowed), then optional whitespace and
    /// `;`-extensions (ignored), nothing else.
    static func chunkSize(_ line: ByteBuffer, strict: Bool = false) throws(HTTPWireError) -> Int {
        var size = 0
        var digits = 0
        var significant = 0
        var rest = line.readableBytesView[...]
        while let byte = rest.first {
            let d: Int
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = Int(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = Int(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = Int(byte - UInt8(ascii: "A") + 10)
            default: d = -1
            }
            if d < 0 { break }
            rest = rest.dropFirst()
            digits += 1
            if significant > 0 || d > 0 { significant += 1 }
            guard significant <= 15 else { throw HTTPWireError("chunk size too large") }
            size = size << 4 | d
        }
        guard digits > 0 else { throw HTTPWireError("invalid chunk size") }
        while let b = rest.first, b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") { rest = rest.dropFirst() }
        guard rest.isEmpty || rest.first == UInt8(ascii: ";") else { throw HTTPWireError("invalid chunk size") }
        if strict {
            // Whitespace only before an extension; no control characters in extensions.
            if rest.isEmpty && line.readableBytes > digits { throw HTTPWireError("invalid chunk size") }
            if rest.contains(where: HeaderBytes.isControl) { throw HTTPWireError("invalid chunk extension") }
        }
        return size
    }

    /// The lines of the head at the start of `buffer` (CRLF or bare LF endings, without them) and where the
    /// blank line ending it ends; nil when the blank line has not arrived yet.
    static func scan(_ buffer: ByteBuffer) -> (end: Int, lines: [(Int, Int)], bareLF: Bool)? {
        buffer.withUnsafeReadableBytes { p in
            guard let base = p.baseAddress else { return nil }
            var lines: [(Int, Int)] = []
            lines.reserveCapacity(16)
            var bareLF = false
            var start = 0
            while start < p.count {
                guard let hit = memchr(base + start, 0x0A, p.count - start) else { return nil }
                let lf = base.distance(to: UnsafeRawPointer(hit))
                var end = lf
                if end > start && p[end - 1] == 0x0D { end -= 1 } else { bareLF = true }
                if end == start {
                    if lines.isEmpty {
                        // Blank lines before a request line are ignored (RFC 9112 section 2.2).
                        start = lf + 1
                        continue
                    }
                    return (lf + 1, lines, bareLF)
                }
                lines.append((start, end))
                start = lf + 1
            }
            return nil
        }
    }

    /// Parses header field lines: `name: value` with a token name and no obsolete line folding; values are trimmed
    /// of spaces and tabs and may not hold control characters other than HTAB.
    static func fields(_ p: UnsafeRawBufferPointer, _ lines: ArraySlice<(Int, Int)>)
        -> Result<[RawField], HTTPWireError>
    {
        var fields: [RawField] = []
        fields.reserveCapacity(lines.count)
        for (ls, le) in lines {
            if p[ls] == UInt8(ascii: " ") || p[ls] == UInt8(ascii: "\t") {
                return .failure(HTTPWireError("obsolete header line folding"))
            }
            var colon = ls
            while colon < le && p[colon] != UInt8(ascii: ":") {
                guard HeaderBytes.isTokenByte(p[colon]) else {
                    return .failure(HTTPWireError("invalid header name"))
                }
                colon += 1
            }
            guard colon < le, colon > ls else { return .failure(HTTPWireError("invalid header line")) }
            var vs = colon + 1
            var ve = le
            while vs < ve && (p[vs] == UInt8(ascii: " ") || p[vs] == UInt8(ascii: "\t")) { vs += 1 }
            while ve > vs && (p[ve - 1] == UInt8(ascii: " ") || p[ve - 1] == UInt8(ascii: "\t")) { ve -= 1 }
            if HeaderBytes.hasControl(p, vs, ve) { return .failure(HTTPWireError("invalid header value")) }
            fields.append(RawField(nameStart: Int32(ls), nameEnd: Int32(colon), valueStart: Int32(vs), valueEnd: Int32(ve)))
        }
        return .success(fields)
    }
}

/// Byte-level header helpers shared by the parser and the serializers.
enum HeaderBytes {
    /// `name` equals `lower` (lowercase ASCII) ignoring ASCII case.
    @inline(__always)
    static func equalsIgnoringCase(_ name: UnsafeRawBufferPointer, _ lower: StaticString) -> Bool {
        equalsIgnoringCase(name, UnsafeBufferPointer(start: lower.utf8Start, count: lower.utf8CodeUnitCount))
    }

    /// For names known only at run time. (Its own label, so that literal names resolve to the `StaticString`
    /// form above instead of making a `String` each call.)
    static func equalsIgnoringCase(_ name: UnsafeRawBufferPointer, lowercased lower: String) -> Bool {
        var lower = lower
        return lower.withUTF8 { equalsIgnoringCase(name, $0) }
    }

    @inline(__always)
    static func equalsIgnoringCase(_ name: UnsafeRawBufferPointer, _ lower: UnsafeBufferPointer<UInt8>) -> Bool {
        guard name.count == lower.count else { return false }
        for i in 0..<name.count {
            var c = name[i]
            if c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") { c |= 0x20 }
            if c != lower[i] { return false }
        }
        return true
    }

    /// A Content-Length value: decimal digits only (leading zeros allowed), at most 18 significant ones.
    static func contentLength(_ v: UnsafeRawBufferPointer) -> Int? {
        guard v.count > 0, v.drop(while: { $0 == UInt8(ascii: "0") }).count <= 18 else { return nil }
        var n = 0
        for b in v {
            guard b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") else { return nil }
            n = n * 10 + Int(b - UInt8(ascii: "0"))
        }
        return n
    }

    static func hasPrefixIgnoringCase(_ value: UnsafeRawBufferPointer, _ lower: StaticString) -> Bool {
        guard value.count >= lower.utf8CodeUnitCount else { return false }
        return equalsIgnoringCase(UnsafeRawBufferPointer(rebasing: value[0..<lower.utf8CodeUnitCount]), lower)
    }

    /// Calls `body` with each comma-separated token of a header value, trimmed of spaces and tabs.
    @inline(__always)
    static func forEachToken(_ value: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) {
        var i = 0
        while i <= value.count {
            var j = i
            while j < value.count && value[j] != UInt8(ascii: ",") { j += 1 }
            var s = i
            var e = j
            while s < e && (value[s] == 0x20 || value[s] == 0x09) { s += 1 }
            while e > s && (value[e - 1] == 0x20 || value[e - 1] == 0x09) { e -= 1 }
            if e > s { body(UnsafeRawBufferPointer(rebasing: value[s..<e])) }
            i = j + 1
        }
    }

    /// Control characters a field value or reason phrase may not hold (all but horizontal tab).
    @inline(__always)
    static func isControl(_ b: UInt8) -> Bool { (b < 0x20 && b != 0x09) || b == 0x7F }

    /// RFC 9110 token characters: ALPHA, DIGIT and ``!#$%&'*+-.^_`|~`` (a bitmap of the 128 ASCII bytes).
    @inline(__always)
    static func isTokenByte(_ b: UInt8) -> Bool {
        let bits: UInt64 = b < 64 ? 0x03FF_6CFA_0000_0000 : (b < 128 ? 0x57FF_FFFF_C7FF_FFFE : 0)
        return (bits >> UInt64(b & 63)) & 1 != 0
    }

    /// Whether `p[from..<to]` holds a control character other than HTAB (``isControl(_:)``). Eight bytes at a
    /// time: a word without any byte below 0x20 or equal to 0x7F is passed whole; a word with one is looked at
    /// byte by byte (HTAB is the usual reason).
    @inline(__always)
    static func hasControl(_ p: UnsafeRawBufferPointer, _ from: Int, _ to: Int) -> Bool {
        var i = from
        if let base = p.baseAddress {
            let ones: UInt64 = 0x0101_0101_0101_0101
            let high: UInt64 = 0x8080_8080_8080_8080
            while i + 8 <= to {
                let w = base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                // A byte below 0x20 (exact test for "any", bytes >= 0x80 never count), or a byte equal to 0x7F.
                let below = (w &- ones &* 0x20) & ~w & high
                let x = w ^ (ones &* 0x7F)
                let del = (x &- ones) & ~x & high
                if below | del != 0 {
                    for j in i..<(i + 8) where isControl(p[j]) { return true }
                }
                i += 8
            }
        }
        while i < to {
            if isControl(p[i]) { return true }
            i += 1
        }
        return false
    }
}

/// A response head the sidecar sends to its client, built as header lines: serialized directly for HTTP/1.x
/// clients, turned into an `HTTPResponseHead` for HTTP/2 streams.
struct OutgoingHead {
    var status: Int
    var reason: String
    /// "name: value\r\n" lines.
    var lines: ByteBuffer
    var hasContentLength = false

    init(status: Int, reason: String? = nil, capacity: Int = 256) {
        self.status = status
        self.reason = reason ?? HTTPResponseStatus(statusCode: status).reasonPhrase
        self.lines = ByteBuffer()
        lines.reserveCapacity(capacity)
    }

    mutating func add(_ name: StaticString, _ value: String) {
        lines.writeHead(bound: name.utf8CodeUnitCount + value.utf8.count + 4) { w in
            w.put(name)
            w.put(": ")
            w.putValue(value)
            w.put("\r\n")
        }
        if HeaderBytes.equalsIgnoringCase(UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount),
                                          "content-length")
        {
            hasContentLength = true
        }
    }

    /// A header whose value is a decimal integer, written as digits (no `String` made).
    mutating func add(_ name: StaticString, decimal value: Int) {
        lines.writeHead(bound: name.utf8CodeUnitCount + HeadWriter.maxDecimal + 5) { w in
            w.put(name)
            w.put(": ")
            if value < 0 { w.put("-") }
            w.putDecimal(value.magnitude)
            w.put("\r\n")
        }
    }

    /// A duration as milliseconds with three decimals (`1.234`; negative durations as `0.000`).
    mutating func add(_ name: StaticString, milliseconds t: TimeAmount) {
        let us = UInt(max(0, t.nanoseconds / 1000))
        lines.writeHead(bound: name.utf8CodeUnitCount + HeadWriter.maxDecimal + 8) { w in
            w.put(name)
            w.put(": ")
            w.putDecimal(us / 1000)
            w.put(".")
            w.putDecimal(us % 1000, minimumDigits: 3)
            w.put("\r\n")
        }
    }

    mutating func add(name: String, value: String) {
        lines.writeHead(bound: name.utf8.count + value.utf8.count + 4) { w in
            w.put(name)
            w.put(": ")
            w.putValue(value)
            w.put("\r\n")
        }
        if name.utf8.count == 14 && ForwardingHeaders.equalsIgnoringCase(name, "content-length") { hasContentLength = true }
    }

    /// The upstream's header lines as they go to the client: hop-by-hop ones and those its `Connection` names
    /// removed (and Content-Length when the body will change length), copied byte for byte otherwise.
    mutating func addForwarded(_ head: RawResponseHead, dropContentLength: Bool) {
        let named = head.connectionTokens()
        var sawLength = false
        head.copyLines(into: &lines) { name in
            if ForwardingHeaders.mayBeDropped(count: name.count, first: name[0]) {
                if ForwardingHeaders.isHopByHop(name) { return false }
                if HeaderBytes.equalsIgnoringCase(name, "content-length") {
                    if dropContentLength { return false }
                    sawLength = true
                }
            }
            return named.isEmpty || !named.contains(where: { HeaderBytes.equalsIgnoringCase(name, lowercased: $0) })
        }
        if sawLength { hasContentLength = true }
    }

    /// The same for headers parsed by another client (HTTPS upstreams through AsyncHTTPClient).
    mutating func addForwarded(_ headers: HTTPHeaders, dropContentLength: Bool) {
        for (name, value) in ForwardingHeaders.clientResponseHeaders(headers) {
            if dropContentLength && ForwardingHeaders.equalsIgnoringCase(name, "content-length") { continue }
            add(name: name, value: value)
        }
    }

    /// The header lines as `HTTPHeaders` (for HTTP/2 streams).
    var headers: HTTPHeaders {
        var out = HTTPHeaders()
        lines.withUnsafeReadableBytes { p in
            var start = 0
            while start < p.count {
                var end = start
                while end < p.count && p[end] != 0x0A { end += 1 }
                var le = end
                if le > start && p[le - 1] == 0x0D { le -= 1 }
                var colon = start
                while colon < le && p[colon] != UInt8(ascii: ":") { colon += 1 }
                if colon < le {
                    var vs = colon + 1
                    while vs < le && p[vs] == UInt8(ascii: " ") { vs += 1 }
                    out.add(name: String(decoding: UnsafeRawBufferPointer(rebasing: p[start..<colon]), as: UTF8.self),
                            value: String(decoding: UnsafeRawBufferPointer(rebasing: p[vs..<le]), as: UTF8.self))
                }
                start = end + 1
            }
        }
        return out
    }

    /// How the body goes to an HTTP/1.x client.
    enum Framing {
        /// No body at all (HEAD, 1xx, 204, 304).
        case none
        /// Content-Length given: bytes as they are.
        case identity
        /// Chunked transfer coding (HTTP/1.1 without a length).
        case chunked
        /// Until the connection closes (HTTP/1.0 without a length).
        case close
    }

    /// The framing for this head on an HTTP/1.x connection of `version`.
    func framing(version: HTTPVersion, bodyless: Bool) -> Framing {
        if bodyless || status < 200 || status == 204 || status == 304 { return .none }
        if hasContentLength { return .identity }
        return version.minor >= 1 ? .chunked : .close
    }

    /// The serialized head for an HTTP/1.x client: status line, lines, framing and connection headers, blank line.
    /// `room`: extra capacity for body bytes the caller may append.
    func serialize(version: HTTPVersion, framing: Framing, keepAlive: Bool, allocator: ByteBufferAllocator,
                   room: Int = 0) -> ByteBuffer
    {
        let bound = lines.readableBytes + reason.utf8.count + 96
        var out = allocator.buffer(capacity: bound + room)
        out.writeHead(bound: bound) { w in
            w.put(version.minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ")
            w.putDecimal(status)
            w.put(" ")
            w.put(reason)
            w.put("\r\n")
            lines.withUnsafeReadableBytes { w.put($0) }
            if framing == .chunked { w.put("transfer-encoding: chunked\r\n") }
            if !keepAlive || framing == .close {
                w.put("connection: close\r\n")
            } else if version.minor == 0 {
                w.put("connection: keep-alive\r\n")
            }
            w.put("\r\n")
        }
        return out
    }
}
