import Foundation
import NIOCore
import Testing

@testable import Wire

/// `ResponseFacts` reads a response in one validating pass that walks into the members it needs. These tests hold
/// it to what reading the same document as `JSONNode`s (parse, then look members up) gives, on generated responses
/// with repeated members, values of unexpected kinds and every place text can be.
@Suite("Response facts: one pass agrees with node lookups")
struct ResponseFactsTests {
    /// The node-based reading: what `fromBody` must give. Repeated members inside a tool call or an output item
    /// count as their last occurrence (a lookup by key); every `choices`, `message` and `content` is read.
    static func reference(_ body: ByteBuffer, textOnlyWithoutUsage: Bool, streamed: Bool = false) -> ResponseFacts {
        guard let root = try? JSONNode.parse(body), root.kind == .object else { return ResponseFacts() }
        var facts = ResponseFacts()
        var text = ""
        root.forEachMember { key, value in
            switch key.string {
            case "choices":
                value.forEachElement { choice in
                    choice.forEachMember { key, value in
                        switch key.string {
                        case "finish_reason":
                            if let r = value.string { facts.finishReasons.append(r) }
                        case "text":
                            if let t = value.string { text += t }
                        case streamed ? "delta" : "message":
                            value.forEachMember { k, v in
                                if k.string == "content" || k.string == "refusal" {
                                    if let c = v.string { text += c }
                                } else if k.string == "tool_calls" {
                                    v.forEachElement { call in
                                        if let f = call["function"] {
                                            if let n = f["name"]?.string { text += n }
                                            if let a = f["arguments"]?.string { text += a }
                                        }
                                    }
                                }
                            }
                        default: break
                        }
                    }
                }
            case "id": if facts.id == nil { facts.id = value.string }
            case "model": if facts.model == nil { facts.model = value.string }
            case "usage": if let u = referenceUsage(value) { facts.usage = u }
            case "output":
                value.forEachElement { item in
                    item["content"]?.forEachElement { part in
                        if let t = part["text"]?.string { text += t }
                    }
                    if let a = item["arguments"]?.string { text += a }
                }
            default: break
            }
        }
        if !textOnlyWithoutUsage || facts.usage == nil { facts.completionText = text }
        return facts
    }

    static func referenceUsage(_ node: JSONNode) -> Usage? {
        guard node.kind == .object else { return nil }
        if let p = node["prompt_tokens"]?.int {
            return Usage(promptTokens: p, completionTokens: node["completion_tokens"]?.int ?? 0,
                         cachedTokens: node["prompt_tokens_details"]?["cached_tokens"]?.int ?? 0,
                         reasoningTokens: node["completion_tokens_details"]?["reasoning_tokens"]?.int ?? 0)
        }
        if let p = node["input_tokens"]?.int {
            return Usage(promptTokens: p, completionTokens: node["output_tokens"]?.int ?? 0,
                         cachedTokens: node["input_tokens_details"]?["cached_tokens"]?.int ?? 0,
                         reasoningTokens: node["output_tokens_details"]?["reasoning_tokens"]?.int ?? 0)
        }
        return nil
    }

    /// Random response-shaped JSON: the members the facts come from, sometimes repeated, sometimes of another kind.
    /// A class: the builders below call each other through closures.
    final class Generator {
        var state: UInt64
        init(state: UInt64) { self.state = state }
        func next(_ n: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(n))
        }
        func odd() -> String {
            ["null", "12", "-3", "1.5", "true", "[]", "{}", #"{"x":[1,{"y":"z"}]}"#, #""s\u00e9\"q""#][next(9)]
        }
        func string() -> String {
            [#""a""#, #""h\u00e9llo""#, #""line\nbreak""#, #""tab\t\"q\"""#, #""""#, #""\ud83d\ude00""#][next(6)]
        }
        func maybe(_ value: () -> String) -> String { next(5) == 0 ? odd() : value() }
        func object(_ members: [(String, () -> String)], extra: Bool = true) -> String {
            var parts: [String] = []
            for (k, v) in members where next(4) != 0 {
                parts.append(#""\#(k)":\#(maybe(v))"#)
                if next(6) == 0 { parts.append(#""\#(k)":\#(maybe(v))"#) }  // repeated
            }
            if extra && next(3) == 0 { parts.append(#""index":\#(next(5))"#) }
            for i in (0..<parts.count).reversed() where next(5) == 0 { parts.swapAt(i, next(i + 1)) }
            return "{" + parts.joined(separator: next(2) == 0 ? "," : " , ") + "}"
        }
        func array(_ element: () -> String) -> String {
            "[" + (0..<next(3)).map { _ in element() }.joined(separator: ",") + "]"
        }
        func number() -> String { ["0", "7", "123", "9223372036854775807", "99999999999999999999", "1e3"][next(6)] }

        func response(streamed: Bool) -> String {
            let g = self
            func function() -> String { g.object([("name", { g.string() }), ("arguments", { g.string() })]) }
            func call() -> String { g.object([("id", { g.string() }), ("function", function)]) }
            func message() -> String {
                g.object([("role", { g.string() }), ("content", { g.string() }), ("refusal", { g.string() }),
                          ("tool_calls", { g.array(call) })])
            }
            func choice() -> String {
                g.object([(streamed ? "delta" : "message", message), ("text", { g.string() }),
                          ("finish_reason", { g.string() }), ("logprobs", { "null" })])
            }
            func details(_ k: String) -> String { g.object([(k, { g.number() })]) }
            func usage() -> String {
                g.object([("prompt_tokens", { g.number() }), ("completion_tokens", { g.number() }),
                          ("input_tokens", { g.number() }), ("output_tokens", { g.number() }),
                          ("prompt_tokens_details", { details("cached_tokens") }),
                          ("completion_tokens_details", { details("reasoning_tokens") }),
                          ("input_tokens_details", { details("cached_tokens") }),
                          ("output_tokens_details", { details("reasoning_tokens") })])
            }
            func part() -> String { g.object([("type", { #""output_text""# }), ("text", { g.string() })]) }
            func item() -> String { g.object([("content", { g.array(part) }), ("arguments", { g.string() })]) }
            return g.object([("id", { g.string() }), ("model", { g.string() }), ("choices", { g.array(choice) }),
                             ("usage", usage), ("output", { g.array(item) }), ("object", { g.string() })])
        }
    }

    @Test func agreesWithNodeLookupsOnGeneratedResponses() throws {
        let g = Generator(state: 0x5EED)
        var withUsage = 0
        var withText = 0
        for _ in 0..<3000 {
            let doc = g.response(streamed: false)
            let body = ByteBuffer(string: doc)
            #expect((try? JSONSerialization.jsonObject(with: Data(doc.utf8))) != nil, "\(doc)")
            for lean in [false, true] {
                let got = ResponseFacts.fromBody(body, textOnlyWithoutUsage: lean)
                let want = Self.reference(body, textOnlyWithoutUsage: lean)
                #expect(got == want, "\(doc)")
                if got.usage != nil { withUsage += 1 }
                if !got.completionText.isEmpty { withText += 1 }
            }
        }
        // The generator reaches both branches often.
        #expect(withUsage > 1000 && withText > 1000)
    }

    @Test func streamChunksAgreeWithNodeLookups() throws {
        let g = Generator(state: 0xC0FFEE)
        for _ in 0..<1000 {
            let doc = g.response(streamed: true)
            var got = ResponseFacts()
            got.absorb(chunk: ByteBuffer(string: doc))
            #expect(got == Self.reference(ByteBuffer(string: doc), textOnlyWithoutUsage: false, streamed: true), "\(doc)")
        }
    }

    @Test func streamsReadChunkByChunkAgreeWithNodeLookups() throws {
        // The stream tap's reading (one validating pass per chunk, merged when valid) against node lookups on each
        // chunk that parses, merged the way a stream's facts add up (first id and model, last usage, every finish
        // reason and text in order); sequences of chunks, some cut short (which add nothing either way).
        let g = Generator(state: 0xBADC0DE)
        for _ in 0..<400 {
            var byChunk = ResponseFacts()
            var byNode = ResponseFacts()
            for _ in 0..<(1 + g.next(5)) {
                var doc = Array(g.response(streamed: true).utf8)
                if g.next(4) == 0 { doc.removeSubrange((1 + g.next(doc.count - 1))...) }
                let buffer = ByteBuffer(bytes: doc)
                byChunk.absorb(chunk: buffer)
                if let root = try? JSONNode.parse(buffer), root.kind == .object {
                    let c = Self.reference(buffer, textOnlyWithoutUsage: false, streamed: true)
                    if byNode.id == nil { byNode.id = c.id }
                    if byNode.model == nil { byNode.model = c.model }
                    if let u = c.usage { byNode.usage = u }
                    byNode.finishReasons += c.finishReasons
                    byNode.completionText += c.completionText
                }
            }
            #expect(byChunk == byNode)
        }
    }

    @Test func truncatedOrBrokenResponsesGiveNoFacts() {
        let g = Generator(state: 42)
        for _ in 0..<300 {
            let doc = Array(g.response(streamed: false).utf8)
            guard doc.count > 2 else { continue }
            let cut = 1 + g.next(doc.count - 1)
            var broken = doc
            broken.removeSubrange(cut...)
            #expect(ResponseFacts.fromBody(ByteBuffer(bytes: broken)) == ResponseFacts())
            var garbled = doc
            garbled[cut] = UInt8(ascii: "\u{1}")
            if (try? JSONSerialization.jsonObject(with: Data(garbled))) == nil {
                #expect(ResponseFacts.fromBody(ByteBuffer(bytes: garbled)) == ResponseFacts())
            }
        }
    }
}
