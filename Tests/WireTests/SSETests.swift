import Foundation
import NIOCore
import Testing

@testable import Wire

@Suite("SSE framing and the stream tap")
struct SSETests {
    static let chunks = [
        #"data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#,
        #"data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null}"#,
        #"data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}],"usage":null}"#,
        #"data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":1}}}"#,
        "data: [DONE]",
    ]

    static var stream: String { chunks.map { $0 + "\n\n" }.joined() }

    /// `text` fed to a new framer in chunks of `split` bytes: the events, and the framer after the last chunk.
    static func frame(_ text: String, split: Int) -> ([SSEEvent], SSEFramer) {
        let bytes = Array(text.utf8)
        var framer = SSEFramer()
        var events: [SSEEvent] = []
        var i = 0
        while i < bytes.count {
            let j = min(bytes.count, i + split)
            events += framer.feed(ByteBuffer(bytes: bytes[i..<j]))
            i = j
        }
        return (events, framer)
    }

    @Test func framesAcrossArbitrarySplits() {
        for split in [1, 2, 3, 7, 50, 1000] {
            let (events, framer) = Self.frame(Self.stream, split: split)
            #expect(events.count == 5, "split \(split)")
            #expect(events.map { String(buffer: $0.raw) }.joined() == Self.stream)
            #expect(String(buffer: events[4].data!) == "[DONE]")
            #expect(framer.bufferedBytes == 0)
        }
    }

    @Test func crlfCrAndMultiLineData() throws {
        var framer = SSEFramer()
        var events = framer.feed(ByteBuffer(string: "event: x\r\ndata: a\r\ndata:b\r\n\r\n: comment\rdata: c\r\r"))
        // A CR at the very end may be the first half of a CRLF: that event waits for the next byte.
        #expect(events.count == 1)
        events += framer.feed(ByteBuffer(string: "\n"))
        try #require(events.count == 2)
        #expect(String(buffer: events[0].data!) == "a\nb")
        #expect(events[0].dataOffset == nil)
        #expect(String(buffer: events[1].data!) == "c")
    }

    /// Line breaks are found eight bytes at a time: every line length from 0 to 40 (breaks at every offset of a
    /// word), each ending (LF, CRLF, CR), fed whole and a byte at a time, gives the events and data a byte-by-byte
    /// reading gives.
    @Test func framesLinesOfEveryLengthAndEnding() throws {
        for ending in ["\n", "\r\n", "\r"] {
            var stream = ""
            var expected: [(raw: String, data: String)] = []
            for length in 0...40 {
                let value = String(repeating: "x", count: length)
                let raw = ": c\(length)" + ending + "data: " + value + ending + "data:" + value.prefix(length / 2) + ending
                    + ending
                stream += raw
                expected.append((raw, value + "\n" + value.prefix(length / 2)))
            }
            // A CR ending leaves the last event waiting for a possible LF: a final event with LF ends the stream.
            stream += "data: end\n\n"
            expected.append(("data: end\n\n", "end"))
            for split in [stream.utf8.count, 1] {
                let (events, framer) = Self.frame(stream, split: split)
                try #require(events.count == expected.count, "ending \(ending.debugDescription), split \(split)")
                for (e, x) in zip(events, expected) {
                    #expect(String(buffer: e.raw) == x.raw)
                    #expect(e.data.map { String(buffer: $0) } == x.data)
                }
                #expect(framer.bufferedBytes == 0)
            }
        }
    }

    @Test func tapReadsUsageAndTextWithoutChangingBytes() {
        var tap = StreamTap(stripInjectedUsage: false)
        var out = ""
        let bytes = Array(Self.stream.utf8)
        var i = 0
        while i < bytes.count {
            let j = min(bytes.count, i + 37)
            out += String(buffer: tap.observe(ByteBuffer(bytes: bytes[i..<j])))
            i = j
        }
        #expect(out == Self.stream)
        #expect(tap.facts.usage == Usage(promptTokens: 9, completionTokens: 2, cachedTokens: 4, reasoningTokens: 1))
        #expect(tap.facts.completionText == "Hello")
        #expect(tap.facts.finishReasons == ["stop"])
        #expect(tap.facts.model == "gpt-4o")
        #expect(tap.sawDone)
    }

    @Test func tapStripsInjectedUsageExactly() {
        var tap = StreamTap(stripInjectedUsage: true)
        let bytes = Array(Self.stream.utf8)
        var out = ""
        var i = 0
        while i < bytes.count {
            let j = min(bytes.count, i + 13)
            out += String(buffer: tap.observe(ByteBuffer(bytes: bytes[i..<j])))
            i = j
        }
        let expected = Self.chunks.enumerated().filter { $0.offset != 3 }
            .map { $0.element.replacingOccurrences(of: #","usage":null"#, with: "") + "\n\n" }.joined()
        #expect(out == expected)
        #expect(tap.facts.usage?.promptTokens == 9)
    }

    @Test func nonStreamedFacts() {
        let body = ByteBuffer(string: #"{"id":"x","model":"m","choices":[{"message":{"role":"assistant","content":null,"tool_calls":[{"function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":3}}"#)
        let f = ResponseFacts.fromBody(body)
        #expect(f.usage == Usage(promptTokens: 5, completionTokens: 3))
        #expect(f.completionText == #"f{"a":1}"#)
        #expect(f.finishReasons == ["tool_calls"])
        // The accounting's form decodes the text only when there is no usage to take the completion's count from.
        let lean = ResponseFacts.fromBody(body, textOnlyWithoutUsage: true)
        #expect(lean.usage == f.usage && lean.id == "x" && lean.model == "m" && lean.finishReasons == ["tool_calls"])
        #expect(lean.completionText == "")
        let noUsage = ResponseFacts.fromBody(ByteBuffer(string: #"{"id":"y","choices":[{"message":{"content":"Hi \u00e9"},"finish_reason":"stop"},{"text":"!"}]}"#),
                                             textOnlyWithoutUsage: true)
        #expect(noUsage.usage == nil && noUsage.id == "y" && noUsage.finishReasons == ["stop"])
        #expect(noUsage.completionText == "Hi \u{e9}!")
        // The walk validates the whole document: whatever comes before a fault, an invalid body gives no facts.
        for invalid in [#"{"id":"x","usage":{"prompt_tokens":1,"completion_tokens":1}} x"#,
                        #"{"id":"x","usage":{"prompt_tokens":1,"completion_tokens":1},"choices":[1,]}"#,
                        #"{"id":"x" "model":"m"}"#, #"["id"]"#, ""]
        {
            #expect(ResponseFacts.fromBody(ByteBuffer(string: invalid), textOnlyWithoutUsage: true) == ResponseFacts())
            #expect(ResponseFacts.fromBody(ByteBuffer(string: invalid)) == ResponseFacts())
        }
        #expect(ResponseFacts.fromBody(ByteBuffer(string: " {} \n")) == ResponseFacts())
        #expect(ResponseFacts.fromBody(ByteBuffer(string: #" {"model":"m"} "#)).model == "m")
        let responses = ResponseFacts.fromBody(ByteBuffer(string: #"{"output":[{"content":[{"type":"output_text","text":"hi"}]}],"usage":{"input_tokens":4,"output_tokens":1,"input_tokens_details":{"cached_tokens":2}}}"#))
        #expect(responses.usage == Usage(promptTokens: 4, completionTokens: 1, cachedTokens: 2))
        #expect(responses.completionText == "hi")
    }
}


@Suite("SSE: nothing is lost")
struct SSELossTests {
    @Test func strippingCutsTheUsageMemberWhereverItIs() {
        let cases: [(String, String)] = [
            (#"{"usage":null,"choices":[{"i":0}]}"#, #"{"choices":[{"i":0}]}"#),
            (#"{ "usage" : null , "id":"a","choices":[1]}"#, #"{ "id":"a","choices":[1]}"#),
            (#"{"id":"a", "usage":null, "choices":[1]}"#, #"{"id":"a", "choices":[1]}"#),
            (#"{"choices":[1],"usage":null}"#, #"{"choices":[1]}"#),
            (#"{"usage":null}"#, #"{}"#),
            (#"{"usage":{"a":1},"choices":[1],"usage":null}"#, #"{"usage":{"a":1},"choices":[1]}"#),
            (#"{"usage":null,"choices":[1]}"#, #"{"choices":[1]}"#),
            (#"{"choices":[1],"usage":{"prompt_tokens":3}}"#, #"{"choices":[1]}"#),
            (#"{"choices":[ ],"usage":{"prompt_tokens":3}}"#, ""),
            (#"{"usage":{"prompt_tokens":3}}"#, ""),
            (#"{"choices":"x","usage":{"prompt_tokens":3}}"#, ""),
            (#"{"choices":[1]}"#, #"{"choices":[1]}"#),
        ]
        for (data, expected) in cases {
            var tap = StreamTap(stripInjectedUsage: true, collectFacts: false)
            let out = String(buffer: tap.observe(ByteBuffer(string: "data: \(data)\r\n\r\n")))
            #expect(out == (expected.isEmpty ? "" : "data: \(expected)\r\n\r\n"), "\(data)")
            #expect(tap.facts == ResponseFacts())
        }
        // Data split over two lines cannot be cut in place: the event goes as it came, unless it is the
        // usage-only chunk, which is dropped whatever its shape.
        var tap = StreamTap(stripInjectedUsage: true)
        let twoLines = "data: {\"usage\":null,\ndata: \"choices\":[1]}\n\n"
        #expect(String(buffer: tap.observe(ByteBuffer(string: twoLines))) == twoLines)
        let usageOnly = "data: {\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":3}}\n\n"
        #expect(tap.observe(ByteBuffer(string: usageOnly)).readableBytes == 0)
    }

    @Test func unfinishedLastEventIsHandedBack() {
        var tap = StreamTap(stripInjectedUsage: true)
        let a = tap.observe(ByteBuffer(string: "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":null}\n\ndata: [DO"))
        #expect(String(buffer: a) == "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n")
        #expect(tap.heldBytes == 9)
        #expect(String(buffer: tap.finish()) == "data: [DO")
        #expect(tap.heldBytes == 0)
    }
}

@Suite struct ByteHashTests {
    @Test func seedsLengthsAndCase() {
        func h(_ s: String, seed: UInt64 = 0, fold: Bool = false) -> UInt64 {
            Array(s.utf8).withUnsafeBytes { ByteHash.hash($0, seed: seed, foldingCase: fold) }
        }
        let t = "The same system prompt, sent with every turn of the conversation."
        #expect(h(t) == h(t))
        #expect(h(t, seed: 1) != h(t, seed: 2))
        #expect(h(t) != h(t.uppercased()))
        #expect(h(t, fold: true) == h(t.uppercased(), fold: true))
        #expect(h("é", fold: true) == h("é", fold: true) && h("É", fold: true) != h("é", fold: true))
        #expect(h("") == h("") && h("") != h("\u{0}") && h("\u{0}") != h("\u{0}\u{0}"))
        var seen = Set<UInt64>()
        for n in 0..<64 { seen.insert(h(String(repeating: "a", count: n))) }
        #expect(seen.count == 64)
    }
}

@Suite("URL query values")
struct URLQueryTests {
    @Test func valuesAreDecodedLikeFoundation() {
        #expect(URLQuery.value("model", in: "/v1/realtime?model=gpt-realtime") == "gpt-realtime")
        #expect(URLQuery.value("model", in: "/v1/realtime?x=1&model=a%2Fb+c&model=second") == "a/b c")
        #expect(URLQuery.value("model", in: "/v1/realtime?models=x&model=%C3%A9") == "\u{e9}")
        #expect(URLQuery.value("model", in: "/v1/realtime") == nil)
        #expect(URLQuery.value("model", in: "/v1/realtime?modelx=1") == nil)
        #expect(URLQuery.value("model", in: "/v1/realtime?model=") == "")
        // Malformed escapes or bytes that are not UTF-8: the value as written, `+` as a space.
        #expect(URLQuery.value("model", in: "?model=a%zz+b") == "a%zz b")
        #expect(URLQuery.value("model", in: "?model=a%F") == "a%F")
        #expect(URLQuery.value("model", in: "?model=%FF") == "%FF")
        for s in ["a%2Fb+c", "%C3%A9x", "a%zz", "%FF", "plain", "%e2%82%ac"] {
            let foundation = s.replacingOccurrences(of: "+", with: " ")
            #expect(URLQuery.value("m", in: "/p?m=" + s) == (foundation.removingPercentEncoding ?? foundation), "\(s)")
        }
    }
}
