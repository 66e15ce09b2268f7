import NIOHTTP1

/// Header rules for a forwarding proxy (RFC 9110 section 7.6.1).
enum ForwardingHeaders {
    /// Hop-by-hop headers: meaningful for one connection only, never forwarded.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
        "trailers", "transfer-encoding", "upgrade",
    ]

    /// Headers the sidecar sets itself on the upstream request.
    static let recomputedOnRequest: Set<String> = ["host", "content-length", "expect", "http2-settings"]

    /// The client's headers as they go upstream: hop-by-hop ones, those named in `Connection`, Host and
    /// Content-Length (set anew for the upstream) removed; everything else (Authorization, OpenAI-Organization,
    /// OpenAI-Project, User-Agent, Accept-Encoding, ...) kept in order. `host` and `contentLength` (own pool) are
    /// added, and `traceparent` / `authorization`, when given, replace the client's: built in one pass, so the
    /// header list is allocated once.
    static func upstreamRequestHeaders(_ headers: HTTPHeaders, host: String? = nil, contentLength: Int? = nil,
                                       traceparent: String? = nil, authorization: String? = nil) -> HTTPHeaders
    {
        let named = connectionTokens(headers)
        var out = HTTPHeaders()
        out.reserveCapacity(headers.count + 3)
        if let host { out.add(name: "host", value: host) }
        for (name, value) in headers {
            if mayBeDropped(name) {
                let lower = name.lowercased()
                if hopByHop.contains(lower) || recomputedOnRequest.contains(lower) { continue }
            }
            if traceparent != nil || authorization != nil {
                let n = name.utf8.count
                if n == 11 && traceparent != nil && name.lowercased() == "traceparent" { continue }
                if n == 13 && authorization != nil && name.lowercased() == "authorization" { continue }
            }
            if !named.isEmpty && named.contains(name.lowercased()) { continue }
            out.add(name: name, value: value)
        }
        if let contentLength { out.add(name: "content-length", value: String(contentLength)) }
        if let traceparent { out.add(name: "traceparent", value: traceparent) }
        if let authorization { out.add(name: "authorization", value: authorization) }
        return out
    }

    /// Cheap pre-check without allocating: every header this proxy drops or recomputes starts with one of these
    /// letters and has one of these lengths.
    @inline(__always)
    static func mayBeDropped(_ name: String) -> Bool {
        let n = name.utf8.count
        guard n == 2 || n == 4 || n == 6 || n == 7 || n == 8 || n == 10 || n == 14 || n == 16 || n == 17 || n == 18
            || n == 19 || n == 12
        else { return false }
        switch name.utf8.first.map({ $0 | 0x20 }) {
        case UInt8(ascii: "c"), UInt8(ascii: "k"), UInt8(ascii: "p"), UInt8(ascii: "t"), UInt8(ascii: "u"),
            UInt8(ascii: "h"), UInt8(ascii: "e"):
            return true
        default:
            return false
        }
    }

    /// The upstream's response headers as they go to the client: hop-by-hop ones removed.
    static func clientResponseHeaders(_ headers: HTTPHeaders) -> HTTPHeaders {
        let named = connectionTokens(headers)
        var out = HTTPHeaders()
        out.reserveCapacity(headers.count + 1)
        for (name, value) in headers {
            if mayBeDropped(name) && hopByHop.contains(name.lowercased()) { continue }
            if !named.isEmpty && named.contains(name.lowercased()) { continue }
            out.add(name: name, value: value)
        }
        return out
    }

    private static func connectionTokens(_ headers: HTTPHeaders) -> Set<String> {
        let values = headers["connection"]
        if values.isEmpty { return [] }
        var set = Set<String>()
        for v in values {
            for token in v.split(separator: ",") {
                set.insert(token.trimmingCharacters(in: " \t").lowercased())
            }
        }
        return set
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
