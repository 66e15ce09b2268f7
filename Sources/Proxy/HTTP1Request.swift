#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOHTTP1

// The client side of HTTP/1.x: requests parsed into byte ranges (RawRequestHead), so the sidecar reads the few
// headers it needs by comparing bytes and forwards the rest by copying lines, with no String per header.

/// A request head as the proxy handler sees it: parsed to byte ranges by `HTTP1RequestDecoder`, or by NIO (HTTP/2
/// streams, through `HTTP2RequestAdapter`).
///
/// A class: immutable, and passed from the decoder to the handler, its state and the exchange (a struct copy retained
/// each of its buffers and strings at every step).
final class RequestHead: Sendable {
    enum Fields {
        case raw(RawRequestHead)
        case parsed(HTTPHeaders)
    }

    let method: HTTPMethod
    let uri: String
    let version: HTTPVersion
    let isKeepAlive: Bool
    let fields: Fields
    /// A WebSocket upgrade's `Upgrade` value (``RawRequestHead/websocketUpgrade``); nil for other requests.
    let upgrade: String?

    init(_ raw: RawRequestHead) {
        method = raw.method
        uri = raw.uri
        version = raw.minorVersion == 0 ? .http1_0 : .http1_1
        isKeepAlive = raw.isKeepAlive(minorVersion: raw.minorVersion)
        fields = .raw(raw)
        upgrade = raw.websocketUpgrade
    }

    init(_ head: HTTPRequestHead) {
        method = head.method
        uri = head.uri
        version = head.version
        isKeepAlive = head.isKeepAlive
        fields = .parsed(head.headers)
        upgrade = nil  // HTTP/2 streams: no HTTP/1.1 upgrade
    }

    /// The first value of header `lower` (a lowercase name).
    func first(_ lower: StaticString) -> String? {
        switch fields {
        case .raw(let r): return r.first(lower)
        case .parsed(let h): return h.first(name: lower.description)
        }
    }

    /// The header list (for AsyncHTTPClient).
    var headers: HTTPHeaders {
        switch fields {
        case .raw(let r): return r.httpHeaders
        case .parsed(let h): return h
        }
    }
}

/// What the proxy handler receives for each request: its head, body parts, end.
enum ProxyRequestPart {
    case head(RequestHead)
    case body(ByteBuffer)
    case end

    /// The part with its bytes copied into storage of their own: a slice of a read buffer keeps the whole buffer
    /// (and every later read appended to it) alive, which for a queued part is memory the limits do not see.
    func compacted() -> ProxyRequestPart {
        switch self {
        case .head(let head):
            guard case .raw(let raw) = head.fields else { return self }
            return .head(RequestHead(RawRequestHead(
                bytes: Self.allocator.buffer(buffer: raw.bytes), method: raw.method, uri: raw.uri,
                minorVersion: raw.minorVersion, fields: raw.fields)))
        case .body(let b): return .body(Self.allocator.buffer(buffer: b))
        case .end: return .end
        }
    }

    private static let allocator = ByteBufferAllocator()

    /// Bytes this part keeps alive while queued behind a request in flight (a head: its raw bytes, or a nominal
    /// size for parsed HTTP/2 headers).
    var heldBytes: Int {
        switch self {
        case .head(let head):
            if case .raw(let raw) = head.fields { return raw.bytes.readableBytes }
            return 1024
        case .body(let b): return b.readableBytes
        case .end: return 0
        }
    }
}

/// Incremental HTTP/1.x request parser (RFC 9112): request line, header fields, then a body framed by
/// Transfer-Encoding chunked or Content-Length (none otherwise). Ambiguous framing (both, or a coding other than
/// chunked) is refused rather than guessed, so nothing can be smuggled past the sidecar. Body bytes come out as
/// slices of the input.
struct RequestParser {
    typealias Event = HTTPMessageEvent<RawRequestHead>

    private enum State {
        case head
        case body(BodyReader)
    }

    static let maxHeadBytes = 64 * 1024
    private var state = State.head

    /// The next event from `buffer` (consuming what it used), or nil when more bytes are needed.
    mutating func next(_ buffer: inout ByteBuffer) throws(HTTPWireError) -> Event? {
        switch state {
        case .head:
            guard let head = try parseHead(&buffer) else { return nil }
            try frame(head)
            return .head(head)
        case .body(var reader):
            let event: Event? = try reader.next(&buffer)
            state = event?.isEnd == true ? .head : .body(reader)
            return event
        }
    }

    /// Sets the body framing for `head` (RFC 9112 section 6.3, requests).
    private mutating func frame(_ head: RawRequestHead) throws(HTTPWireError) {
        var chunked = false
        var sawCoding = false
        var length: Int?
        for f in head.fields {
            let kind = head.withName(f) { n -> Int in
                if HeaderBytes.equalsIgnoringCase(n, "transfer-encoding") { return 1 }
                if HeaderBytes.equalsIgnoringCase(n, "content-length") { return 2 }
                return 0
            }
            if kind == 1 {
                var onlyChunked = true
                var any = false
                head.withValue(f) { v in
                    HeaderBytes.forEachToken(v) { t in
                        any = true
                        if !HeaderBytes.equalsIgnoringCase(t, "chunked") || chunked { onlyChunked = false }
                        chunked = true
                    }
                }
                guard any && onlyChunked && !sawCoding else {
                    throw HTTPWireError("Transfer-Encoding other than a single chunked is not supported", status: 501)
                }
                sawCoding = true
            } else if kind == 2 {
                guard let n = head.withValue(f, HeaderBytes.contentLength) else {
                    throw HTTPWireError("invalid Content-Length")
                }
                if let length, length != n { throw HTTPWireError("conflicting Content-Length headers") }
                length = n
            }
        }
        if chunked {
            if length != nil { throw HTTPWireError("both Transfer-Encoding and Content-Length") }
            if head.minorVersion == 0 { throw HTTPWireError("chunked transfer coding in an HTTP/1.0 request") }
            state = .body(BodyReader(.chunked, strict: true))
        } else {
            state = .body(BodyReader(.fixed(length ?? 0), strict: true))
        }
    }

    /// Parses a complete head at the start of `buffer` (consuming it), or returns nil when it is not all there.
    private func parseHead(_ buffer: inout ByteBuffer) throws(HTTPWireError) -> RawRequestHead? {
        guard let scan = HeadLines.scan(buffer) else {
            if buffer.readableBytes > Self.maxHeadBytes { throw HTTPWireError("request head too large", status: 431) }
            return nil
        }
        if scan.bareLF { throw HTTPWireError("request head lines must end with CRLF") }
        guard scan.end <= Self.maxHeadBytes else { throw HTTPWireError("request head too large", status: 431) }
        let bytes = buffer.readSlice(length: scan.end)!
        guard let requestLine = scan.lines.first else { throw HTTPWireError("empty request line") }
        let result = bytes.withUnsafeReadableBytes { p -> Result<RawRequestHead, HTTPWireError> in
            // method SP request-target SP HTTP-version
            let (s, e) = requestLine
            var i = s
            while i < e && p[i] != UInt8(ascii: " ") {
                guard HeaderBytes.isTokenByte(p[i]) else { return .failure(HTTPWireError("invalid method")) }
                i += 1
            }
            let methodEnd = i
            guard methodEnd > s, i < e else { return .failure(HTTPWireError("invalid request line")) }
            i += 1
            let targetStart = i
            while i < e && p[i] != UInt8(ascii: " ") {
                // Visible ASCII only (non-ASCII must be percent-encoded; it could not be forwarded byte for byte).
                guard p[i] > 0x20 && p[i] < 0x7F else { return .failure(HTTPWireError("invalid request target")) }
                i += 1
            }
            let targetEnd = i
            guard targetEnd > targetStart, e - i == 9, p[i + 1] == UInt8(ascii: "H"), p[i + 2] == UInt8(ascii: "T"),
                p[i + 3] == UInt8(ascii: "T"), p[i + 4] == UInt8(ascii: "P"), p[i + 5] == UInt8(ascii: "/"),
                p[i + 7] == UInt8(ascii: ".")
            else { return .failure(HTTPWireError("invalid request line")) }
            guard p[i + 6] == UInt8(ascii: "1"), p[i + 8] == UInt8(ascii: "0") || p[i + 8] == UInt8(ascii: "1") else {
                return .failure(HTTPWireError("HTTP version not supported", status: 505))
            }
            let fields: [RawField]
            switch HeadLines.fields(p, scan.lines.dropFirst()) {
            case .success(let f): fields = f
            case .failure(let e): return .failure(e)
            }
            let method = HTTPMethod(rawValue: String(decoding: UnsafeRawBufferPointer(rebasing: p[s..<methodEnd]),
                                                     as: UTF8.self))
            if case .RAW = method { return .failure(HTTPWireError("invalid HTTP method")) }  // as llhttp: known ones
            let uri = String(decoding: UnsafeRawBufferPointer(rebasing: p[targetStart..<targetEnd]), as: UTF8.self)
            return .success(RawRequestHead(bytes: bytes, method: method, uri: uri,
                                           minorVersion: Int(p[i + 8] - UInt8(ascii: "0")), fields: fields))
        }
        return try result.get()
    }
}

/// HTTP/1.x bytes from the client to `ProxyRequestPart`s. After a parse error it reports the error once and drops
/// whatever else arrives (the handler answers 4xx/5xx and closes).
final class HTTP1RequestDecoder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ProxyRequestPart

    private var parser = RequestParser()
    private var pending: ByteBuffer?
    /// After a parse error, or after a request that ends the connection (`Connection: close`, HTTP/1.0 without
    /// keep-alive): nothing more is read from this connection (RFC 9112 section 9.6).
    private var done = false
    private var lastKeepAlive = true
    private var lastUpgrade = false
    /// After an upgrade request (``RequestHead/upgrade``): what follows is no longer HTTP. It is kept,
    /// unparsed, for the tunnel (``takeTunnelBytes()``) or dropped with the connection.
    private var tunneling = false
    /// The connection's proxy handler, called directly: a part sent down the pipeline instead is boxed into an
    /// `NIOAny` (a heap box for the head), cast back dynamically and passed through the pipeline's contexts, three
    /// times a request (~4k instructions and ~30 reference count operations of the passthrough hot path).
    private let sink: ProxyHandler?

    /// Parts go to `sink` when given, else down the pipeline.
    init(sink: ProxyHandler? = nil) {
        self.sink = sink
    }

    @inline(__always)
    private func deliver(_ context: ChannelHandlerContext, _ part: ProxyRequestPart) {
        if let sink {
            sink.receive(part)
        } else {
            context.fireChannelRead(wrapInboundOut(part))
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        var buffer = unwrapInboundIn(data)
        if var p = pending {
            pending = nil
            p.writeBuffer(&buffer)
            buffer = p
        }
        if tunneling {
            if buffer.readableBytes > 0 { pending = buffer }
            return
        }
        do {
            while let event = try parser.next(&buffer) {
                switch event {
                case .head(let raw):
                    let head = RequestHead(raw)
                    lastKeepAlive = head.isKeepAlive
                    lastUpgrade = head.upgrade != nil
                    deliver(context, .head(head))
                case .body(let part): deliver(context, .body(part))
                case .end:
                    if !lastKeepAlive { done = true }
                    if lastUpgrade && !done {
                        tunneling = true
                        if buffer.readableBytes > 0 { pending = buffer }
                        deliver(context, .end)
                        return
                    }
                    deliver(context, .end)
                    if done { return }  // what follows is dropped (`pending` is already empty)
                }
            }
        } catch {
            done = true
            context.fireErrorCaught(error)
            return
        }
        if buffer.readableBytes > 0 { pending = buffer }
    }

    /// The bytes the client sent after its upgrade request, for the tunnel.
    func takeTunnelBytes() -> ByteBuffer? {
        let p = pending
        pending = nil
        return p
    }
}

/// HTTP/2 streams (NIO's HTTP/1-style parts) to `ProxyRequestPart`s.
final class HTTP2RequestAdapter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = ProxyRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): context.fireChannelRead(wrapInboundOut(.head(RequestHead(head))))
        case .body(let part): context.fireChannelRead(wrapInboundOut(.body(part)))
        case .end: context.fireChannelRead(wrapInboundOut(.end))
        }
    }
}
