import NIOCore
import NIOHTTP1

/// Header rules for a forwarding proxy (RFC 9110 section 7.6.1).
///
/// Every check compares the header name's ASCII bytes case-insensitively against fixed names: no lowercased copies,
/// no hashing, no allocation unless the `Connection` header names extra headers to drop.
enum ForwardingHeaders {
    /// Hop-by-hop headers: meaningful for one connection only, never forwarded.
    static let hopByHop: [String] = [
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
        "trailers", "transfer-encoding", "upgrade",
    ]

    /// Headers the sidecar sets itself on the upstream request.
    static let recomputedOnRequest: [String] = ["host", "content-length", "expect", "http2-settings"]

    /// The client's headers as they go upstream: hop-by-hop ones, those named in `Connection`, Host and
    /// Content-Length (set anew for the upstream) removed; everything else (Authorization, OpenAI-Organization,
    /// OpenAI-Project, User-Agent, Accept-Encoding, ...) kept in order. `host` and `contentLength` (own pool) are
    /// added, and `traceparent` / `authorization`, when given, replace the client's: built in one pass, so the
    /// header list is allocated once.
    static func upstreamRequestHeaders(_ headers: HTTPHeaders, host: String? = nil, contentLength: Int? = nil,
                                       traceparent: String? = nil, authorization: String? = nil) -> HTTPHeaders
    {
        var out = HTTPHeaders()
        out.reserveCapacity(headers.count + 3)
        if let host { out.add(name: "host", value: host) }
        forEachForwardedRequestHeader(headers, replacingTraceparent: traceparent != nil,
                                      replacingAuthorization: authorization != nil)
        { name, value in out.add(name: name, value: value) }
        if let contentLength { out.add(name: "content-length", value: String(contentLength)) }
        if let traceparent { out.add(name: "traceparent", value: traceparent) }
        if let authorization { out.add(name: "authorization", value: authorization) }
        return out
    }

    /// The upstream request head for the own keep-alive pool, serialized directly: the same headers as
    /// `upstreamRequestHeaders`; a raw client head's lines are copied as received.
    static func writeUpstreamRequestHead(_ out: inout ByteBuffer, method: HTTPMethod, uri: String,
                                         head: RequestHead, host: String, contentLength: Int?,
                                         traceparent: String?, authorization: String?, upgrade: String? = nil)
    {
        out.writeHead(bound: method.rawValue.utf8.count + uri.utf8.count + host.utf8.count + 24) { w in
            w.put(method.rawValue)
            w.put(" ")
            w.put(uri)
            w.put(" HTTP/1.1\r\nhost: ")
            w.put(host)
            w.put("\r\n")
        }
        switch head.fields {
        case .raw(let raw):
            let named = raw.connectionTokens()
            let replacingTraceparent = traceparent != nil
            let replacingAuthorization = authorization != nil
            out.reserveCapacity(out.writerIndex + raw.bytes.readableBytes + 256)
            raw.copyLines(into: &out) { name in
                if mayBeDropped(count: name.count, first: name[0]) && isDroppedOnRequest(name) { return false }
                if replacingTraceparent && HeaderBytes.equalsIgnoringCase(name, "traceparent") { return false }
                if replacingAuthorization && HeaderBytes.equalsIgnoringCase(name, "authorization") { return false }
                return named.isEmpty || !named.contains(where: { HeaderBytes.equalsIgnoringCase(name, lowercased: $0) })
            }
        case .parsed(let headers):
            forEachForwardedRequestHeader(headers, replacingTraceparent: traceparent != nil,
                                          replacingAuthorization: authorization != nil)
            { name, value in
                out.writeString(name)
                out.writeStaticString(": ")
                out.writeString(value)
                out.writeStaticString("\r\n")
            }
        }
        let bound = 64 + HeadWriter.maxDecimal + (traceparent?.utf8.count ?? 0) + (authorization?.utf8.count ?? 0)
            + (upgrade.map { $0.utf8.count + 40 } ?? 0)
        out.writeHead(bound: bound) { w in
            if let upgrade {
                // A protocol upgrade (WebSocket) keeps its hop-by-hop pair for the next hop.
                w.put("connection: upgrade\r\nupgrade: ")
                w.putValue(upgrade)
                w.put("\r\n")
            }
            if let contentLength {
                w.put("content-length: ")
                w.putDecimal(contentLength)
                w.put("\r\n")
            }
            if let traceparent {
                w.put("traceparent: ")
                w.put(traceparent)
                w.put("\r\n")
            }
            if let authorization {
                w.put("authorization: ")
                w.put(authorization)
                w.put("\r\n")
            }
            w.put("\r\n")
        }
    }

    /// The rule of `upstreamRequestHeaders`, one header at a time.
    @inline(__always)
    static func forEachForwardedRequestHeader(_ headers: HTTPHeaders, replacingTraceparent: Bool,
                                              replacingAuthorization: Bool, _ body: (String, String) -> Void)
    {
        let named = connectionTokens(headers)
        for (name, value) in headers {
            if mayBeDropped(name) && (isHopByHop(name) || isAny(name, of: recomputedOnRequest)) { continue }
            if replacingTraceparent && equalsIgnoringCase(name, "traceparent") { continue }
            if replacingAuthorization && equalsIgnoringCase(name, "authorization") { continue }
            if !named.isEmpty && isAny(name, of: named) { continue }
            body(name, value)
        }
    }

    /// Cheap pre-check: every header this proxy drops or recomputes starts with one of these letters and has one of
    /// these lengths.
    @inline(__always)
    static func mayBeDropped(_ name: String) -> Bool {
        mayBeDropped(count: name.utf8.count, first: name.utf8.first ?? 0)
    }

    @inline(__always)
    static func mayBeDropped(count n: Int, first: UInt8) -> Bool {
        guard n == 2 || n == 4 || n == 6 || n == 7 || n == 8 || n == 10 || n == 14 || n == 16 || n == 17 || n == 18
            || n == 19 || n == 12
        else { return false }
        switch first | 0x20 {
        case UInt8(ascii: "c"), UInt8(ascii: "k"), UInt8(ascii: "p"), UInt8(ascii: "t"), UInt8(ascii: "u"),
            UInt8(ascii: "h"), UInt8(ascii: "e"):
            return true
        default:
            return false
        }
    }

    /// The upstream's response headers as they go to the client: hop-by-hop ones and those named in `Connection`
    /// removed.
    static func clientResponseHeaders(_ headers: HTTPHeaders) -> HTTPHeaders {
        let named = connectionTokens(headers)
        var out = HTTPHeaders()
        out.reserveCapacity(headers.count + 1)
        for (name, value) in headers {
            if mayBeDropped(name) && isHopByHop(name) { continue }
            if !named.isEmpty && isAny(name, of: named) { continue }
            out.add(name: name, value: value)
        }
        return out
    }

    static func isHopByHop(_ name: String) -> Bool { isAny(name, of: hopByHop) }

    static func isHopByHop(_ name: UnsafeRawBufferPointer) -> Bool {
        switch name.count {
        case 2: return HeaderBytes.equalsIgnoringCase(name, "te")
        case 7: return HeaderBytes.equalsIgnoringCase(name, "trailer") || HeaderBytes.equalsIgnoringCase(name, "upgrade")
        case 8: return HeaderBytes.equalsIgnoringCase(name, "trailers")
        case 10:
            return HeaderBytes.equalsIgnoringCase(name, "connection") || HeaderBytes.equalsIgnoringCase(name, "keep-alive")
        case 16: return HeaderBytes.equalsIgnoringCase(name, "proxy-connection")
        case 17: return HeaderBytes.equalsIgnoringCase(name, "transfer-encoding")
        case 18: return HeaderBytes.equalsIgnoringCase(name, "proxy-authenticate")
        case 19: return HeaderBytes.equalsIgnoringCase(name, "proxy-authorization")
        default: return false
        }
    }

    /// Hop-by-hop, or one the sidecar sets itself on the upstream request (`recomputedOnRequest`).
    static func isDroppedOnRequest(_ name: UnsafeRawBufferPointer) -> Bool {
        switch name.count {
        case 4: return HeaderBytes.equalsIgnoringCase(name, "host")
        case 6: return HeaderBytes.equalsIgnoringCase(name, "expect")
        case 14:
            return HeaderBytes.equalsIgnoringCase(name, "content-length")
                || HeaderBytes.equalsIgnoringCase(name, "http2-settings")
        default: return isHopByHop(name)
        }
    }

    /// `name` equals one of `lowercased` (lowercase ASCII names), ignoring ASCII case.
    @inline(__always)
    static func isAny(_ name: String, of lowercased: [String]) -> Bool {
        for candidate in lowercased where equalsIgnoringCase(name, candidate) { return true }
        return false
    }

    /// ASCII case-insensitive equality with a lowercase `lower`.
    static func equalsIgnoringCase(_ name: String, _ lower: String) -> Bool {
        var name = name
        return name.withUTF8 { HeaderBytes.equalsIgnoringCase(UnsafeRawBufferPointer($0), lowercased: lower) }
    }

    /// Header names listed in `Connection` besides the hop-by-hop ones already dropped (lowercased). Empty, without
    /// allocating, for the usual `keep-alive` / `close` / `upgrade`.
    static func connectionTokens(_ headers: HTTPHeaders) -> [String] {
        var tokens: [String] = []
        for (name, value) in headers where name.utf8.count == 10 && equalsIgnoringCase(name, "connection") {
            for token in value.split(separator: ",") {
                let t = token.trimmingCharacters(in: " \t")
                if t.isEmpty || isHopByHop(t) || equalsIgnoringCase(t, "close") { continue }
                tokens.append(t.lowercased())
            }
        }
        return tokens
    }
}

extension StringProtocol {
    func trimmingCharacters(in chars: String) -> String {
        var s = Substring(self)
        while let f = s.first, chars.contains(f) { s.removeFirst() }
        while let l = s.last, chars.contains(l) { s.removeLast() }
        return String(s)
    }
}
