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

    @Test func endpointClassification() {
        #expect(Endpoint.classify(method: .POST, path: "/chat/completions") == .chatCompletions)
        #expect(Endpoint.classify(method: .POST, path: "/embeddings") == .embeddings)
        #expect(Endpoint.classify(method: .GET, path: "/chat/completions") == .other)
        #expect(Endpoint.classify(method: .POST, path: "/files") == .other)
    }

    @Test func millisecondsFormat() {
        #expect(formatMillis(.microseconds(1234)) == "1.234")
        #expect(formatMillis(.microseconds(7)) == "0.007")
        #expect(formatMillis(.nanoseconds(-5)) == "0.000")
    }
}
