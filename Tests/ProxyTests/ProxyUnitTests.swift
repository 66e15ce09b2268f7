import NIOCore
import NIOHTTP1
import Testing

@testable import Proxy

@Suite("Proxy: configuration and header rules")
struct ProxyUnitTests {
    @Test func upstreamURLParsing() throws {
        let a = try UpstreamURL("https://api.openai.com/v1")
        #expect(a.base == "https://api.openai.com:443/v1")
        let b = try UpstreamURL("http://127.0.0.1:9001/v1/")
        #expect(b.base == "http://127.0.0.1:9001/v1")
        #expect(b.port == 9001)
        let c = try UpstreamURL("http://[::1]:8000")
        #expect(c.host == "::1")
        #expect(c.base == "http://[::1]:8000")
        for bad in ["api.openai.com/v1", "ftp://x/v1", "http://:80/v1", "http://h:99999/v1", "http://h/v1?q=1"] {
            #expect(throws: ProxyError.self) { try UpstreamURL(bad) }
        }
    }

    @Test func requestHeadersDropHopByHopAndKeepCredentials() {
        var h = HTTPHeaders()
        h.add(name: "Host", value: "127.0.0.1:8080")
        h.add(name: "Authorization", value: "Bearer sk-test")
        h.add(name: "OpenAI-Organization", value: "org-1")
        h.add(name: "OpenAI-Project", value: "proj-1")
        h.add(name: "Connection", value: "keep-alive, X-Private")
        h.add(name: "X-Private", value: "secret-hop")
        h.add(name: "Keep-Alive", value: "timeout=5")
        h.add(name: "Proxy-Authorization", value: "Basic x")
        h.add(name: "TE", value: "trailers")
        h.add(name: "Transfer-Encoding", value: "chunked")
        h.add(name: "Upgrade", value: "h2c")
        h.add(name: "Content-Length", value: "10")
        h.add(name: "Accept-Encoding", value: "gzip")
        h.add(name: "User-Agent", value: "OpenAI/Python 1.0")
        let out = ForwardingHeaders.upstreamRequestHeaders(h)
        #expect(out.map(\.name) == ["Authorization", "OpenAI-Organization", "OpenAI-Project", "Accept-Encoding", "User-Agent"])
    }

    @Test func responseHeadersDropHopByHop() {
        var h = HTTPHeaders()
        h.add(name: "content-type", value: "text/event-stream")
        h.add(name: "transfer-encoding", value: "chunked")
        h.add(name: "connection", value: "keep-alive")
        h.add(name: "x-request-id", value: "r1")
        h.add(name: "openai-processing-ms", value: "12")
        let out = ForwardingHeaders.clientResponseHeaders(h)
        #expect(out.map(\.name) == ["content-type", "x-request-id", "openai-processing-ms"])
    }

    @Test func headerNamesMatchIgnoringCaseOnly() {
        var h = HTTPHeaders()
        h.add(name: "TraceParent", value: "00-client")
        h.add(name: "AUTHORIZATION", value: "Bearer client")
        h.add(name: "CONNECTION", value: "Close , x-Drop-Me,\tKeep-Alive")
        h.add(name: "X-DROP-ME", value: "1")
        h.add(name: "x-drop-mee", value: "kept: only the exact name is named")
        h.add(name: "Hostx", value: "kept")
        h.add(name: "tE", value: "trailers")
        h.add(name: "Expect", value: "100-continue")
        h.add(name: "x-app-id", value: "billing")
        let out = ForwardingHeaders.upstreamRequestHeaders(h, host: "up:1", contentLength: 3, traceparent: "00-ours",
                                                           authorization: "Bearer ours")
        #expect(out.map(\.name) == ["host", "x-drop-mee", "Hostx", "x-app-id", "content-length", "traceparent",
                                    "authorization"])
        #expect(out["traceparent"] == ["00-ours"])
        #expect(out["authorization"] == ["Bearer ours"])
        // Without replacements, the client's own trace and credentials pass as sent.
        let plain = ForwardingHeaders.upstreamRequestHeaders(h)
        #expect(plain["traceparent"] == ["00-client"])
        #expect(plain["authorization"] == ["Bearer client"])
        #expect(ForwardingHeaders.connectionTokens(h) == ["x-drop-me"])
        var r = HTTPHeaders()
        r.add(name: "Connection", value: "keep-alive")
        #expect(ForwardingHeaders.connectionTokens(r).isEmpty)
        #expect(ForwardingHeaders.equalsIgnoringCase("Content-LENGTH", "content-length"))
        #expect(!ForwardingHeaders.equalsIgnoringCase("content-lengtH2", "content-length"))
        #expect(!ForwardingHeaders.equalsIgnoringCase("content_length", "content-length"))
    }

    @Test func byteAndStringHeaderRulesAgree() {
        let names = ForwardingHeaders.hopByHop + ForwardingHeaders.recomputedOnRequest
            + ["content-type", "authorization", "x-request-id", "tee", "hosts", "keep-alive2", "Transfer-Encoding",
               "HOST", "Http2-Settings", "Proxy-Authorization", "upgrade-insecure-requests"]
        for name in names {
            var n = name
            n.withUTF8 { bytes in
                let raw = UnsafeRawBufferPointer(bytes)
                #expect(ForwardingHeaders.isHopByHop(raw) == ForwardingHeaders.isHopByHop(name), "\(name)")
                #expect(ForwardingHeaders.isDroppedOnRequest(raw)
                    == (ForwardingHeaders.isHopByHop(name) || ForwardingHeaders.isAny(name, of: ForwardingHeaders.recomputedOnRequest)),
                    "\(name)")
                if ForwardingHeaders.isDroppedOnRequest(raw) {
                    #expect(ForwardingHeaders.mayBeDropped(count: raw.count, first: raw[0]), "\(name)")
                }
            }
        }
    }

    @Test func endpointClassification() {
        #expect(Endpoint.classify(method: .POST, path: "/chat/completions") == .chatCompletions)
        #expect(Endpoint.classify(method: .POST, path: "/embeddings") == .embeddings)
        #expect(Endpoint.classify(method: .GET, path: "/chat/completions") == .other)
        #expect(Endpoint.classify(method: .POST, path: "/files") == .other)
        #expect(Endpoint.classify(method: .POST, path: "/completions") == .completions)
        #expect(Endpoint.classify(method: .POST, path: "/responses") == .responses)
        #expect(Endpoint.classify(method: .POST, path: "/chat/completions/") == .other)
        #expect(Endpoint.classify(method: .POST, path: "/chat/completion") == .other)
        #expect(Endpoint.classify(method: .POST, path: "") == .other)
        // A substring of a longer URI, as the handler passes it.
        let uri = "/v1/embeddings?x=1"
        #expect(Endpoint.classify(method: .POST, path: uri.dropFirst(3).prefix(11)) == .embeddings)
    }

    @Test func requestIDsAreUniqueAndHex() {
        let ids = RequestIDs()
        var seen = Set<String>()
        var prefix: Substring?
        for i in 1...300 {
            let id = ids.next()
            let parts = id.split(separator: "-", omittingEmptySubsequences: false)
            #expect(parts.count == 3 && parts[0] == "ao" && parts[1].count == 8, "\(id)")
            #expect(parts[1].allSatisfy { $0.isHexDigit && !$0.isUppercase }, "\(id)")
            if prefix == nil { prefix = parts[1] }
            #expect(parts[1] == prefix, "one prefix per process")
            #expect(UInt64(parts[2], radix: 16) == UInt64(i), "\(id)")
            #expect(seen.insert(id).inserted)
        }
    }

    @Test func tokenAndControlByteTests() {
        let tokenSpecials = Set("!#$%&'*+-.^_`|~".utf8)
        for b in 0...255 {
            let c = UInt8(b)
            let token = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                || tokenSpecials.contains(c)
            #expect(HeaderBytes.isTokenByte(c) == token, "byte \(b)")
        }
        // The eight-at-a-time control test agrees with the byte test on every placement of every byte value.
        var rng = SystemRandomNumberGenerator()
        for b in 0...255 {
            for length in [1, 7, 8, 9, 16, 23] {
                for at in 0..<length {
                    var bytes = (0..<length).map { _ in UInt8.random(in: 0x20...0x7E, using: &rng) }
                    if bytes.contains(0x7F) { bytes = bytes.map { $0 == 0x7F ? 0x41 : $0 } }
                    bytes[at] = UInt8(b)
                    if b % 3 == 0 { bytes[(at + 3) % length] = 0x09 }
                    let naive = bytes.contains(where: HeaderBytes.isControl)
                    bytes.withUnsafeBytes { p in
                        #expect(HeaderBytes.hasControl(p, 0, p.count) == naive, "byte \(b) at \(at) of \(length)")
                    }
                }
            }
        }
    }

    @Test func numericHeadersAreWrittenAsDigits() {
        var head = OutgoingHead(status: 200)
        head.add("x-a", milliseconds: .microseconds(1234))
        head.add("x-b", milliseconds: .microseconds(7))
        head.add("x-c", milliseconds: .nanoseconds(-5))
        head.add("x-d", milliseconds: .seconds(100_000))
        head.add("x-e", milliseconds: .microseconds(1_000_999))
        head.add("x-f", decimal: 0)
        head.add("x-g", decimal: -42)
        head.add("x-h", decimal: Int.max)
        head.add("x-i", decimal: Int.min)
        #expect(head.lines.getString(at: 0, length: head.lines.readableBytes) == [
            "x-a: 1.234", "x-b: 0.007", "x-c: 0.000", "x-d: 100000000.000", "x-e: 1000.999", "x-f: 0", "x-g: -42",
            "x-h: \(Int.max)", "x-i: \(Int.min)",
        ].map { $0 + "\r\n" }.joined())
        #expect(!head.hasContentLength)
    }
}

@Suite("Proxy: HTTP/1 response parsing and head serialization")
struct HTTP1WireTests {
    /// Feeds `wire` to a parser in pieces cut at `cuts`, as reads would deliver them; returns the events as
    /// (status, body bytes, ended, bytes left over).
    static func parse(_ wire: String, cuts: [Int] = [], noBody: Bool = false) throws
        -> (heads: [RawResponseHead], body: String, ends: Int, parser: ResponseParser)
    {
        let bytes = Array(wire.utf8)
        var parser = ResponseParser()
        var heads: [RawResponseHead] = []
        var body: [UInt8] = []
        var ends = 0
        var pending = ByteBuffer()
        var start = 0
        for end in (cuts + [bytes.count]).map({ min($0, bytes.count) }) where end >= start {
            pending.writeBytes(bytes[start..<end])
            start = end
            while let event = try parser.next(&pending, noBody: noBody) {
                switch event {
                case .head(let h): heads.append(h)
                case .body(let b): body += b.readableBytesView
                case .end: ends += 1
                }
            }
        }
        return (heads, String(decoding: body, as: UTF8.self), ends, parser)
    }

    @Test func contentLengthAtEverySplit() throws {
        let wire = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nX-Request-Id: r1\r\n\r\nhello world"
        for cut in 0...wire.utf8.count {
            let r = try Self.parse(wire, cuts: [cut])
            #expect(r.heads.count == 1)
            #expect(r.body == "hello world")
            #expect(r.ends == 1)
            #expect(!r.parser.mustClose)
            #expect(r.heads[0].status == 200)
            #expect(r.heads[0].first("x-request-id") == "r1")
            #expect(r.heads[0].firstValue("content-type", hasPrefix: "application/"))
        }
    }

    @Test func chunkedWithExtensionsAndTrailersAtEverySplit() throws {
        let wire = "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n5;ext=1\r\nhello\r\nB\r\n, world!!!!\r\n0\r\nx-trailer: t\r\n\r\n"
        for a in stride(from: 0, through: wire.utf8.count, by: 3) {
            for b in [a, a + 1, a + 7] {
                let r = try Self.parse(wire, cuts: [a, b])
                #expect(r.body == "hello, world!!!!")
                #expect(r.ends == 1)
                #expect(r.parser.isIdle)
            }
        }
    }

    @Test func interimHeadsSkippedAndBodylessResponses() throws {
        let r = try Self.parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok")
        #expect(r.heads.map(\.status) == [201])
        #expect(r.heads[0].reason == "Created")
        #expect(r.body == "ok")
        // HEAD: the length describes the body a GET would get; none follows.
        let head = try Self.parse("HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n", noBody: true)
        #expect(head.ends == 1 && head.body.isEmpty)
        let noContent = try Self.parse("HTTP/1.1 204 No Content\r\n\r\n")
        #expect(noContent.ends == 1)
        // No length, not chunked: the body runs until the connection closes.
        let open = try Self.parse("HTTP/1.0 200 OK\r\n\r\nabc", cuts: [20])
        #expect(open.body == "abc" && open.ends == 0)
        #expect(open.parser.isCloseDelimited && open.parser.mustClose)
        // HTTP/1.0 without keep-alive, and 1.1 with close, end the connection; bare LF line ends are accepted.
        #expect(try Self.parse("HTTP/1.0 200 OK\ncontent-length: 0\n\n").parser.mustClose)
        #expect(try Self.parse("HTTP/1.1 200 OK\r\nConnection: Close\r\ncontent-length: 0\r\n\r\n").parser.mustClose)
        #expect(!(try Self.parse("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\ncontent-length: 0\r\n\r\n").parser.mustClose))
        // A status line without a reason phrase.
        #expect(try Self.parse("HTTP/1.1 404\r\ncontent-length: 0\r\n\r\n").heads[0].status == 404)
    }

    @Test func malformedResponsesAreErrors() {
        let bad = [
            "HTTP/2.0 200 OK\r\n\r\n", "HTTP/1.1 2x0 OK\r\n\r\n", "ICY 200 OK\r\n\r\n", "HTTP/1.1 200OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n", "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\n: x\r\n\r\n", "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabX\r\n", "HTTP/1.1 101 Switching\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-Long: " + String(repeating: "a", count: 70_000),
            // Framed two ways: the client would get one framing while the upstream meant the other.
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\n",
            // Control characters in the reason phrase or a value (a bare CR could end a line downstream).
            "HTTP/1.1 200 OK\rX-Injected: evil\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-A: a\u{01}b\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-A: a\u{7F}\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 junk\r\nhello\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;" + String(repeating: "x", count: 2000) + "\r\n",
        ]
        for wire in bad {
            #expect(throws: HTTPWireError.self, "\(wire.prefix(60))") { try Self.parse(wire) }
        }
    }

    @Test func lenientButUnambiguousFraming() throws {
        // Leading zeros, whitespace before an extension, an empty Transfer-Encoding line after the real one.
        let r = try Self.parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding:\r\n\r\n"
            + "00000000000000005 ;a=b\r\nhello\r\n0\r\n\r\n")
        #expect(r.body == "hello" && r.ends == 1 && !r.parser.mustClose)
        // HTTP/1.0 with chunked framing: not reused, whatever Connection says (RFC 9112 section 6.1).
        let old = try Self.parse("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        #expect(old.ends == 1 && old.parser.mustClose)
    }

    @Test func valuesTheSidecarWritesCannotStartALine() {
        var out = OutgoingHead(status: 200)
        out.add("x-auto-optimizer-original-model", "gpt-4o\r\nX-Injected: yes\u{0}\tok")
        out.add(name: "retry-after", value: "1\n2")
        #expect(String(buffer: out.lines) == "x-auto-optimizer-original-model: gpt-4o  X-Injected: yes \tok\r\n"
            + "retry-after: 1 2\r\n")
        #expect(out.headers.count == 2)
    }

    @Test func forwardedLinesKeepBytesAndDropHopByHop() throws {
        let wire = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: keep-alive, X-Private\r\n"
            + "X-Private: s\r\nTE: trailers\r\nKeep-Alive: timeout=5\r\nopenai-processing-ms:  12 \r\n"
            + "Content-Length: 5\r\n\r\n"
        let head = try Self.parse(wire, noBody: true).heads[0]
        var out = OutgoingHead(status: head.status, reason: head.reason)
        out.addForwarded(head, dropContentLength: false)
        out.add("x-auto-optimizer-overhead-ms", "0.010")
        #expect(out.hasContentLength)
        #expect(String(buffer: out.lines) == "Content-Type: text/event-stream\r\nopenai-processing-ms:  12\r\n"
            + "Content-Length: 5\r\nx-auto-optimizer-overhead-ms: 0.010\r\n")
        var shortened = OutgoingHead(status: 200)
        shortened.addForwarded(head, dropContentLength: true)
        #expect(!shortened.hasContentLength)
        #expect(shortened.framing(version: .http1_1, bodyless: false) == .chunked)
        #expect(shortened.framing(version: .http1_0, bodyless: false) == .close)
        #expect(shortened.framing(version: .http1_1, bodyless: true) == .none)
        #expect(out.framing(version: .http1_1, bodyless: false) == .identity)
        let bytes = shortened.serialize(version: .http1_1, framing: .chunked, keepAlive: false, allocator: .init())
        #expect(String(buffer: bytes) == "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            + "openai-processing-ms:  12\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        #expect(out.headers.map(\.name) == ["Content-Type", "openai-processing-ms", "Content-Length",
                                            "x-auto-optimizer-overhead-ms"])
        #expect(out.headers["openai-processing-ms"] == ["12"])
    }

    @Test func headsWrittenInOneReservationKeepEveryByte() {
        // Statuses and lengths of every digit count, non-ASCII values, an empty reason and an empty value.
        for (status, reason) in [(200, "OK"), (7, ""), (404, "Not Found"), (599, "Ünknown")] {
            var head = OutgoingHead(status: status, reason: reason)
            head.add("x-model", "modèle-ü")
            head.add(name: "X-Empty", value: "")
            let bytes = head.serialize(version: .http1_0, framing: .identity, keepAlive: true, allocator: .init())
            #expect(String(buffer: bytes) == "HTTP/1.0 \(status) \(reason)\r\nx-model: modèle-ü\r\nX-Empty: \r\n"
                + "connection: keep-alive\r\n\r\n")
        }
        let parsed = RequestHead(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: [:]))
        for length in [0, 9, 10, 1_234_567, Int.max] {
            var out = ByteBuffer()
            ForwardingHeaders.writeUpstreamRequestHead(&out, method: .PUT, uri: "/v1/é", head: parsed, host: "h",
                                                       contentLength: length, traceparent: nil, authorization: "k")
            #expect(String(buffer: out) == "PUT /v1/é HTTP/1.1\r\nhost: h\r\ncontent-length: \(length)\r\n"
                + "authorization: k\r\n\r\n")
        }
    }

    @Test func upstreamRequestHeadMatchesTheHeaderRule() throws {
        var h = HTTPHeaders()
        h.add(name: "Host", value: "127.0.0.1:8080")
        h.add(name: "Authorization", value: "Bearer client")
        h.add(name: "Connection", value: "keep-alive, X-Private")
        h.add(name: "X-Private", value: "s")
        h.add(name: "Content-Length", value: "10")
        h.add(name: "User-Agent", value: "OpenAI/Python 1.0")
        var out = ByteBuffer()
        let parsed = RequestHead(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1", headers: h))
        ForwardingHeaders.writeUpstreamRequestHead(&out, method: .POST, uri: "/v1/chat/completions?x=1", head: parsed,
                                                   host: "up:1", contentLength: 3, traceparent: "00-ours",
                                                   authorization: nil)
        #expect(String(buffer: out) == "POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: up:1\r\n"
            + "Authorization: Bearer client\r\nUser-Agent: OpenAI/Python 1.0\r\ncontent-length: 3\r\n"
            + "traceparent: 00-ours\r\n\r\n")
        // The same head received as bytes by the own decoder: its lines are copied, the same ones dropped.
        var wire = ByteBuffer(string: "POST /v1/chat/completions HTTP/1.1\r\n"
            + h.map { "\($0.name): \($0.value)\r\n" }.joined() + "\r\n0123456789")
        var parser = RequestParser()
        guard case .head(let rawHead) = try parser.next(&wire) else {
            Issue.record("no head")
            return
        }
        var fromRaw = ByteBuffer()
        ForwardingHeaders.writeUpstreamRequestHead(&fromRaw, method: .POST, uri: "/v1/chat/completions?x=1",
                                                   head: RequestHead(rawHead), host: "up:1", contentLength: 3,
                                                   traceparent: "00-ours", authorization: nil)
        #expect(fromRaw == out)
        let list = ForwardingHeaders.upstreamRequestHeaders(h, host: "up:1", contentLength: 3, traceparent: "00-ours")
        #expect(list.map(\.name) == ["host", "Authorization", "User-Agent", "content-length", "traceparent"])
    }
}

@Suite("Proxy: HTTP/1 request parsing")
struct HTTP1RequestTests {
    struct Parsed {
        var heads: [RawRequestHead] = []
        var bodies: [String] = []
    }

    static func parse(_ wire: String, cuts: [Int] = []) throws -> Parsed {
        let bytes = Array(wire.utf8)
        var parser = RequestParser()
        var out = Parsed()
        var body: [UInt8] = []
        var pending = ByteBuffer()
        var start = 0
        for end in (cuts + [bytes.count]).map({ min($0, bytes.count) }) where end >= start {
            pending.writeBytes(bytes[start..<end])
            start = end
            while let event = try parser.next(&pending) {
                switch event {
                case .head(let h): out.heads.append(h)
                case .body(let b): body += b.readableBytesView
                case .end:
                    out.bodies.append(String(decoding: body, as: UTF8.self))
                    body = []
                }
            }
        }
        return out
    }

    @Test func pipelinedRequestsAtEverySplit() throws {
        let wire = "\r\nPOST /v1/chat/completions?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nAuthorization: Bearer k\r\n\r\nhello"
            + "POST /v1/embeddings HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n"
            + "GET /v1/models HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        for cut in 0...wire.utf8.count {
            let r = try Self.parse(wire, cuts: [cut])
            #expect(r.heads.map(\.uri) == ["/v1/chat/completions?a=1", "/v1/embeddings", "/v1/models"])
            #expect(r.heads.map(\.method) == [.POST, .POST, .GET])
            #expect(r.bodies == ["hello", "abcde", ""])
            #expect(r.heads[0].first("authorization") == "Bearer k")
            #expect(r.heads[2].minorVersion == 0 && r.heads[2].isKeepAlive(minorVersion: 0))
            #expect(RequestHead(r.heads[0]).isKeepAlive && RequestHead(r.heads[0]).version == .http1_1)
        }
    }

    @Test func toleratedVariants() throws {
        let r = try Self.parse("\r\n\r\nPOST /a HTTP/1.1\r\nContent-Length: 0000000000000000000002\r\n\r\nok"
            + "POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2 ;x=\"y\"\r\nhi\r\n0\r\n\r\n")
        #expect(r.heads.map(\.uri) == ["/a", "/b"])
        #expect(r.bodies == ["ok", "hi"])
    }

    @Test func ambiguousOrMalformedRequestsAreRefusedWithTheirStatus() {
        let cases: [(String, Int)] = [
            ("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 3x\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\n\r\n", 505),
            ("GET / HTTP/1.1 \r\n\r\n", 400),
            ("GET  / HTTP/1.1\r\n\r\n", 400),
            ("G@T / HTTP/1.1\r\n\r\n", 400),
            ("GET /\u{7F} HTTP/1.1\r\n\r\n", 400),
            ("GET /\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nX : a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", 400),
            ("GET / HTTP/1.1\r\nX: " + String(repeating: "a", count: 70_000), 431),
            // Framing another proxy in front could read differently.
            ("GET / HTTP/1.1\r\nX: a\nY: b\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\nq\r\n0\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\nq\r\n0\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a\rb\r\nq\r\n0\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nq\r\n0\r\n\u{1}: t\r\n\r\n", 400),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("GET /\u{E9} HTTP/1.1\r\n\r\n", 400),
            ("post / HTTP/1.1\r\n\r\n", 400),
            ("FOO / HTTP/1.1\r\n\r\n", 400),
        ]
        for (wire, status) in cases {
            do {
                _ = try Self.parse(wire)
                Issue.record("accepted: \(wire.prefix(60).debugDescription)")
            } catch let e as HTTPWireError {
                #expect(e.status == status, "\(wire.prefix(60).debugDescription): \(e)")
            } catch {
                Issue.record("unexpected \(error)")
            }
        }
    }
}
