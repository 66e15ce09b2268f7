import Foundation
import NIOCore
import Testing
import Tokenizer
import Wire

@testable import Compression

/// Twelve short "retrieved" documents; document 9 answers the question.
let documents: [(String, String)] = [
    ("River Thames", "The River Thames flows through southern England, including London. It is 215 miles long and the longest river entirely in England."),
    ("Mount Everest", "Mount Everest is the highest mountain above sea level, at 8,849 metres. It lies in the Mahalangur range of the Himalayas."),
    ("Photosynthesis", "Photosynthesis is the process by which plants use sunlight, water and carbon dioxide to create oxygen and energy in the form of sugar."),
    ("Great Wall of China", "The Great Wall of China is a series of fortifications built across the historical northern borders of ancient Chinese states."),
    ("Jazz", "Jazz is a music genre that originated in the African-American communities of New Orleans in the late 19th and early 20th centuries."),
    ("Volcano", "A volcano is a rupture in the crust of a planetary-mass object that allows hot lava, volcanic ash and gases to escape."),
    ("Chess", "Chess is a board game for two players. It is played on a square board of 64 squares arranged in an eight-by-eight grid."),
    ("Amazon rainforest", "The Amazon rainforest covers much of the Amazon basin of South America, an area of about 7,000,000 square kilometres."),
    ("Nobel Prize in Physics", "The first Nobel Prize in Physics was awarded in 1901 to Wilhelm Conrad Röntgen, of Germany, for the discovery of X-rays. The prize is awarded by the Royal Swedish Academy of Sciences."),
    ("Coffee", "Coffee is a beverage brewed from roasted coffee beans. It is one of the most popular drinks in the world, with a history going back centuries."),
    ("Honeybee", "The honeybee is a eusocial flying insect known for the construction of perennial colonial nests from wax and for producing honey."),
    ("Printing press", "The printing press is a mechanical device for applying pressure to an inked surface resting upon a print medium, such as paper."),
]

let context = documents.enumerated().map { "Document [\($0.offset + 1)](Title: \($0.element.0)) \($0.element.1)" }
    .joined(separator: "\n")

@Suite struct SelectionTests {
    @Test func keepsTheAnsweringPassageWithinBudgetInOriginalOrder() throws {
        let enc = try o200k()
        let c = TextCompressor(encoding: enc)
        let q = "who won the first nobel prize in physics"
        for ratio in [0.5, 0.25] {
            let r = c.compress(context, question: q, ratio: ratio, options: CompressionOptions(minMessageTokens: 0))
            #expect(r.text.contains("Wilhelm Conrad Röntgen"), "ratio \(ratio): \(r.text)")
            #expect(r.techniques.contains(.selection))
            let exact = enc.count(r.text)
            #expect(Double(exact) <= Double(r.originalTokens) * ratio + 2, "ratio \(ratio): \(exact) of \(r.originalTokens)")
            // Kept documents appear in their original order, each with its header.
            let ids = r.text.split(separator: "\n").map { line -> Int in
                let s = line.dropFirst("Document [".count)
                return Int(s.prefix(while: \.isNumber))!
            }
            #expect(ids == ids.sorted())
            #expect(r.quality > 0.5)
        }
    }

    @Test func withoutAQuestionPruningKeepsProtectedSpans() throws {
        let enc = try o200k()
        let c = TextCompressor(encoding: enc)
        let text = """
            According to the report, the project "Blue Harbor" was started by Alice Johnson in 2019 and it was \
            described in detail at https://example.com/reports/blue-harbor?id=42 with the configuration flag \
            `max_retries=5` that the team used throughout the very long and rather repetitive evaluation period, \
            which was, as many people noted at the time, really quite a lot longer than anybody had expected it to \
            be when the whole thing was first proposed by the committee in the spring of that year.
            """
        let r = c.compress(text, question: nil, ratio: 0.6, options: CompressionOptions(minMessageTokens: 0))
        #expect(r.techniques.contains(.pruning))
        #expect(!r.text.contains("  "))
        for span in ["\"Blue Harbor\"", "Alice Johnson", "2019", "https://example.com/reports/blue-harbor?id=42",
                     "`max_retries=5`"]
        {
            #expect(r.text.contains(span), "lost \(span): \(r.text)")
        }
        #expect(enc.count(r.text) < r.originalTokens)
        #expect(r.quality > 0 && r.quality <= 1)
    }

    @Test func preservedSectionsAndQuestionsStayVerbatim() throws {
        let c = TextCompressor(encoding: try o200k())
        let filler = (0..<30).map { "This is filler sentence number \($0) about nothing in particular at all." }
            .joined(separator: " ")
        let text = "\(filler)\n\n## Instructions\nAnswer   in French. Keep it short and do not mention the filler.\n\n\(filler) Is this a question worth keeping?"
        var options = CompressionOptions(minMessageTokens: 0, preserveSections: ["## Instructions"])
        options.preserveQuestions = true
        let r = c.compress(text, question: nil, ratio: 0.3, options: options)
        #expect(r.text.contains("## Instructions\nAnswer in French. Keep it short and do not mention the filler."))
        #expect(r.text.contains("Is this a question worth keeping?"))
        #expect(r.tokens < r.originalTokens / 2)
    }

    @Test func shortTextsAreLeftAlone() throws {
        let c = TextCompressor(encoding: try o200k())
        let r = c.compress("A short message.", question: "what?", ratio: 0.2, options: CompressionOptions(minMessageTokens: 50))
        #expect(r.text == "A short message.")
        #expect(r.techniques.isEmpty)
    }
}

func view(_ json: String) throws -> RequestView { try RequestView.parse(ByteBuffer(string: json)) }

func chat(_ messages: [[String: Any]], extra: String = "") throws -> String {
    let data = try JSONSerialization.data(withJSONObject: ["messages": messages], options: [.sortedKeys])
    var s = String(decoding: data, as: UTF8.self)
    s.insert(contentsOf: #""model":"gpt-4o","temperature":0.70,\#(extra)"#, at: s.index(after: s.startIndex))
    return s
}

@Suite struct PromptCompressorTests {
    let system = "You are a careful assistant. Answer from the documents only.   Be brief."
    let question = "who won the first nobel prize in physics?"

    @Test func touchesOnlyEligibleMessagesAndUsesTheLastUserTurnAsQuestion() throws {
        let body = try chat([
            ["role": "system", "content": system],
            ["role": "user", "content": context],
            ["role": "assistant", "content": "", "tool_calls": [["id": "c1", "type": "function",
                "function": ["name": "search", "arguments": "{\"q\":  \"nobel   physics\"}"]]]],
            ["role": "tool", "tool_call_id": "c1", "content": context.split(separator: "\n").reversed().joined(separator: "\n")],
            ["role": "user", "content": question + "   Please   answer."],
        ])
        let v = try view(body)
        let p = PromptCompressor(encoding: try o200k())
        let r = p.compress(v, options: CompressionOptions(targetRatio: 0.4, minMessageTokens: 0))
        #expect(r.applied)
        #expect(Set(r.edits.map(\.index)) == [1, 3])
        for (_, text) in r.edits {
            #expect(String(decoding: text, as: UTF8.self).contains("Wilhelm Conrad Röntgen"))
        }
        #expect(r.tokensSaved > 0)
        #expect(r.techniques.contains(.selection))
        // Apply: the system prompt, the tool call arguments, the last user turn and every other byte stay.
        var patch = BodyPatch()
        for (i, t) in r.edits { v.patchMessageContent(i, text: String(decoding: t, as: UTF8.self), into: &patch) }
        let out = patch.apply(to: v.body)
        let sent = String(buffer: out)
        let w = try RequestView.parse(out)
        #expect(w.text(ofMessage: 0) == system)
        #expect(w.text(ofMessage: 4) == question + "   Please   answer.")
        #expect(sent.contains(#""arguments":"{\"q\":  \"nobel   physics\"}""#))
        #expect(sent.hasPrefix(#"{"model":"gpt-4o","temperature":0.70,"#))
        #expect(out.readableBytes < v.body.readableBytes)
    }

    @Test func repeatedBlocksAcrossTheConversationGo() throws {
        let block = "Refund policy: customers may return any unused item within 30 days of delivery for a full refund."
        let body = try chat([
            ["role": "system", "content": "Support bot. " + block],
            ["role": "user", "content": "My order arrived broken.\n\n" + block],
            ["role": "assistant", "content": "Sorry to hear that."],
            ["role": "user", "content": "Can I return it?"],
        ])
        let r = PromptCompressor(encoding: try o200k()).compress(
            try view(body), options: CompressionOptions(targetRatio: 1, minMessageTokens: 0))
        // The system prompt holds the block inside a longer paragraph: only whole blocks count.
        #expect(r.edits.isEmpty)

        let body2 = try chat([
            ["role": "system", "content": block],
            ["role": "user", "content": "My order arrived broken.\n\n" + block],
            ["role": "user", "content": "Can I return it?"],
        ])
        let r2 = PromptCompressor(encoding: try o200k()).compress(
            try view(body2), options: CompressionOptions(targetRatio: 1, minMessageTokens: 0))
        #expect(r2.edits.count == 1)
        #expect(r2.edits.first.map { String(decoding: $0.text, as: UTF8.self) } == "My order arrived broken.")
        #expect(r2.techniques.contains(.dedup))
    }

    @Test func blockHashFoldsLetterCaseOnly() {
        func h(_ s: String) -> UInt64 {
            let b = Array(s.utf8)
            return b.withUnsafeBufferPointer { ByteHash.hash($0.baseAddress!, count: $0.count, foldingCase: true) }
        }
        let text = "Orders ship within 3 days; returns are free for 30 days. [Ref: ABC-12] Ünïcode stays as it is."
        #expect(h(text) == h(text.uppercased().replacingOccurrences(of: "ÜNÏCODE", with: "Ünïcode")))
        #expect(h(text) == h(text.lowercased().replacingOccurrences(of: "ünïcode", with: "Ünïcode")))
        #expect(h(text) != h(text.replacingOccurrences(of: "3 days", with: "4 days")))
        #expect(h(text) != h(text + " "))
        #expect(h("@[`{") != h("`{@[") && h("Z") == h("z") && h("[") != h("{"))
        // Every length around the 8-byte steps.
        for n in 1...40 {
            let a = String(repeating: "x", count: n - 1) + "A"
            #expect(h(a) == h(a.lowercased()))
            #expect(h(a) != h(String(repeating: "x", count: n - 1) + "B"))
        }
    }

    @Test func blocksSplitAtBlankLines() {
        let t = Array("one\ntwo\n\n  \t\nthree\n\nfour\n".utf8)
        let parts = Lossless.blocks(t).map { String(decoding: t[$0], as: UTF8.self) }
        #expect(parts == ["one\ntwo", "three", "four\n"])
        #expect(Lossless.blocks(Array("no break".utf8)) == [0..<8])
        #expect(Lossless.blocks([]) == [])
    }

    @Test func wholeRepeatedMessagesBecomeAMarker() throws {
        let body = try chat([
            ["role": "user", "content": context], ["role": "tool", "tool_call_id": "x", "content": context],
            ["role": "user", "content": question],
        ])
        let r = PromptCompressor(encoding: try o200k()).compress(
            try view(body), options: CompressionOptions(targetRatio: 1, minMessageTokens: 0))
        #expect(r.edits.count == 1)
        #expect(r.edits.first?.index == 1)
        #expect(r.edits.first.map { String(decoding: $0.text, as: UTF8.self) } == PromptCompressor.repeatedMarker)
    }

    @Test func qualityGuardSendsTheOriginal() throws {
        let body = try chat([["role": "user", "content": context], ["role": "user", "content": "Summarize this."]])
        let r = PromptCompressor(encoding: try o200k()).compress(
            try view(body), options: CompressionOptions(targetRatio: 0.1, minMessageTokens: 0, minQuality: 0.999))
        #expect(!r.applied)
        #expect(r.edits.isEmpty)
        #expect(r.tokensSaved == 0)
        #expect(r.quality < 0.999)
    }

    @Test func smallPromptsAreSkipped() throws {
        let body = try chat([["role": "user", "content": context], ["role": "user", "content": question]])
        let r = PromptCompressor(encoding: try o200k()).compress(
            try view(body), options: CompressionOptions(targetRatio: 0.5, minPromptTokens: 100_000))
        #expect(r.edits.isEmpty)
        #expect(r.skipped == "below min_prompt_tokens")
    }
}

@Suite struct RobustnessTests {
    /// Seeded random texts from a mix of words, punctuation, whitespace runs, fences, JSON-ish and non-Latin scripts:
    /// every ratio and question must give valid UTF-8 no longer than the input, without crashing.
    @Test func randomTextsNeverBreakTheCompressor() throws {
        let c = TextCompressor(encoding: try o200k())
        let atoms = ["the", "The", "Document [3](Title: X (y))", "\n", "\n\n\n", "   ", "\t", "```", "```json\n",
                     "{", "}", "[", "]", "\"", "`", ".", "?", "!", ",", "1901", "3.14", "Röntgen", "日本語", "👩‍👩‍👧",
                     "https://a.b/c?d=1", "## Head", "1. ", "[2] ", "don't", "e.g.", "U.S.", "\r\n", "é", "—", "“q”"]
        var rng = SplitMix(seed: 42)
        for round in 0..<300 {
            var s = ""
            for _ in 0..<(Int(rng.next() % 400)) {
                s += atoms[Int(rng.next() % UInt64(atoms.count))]
                if rng.next() % 3 == 0 { s += " " }
            }
            let ratio = [0.1, 0.25, 0.5, 0.9, 1.0][round % 5]
            let question: String? = round % 3 == 0 ? nil : "who is the Röntgen of 1901 document?"
            let options = CompressionOptions(minMessageTokens: 0, preserveSections: round % 4 == 0 ? ["## Head"] : [])
            let r = c.compress(s, question: question, ratio: ratio, options: options)
            #expect(String(validating: r.bytes, as: UTF8.self) != nil)
            #expect(r.bytes.count <= s.utf8.count)
            #expect(r.quality >= 0 && r.quality <= 1)
        }
    }
}

struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct ProtectionPassTests {
    /// The eight-at-a-time protection passes give what the piece-at-a-time reference gives, bit for bit, on seeded
    /// random pieces: every kind, and the flags the passes read (protected, frequent, leading space, terminal, one
    /// byte, short) dense enough that runs of function words, split words and glued punctuation keep occurring, on
    /// lengths around every block edge; what lies past the last piece is neither read as a neighbour nor written.
    @Test func blocksMatchTheReference() throws {
        let c = TextCompressor(encoding: try o200k())
        var rng = SplitMix(seed: 7)
        let bits: [UInt32] = [
            TextCompressor.Meta.protected, TextCompressor.Meta.frequent, TextCompressor.Meta.leadingSpace,
            TextCompressor.Meta.terminal, TextCompressor.Meta.oneByte, TextCompressor.Meta.short,
        ]
        var changed = 0
        let poison = UInt32(TextCompressor.Kind.number.rawValue) << TextCompressor.Meta.kindShift
            | TextCompressor.Meta.protected
        for round in 0..<3000 {
            let n = round < 40 ? round : Int(rng.next() % 300)
            // Word-heavy kinds (0 word, 1 number, 2 punct, 3 space, 4 newline), as in prose.
            let kinds: [UInt32] = [0, 0, 0, 0, 1, 1, 2, 2, 3, 4]
            var meta = (0..<n).map { _ -> UInt32 in
                var m = kinds[Int(rng.next() % UInt64(kinds.count))] << TextCompressor.Meta.kindShift
                for b in bits where rng.next() % 2 == 0 { m |= b }
                return m
            }
            let original = meta
            var expected = meta
            if n > 2 {
                expected.withUnsafeMutableBufferPointer { c.protectAroundScalar($0.baseAddress!, n) }
                // Past the pieces: a protected number with no space before it, which a pass reading beyond the end
                // would take as a neighbour.
                meta += [UInt32](repeating: poison, count: 16)
                meta.withUnsafeMutableBufferPointer { TextCompressor.protectAroundBlocks($0.baseAddress!, n) }
                #expect(meta[n...].allSatisfy { $0 == poison })
                meta.removeLast(16)
            }
            #expect(meta == expected, "round \(round), \(n) pieces")
            if meta != expected { break }
            if expected != original { changed += 1 }
        }
        // Most rounds protect something (else the comparison would be of unchanged arrays).
        #expect(changed > 2000)
    }
}
