import Foundation
import Testing

@testable import Tokenizer

/// Golden ids from the real tiktoken 0.14.0 (`encode_ordinary`, run offline on the shipped vocabulary files via
/// /work/shared/tools/tiktoken-reference, 2026-11). Tests/Integration/tiktoken_compare.py checks thousands more.
let goldenVectors: [(Encoding.Name, String, [Int])] = [
    (.o200kBase, "hello world", [24912, 2375]),
    (.o200kBase, "Hello, world! I'm here.", [13225, 11, 2375, 0, 5477, 2105, 13]),
    (.o200kBase, "don't DON'T we'll", [91418, 153384, 22782]),
    (.o200kBase, "  leading\n\n\ttabs\r\nend  ", [220, 8117, 279, 6264, 6071, 370, 419, 256]),
    (.o200kBase, "日本語のテキスト", [9048, 40909, 3385, 16056, 18368, 38236]),
    (
        .o200kBase, "👨‍👩‍👧‍👦 🇺🇸",
        [28823, 101, 2524, 28823, 102, 2524, 28823, 100, 2524, 28823, 99, 173468, 118, 55506, 116]
    ),
    (.o200kBase, "café naïve", [66, 103112, 153475, 737]),
    (.o200kBase, "12345678901", [7633, 19354, 29338, 2290]),
    (.o200kBase, "<|endoftext|>", [27, 91, 419, 1440, 919, 91, 29]),
    (.o200kBase, "func f() { return x /= 2 }\n", [5652, 285, 416, 354, 622, 1215, 37808, 220, 17, 606]),
    (.cl100kBase, "hello world", [15339, 1917]),
    (.cl100kBase, "Hello, world! I'm here.", [9906, 11, 1917, 0, 358, 2846, 1618, 13]),
    (.cl100kBase, "don't DON'T we'll", [15357, 956, 45373, 17773, 584, 3358]),
    (.cl100kBase, "  leading\n\n\ttabs\r\nend  ", [220, 6522, 271, 3324, 3518, 319, 408, 256]),
    (.cl100kBase, "日本語のテキスト", [9080, 22656, 45918, 252, 16144, 57933, 62903, 71634]),
    (
        .cl100kBase, "👨‍👩‍👧‍👦 🇺🇸",
        [
            9468, 239, 101, 378, 235, 9468, 239, 102, 378, 235, 9468, 239, 100, 378, 235, 9468, 239, 99, 11410, 229,
            118, 9468, 229, 116,
        ]
    ),
    (.cl100kBase, "café naïve", [936, 59958, 95980, 588]),
    (.cl100kBase, "12345678901", [4513, 10961, 16474, 1721]),
    (.cl100kBase, "<|endoftext|>", [27, 91, 8862, 728, 428, 91, 29]),
    (.cl100kBase, "func f() { return x /= 2 }\n", [2900, 282, 368, 314, 471, 865, 16860, 220, 17, 457]),
]

@Suite struct EncodingTests {
    @Test func goldenIDsFromTiktoken() throws {
        for (name, text, ids) in goldenVectors {
            let encoding = try Encoding.named(name)
            #expect(encoding.encode(text) == ids, "\(name) \(text.debugDescription)")
            #expect(encoding.count(text) == ids.count, "\(name) \(text.debugDescription)")
        }
    }

    @Test(arguments: Encoding.Name.allCases)
    func roundTrip(name: Encoding.Name) throws {
        let encoding = try Encoding.named(name)
        let texts = [
            "", "a", " ", "\n", "Hello, world!", "Ça va? Straße Ångström", "Съешь же ещё этих", "中文没有空格。",
            "한국어 텍스트", "🏳️‍🌈 👍🏽 🇯🇵", "e\u{301}\u{302}", "x \n\r\n\t  y", "<|endoftext|>", "'s 'S 'ſ",
            String(repeating: "ab ", count: 500), "1234567890123", "\u{0}\u{7F}\u{85}\u{A0}",
        ]
        for text in texts {
            let ids = encoding.encode(text)
            #expect(encoding.decode(ids) == text)
            #expect(try encoding.decodeBytes(ids) == Array(text.utf8))
            #expect(encoding.count(text) == ids.count)
        }
    }

    @Test func piecesFollowEachPattern() throws {
        // At the end of the text cl100k keeps "\n  " whole (`\s++$` comes first); o200k splits at the newline.
        #expect(try Encoding.named(.cl100kBase).pieces("x\n  ") == ["x", "\n  "])
        #expect(try Encoding.named(.o200kBase).pieces("x\n  ") == ["x", "\n", "  "])
        // o200k attaches contractions to words and splits camel case.
        #expect(try Encoding.named(.o200kBase).pieces("don't HTTPServer") == ["don't", " HTTPServer"])
        #expect(try Encoding.named(.o200kBase).pieces("fooBar") == ["foo", "Bar"])
        #expect(try Encoding.named(.cl100kBase).pieces("don't") == ["don", "'t"])
        // Whitespace before a word: all but the last space stand alone.
        #expect(try Encoding.named(.o200kBase).pieces("a   b") == ["a", "  ", " b"])
        // Numbers in groups of at most three.
        #expect(try Encoding.named(.cl100kBase).pieces("1234567") == ["123", "456", "7"])
    }

    @Test(arguments: Encoding.Name.allCases)
    func forEachPieceTilesTheTextAndItsCountsAddUp(_ name: Encoding.Name) throws {
        let encoding = try Encoding.named(name)
        // Repeats exercise the per-call piece cache; long pieces bypass it.
        var text = goldenVectors.map(\.1).joined(separator: " \n")
        text += String(repeating: " the cat sat on the mat, and the dog.", count: 200)
        text += " " + String(repeating: "x", count: 300) + " supercalifragilisticexpialidocious 1234567890"
        let bytes = Array(text.utf8)
        var next = 0
        var total = 0
        bytes.withUnsafeBufferPointer { b in
            encoding.forEachPiece(b) { s, e, t in
                #expect(s == next)
                #expect(t == encoding.count(String(decoding: bytes[s..<e], as: UTF8.self)))
                next = e
                total += t
            }
        }
        #expect(next == bytes.count)
        #expect(total == encoding.count(text))
    }

    @Test func specialTokenTextIsOrdinaryAndSpecialIDsDecode() throws {
        let o200k = try Encoding.named(.o200kBase)
        #expect(o200k.encode("<|endoftext|>").count == 7)
        #expect(o200k.decode([199_999]) == "<|endoftext|>")
        #expect(try Encoding.named(.cl100kBase).decode([100_257]) == "<|endoftext|>")
    }

    /// Every token, looked up as a piece, is itself: the byte-pair table and the membership filter in front of
    /// the hash table never hide a token (every 7th rank, and every 2-byte token).
    @Test(arguments: Encoding.Name.allCases)
    func everyTokenIsFoundWhole(_ name: Encoding.Name) throws {
        let encoding = try Encoding.named(name)
        let vocabulary = encoding.vocabulary
        var checked = 0
        for rank in 0..<vocabulary.rankLimit {
            guard let bytes = vocabulary.bytes(ofRank: rank) else { continue }
            guard rank % 7 == 0 || bytes.count == 2 else { continue }
            let base = bytes.baseAddress!
            let found = bytes.count == 2 ? vocabulary.pairRank(base) : vocabulary.rank(base, bytes.count, base + bytes.count)
            #expect(found == UInt32(rank), "rank \(rank)")
            checked += 1
        }
        #expect(checked > vocabulary.count / 8)
        // Pairs that are not tokens are absent from the pair table too.
        var absent = 0
        for a in 0..<256 {
            for b in 0..<256 {
                var pair: [UInt8] = [UInt8(a), UInt8(b)]
                let r = pair.withUnsafeMutableBufferPointer { p in vocabulary.pairRank(UnsafePointer(p.baseAddress!)) }
                if r == Vocabulary.absent { absent += 1 }
                if r != Vocabulary.absent, let t = vocabulary.bytes(ofRank: Int(r)) { #expect(Array(t) == pair) }
            }
        }
        #expect(absent > 0)
    }

    @Test func unknownIDs() throws {
        let o200k = try Encoding.named(.o200kBase)
        #expect(throws: TokenizerError.self) { try o200k.decodeBytes([24912, 10_000_000]) }
        #expect(o200k.decode([24912, -1]) == "hello\u{FFFD}")
        #expect(o200k.tokenBytes(24912) == Array("hello".utf8))
        #expect(o200k.tokenBytes(-5) == nil)
    }

    @Test func longRepeatsAreNotQuadratic() throws {
        // One piece of 200k bytes each; a quadratic merge would take minutes even in release.
        let o200k = try Encoding.named(.o200kBase)
        #expect(o200k.count(String(repeating: "a", count: 200_000)) == 25_000)
        let cl100k = try Encoding.named(.cl100kBase)
        #expect(cl100k.count(String(repeating: "a", count: 200_000)) == 25_000)
        let spaces = cl100k.encode(String(repeating: " ", count: 1000))
        #expect(spaces.count == 9)
        #expect(spaces.prefix(3) == [58040, 58040, 58040])
    }

    /// The batched piece counts (the compressor's) agree with counting each piece alone, and add up to the text's
    /// token count: one-byte, two-byte, whole-token, merged (short and over `smallPieceLimit`) pieces.
    @Test(arguments: Encoding.Name.allCases)
    func batchedPieceCountsMatch(_ name: Encoding.Name) throws {
        let encoding = try Encoding.named(name)
        let text = "Hello, world! I'm here. naïve café 東京 Ελληνικά 123456 3.14\n\n  indented\ttab "
            + "Supercalifragilisticexpialidocious antidisestablishmentarianism "
            + String(repeating: "x", count: 300) + " 🙂👍🏽 \u{301}é " + String(repeating: "ab", count: 90)
        let bytes = Array(text.utf8)
        bytes.withUnsafeBufferPointer { b in
            var starts: [Int32] = []
            var ends: [Int32] = []
            var single: [Int32] = []
            encoding.forEachPieceRange(b) { s, e in
                starts.append(Int32(s))
                ends.append(Int32(e))
                single.append(Int32(encoding.tokenCount(ofPiece: s, e, in: b)))
            }
            #expect(single.contains { $0 > 1 })
            var batched = [Int32](repeating: 0, count: starts.count)
            batched.withUnsafeMutableBufferPointer { out in
                encoding.tokenCounts(ofPieces: starts, ends, count: starts.count, in: b, into: out.baseAddress!)
            }
            #expect(batched == single)
            #expect(Int(batched.reduce(0, +)) == encoding.count(text))
        }
    }

    /// The pieces found a chunk at a time (the compressor's ``Encoding/pieceEnds(_:from:into:max:)``) are those of
    /// ``Encoding/forEachPieceRange(_:_:)``, whatever the chunk size; at the end of the text none are left.
    @Test(arguments: Encoding.Name.allCases)
    func pieceEndsInChunksMatchThePieces(_ name: Encoding.Name) throws {
        let encoding = try Encoding.named(name)
        let text = "Hello, world! I'm here. naïve café 東京 Ελληνικά 123456 3.14\n\n  indented\ttab \r\n"
            + "Supercalifragilisticexpialidocious   x\n\n\n 🙂👍🏽 \u{301}é don't HTTPServer fooBar a   b"
        let bytes = Array(text.utf8)
        bytes.withUnsafeBufferPointer { b in
            var expected: [Int32] = []
            encoding.forEachPieceRange(b) { _, e in expected.append(Int32(e)) }
            #expect(expected.count > 30)
            for chunk in [1, 2, 3, 7, 64, 1000] {
                var ends: [Int32] = []
                var buffer = [Int32](repeating: -1, count: chunk)
                while true {
                    let from = Int(ends.last ?? 0)
                    let k = buffer.withUnsafeMutableBufferPointer {
                        encoding.pieceEnds(b, from: from, into: $0.baseAddress!, max: chunk)
                    }
                    #expect(k <= chunk)
                    if k == 0 { break }
                    ends += buffer[0..<k]
                }
                #expect(ends == expected, "chunk \(chunk)")
            }
        }
    }

    @Test func namedByString() throws {
        #expect(try Encoding.named("o200k_base").name == .o200kBase)
        #expect(try Encoding.named("cl100k_base").name == .cl100kBase)
        let error = #expect(throws: TokenizerError.self) { try Encoding.named("p50k_base") }
        #expect(error?.code == .unknownEncoding)
        #expect(Encoding.o200kBase === Encoding.o200kBase)  // loaded once
    }
}

@Suite struct VocabularyLoadingTests {
    @Test func corruptFileFailsTheHashCheck() throws {
        let url = try #require(Encoding.bundledVocabularyURL(.cl100kBase))
        var bytes = [UInt8](try Data(contentsOf: url))
        bytes[1000] ^= 0x01
        let error = #expect(throws: TokenizerError.self) { try Encoding(.cl100kBase, vocabularyFile: bytes) }
        #expect(error?.code == .vocabularyHashMismatch)
        // The right file under the wrong name fails too.
        let wrongName = #expect(throws: TokenizerError.self) {
            try Encoding(.o200kBase, vocabularyFile: [UInt8](try Data(contentsOf: url)))
        }
        #expect(wrongName?.code == .vocabularyHashMismatch)
    }

    @Test func missingFileIsUnreadable() {
        let error = #expect(throws: TokenizerError.self) {
            try Encoding(.o200kBase, contentsOf: URL(fileURLWithPath: "/nonexistent/o200k_base.tiktoken"))
        }
        #expect(error?.code == .vocabularyUnreadable)
    }

    @Test func parsesATinyVocabulary() throws {
        // All 256 single bytes plus "ab" (rank 256) and "abc" (rank 257).
        var lines = (0..<256).map { "\(Data([UInt8($0)]).base64EncodedString()) \($0)" }
        lines.append("\(Data("ab".utf8).base64EncodedString()) 256")
        lines.append("\(Data("abc".utf8).base64EncodedString()) 257")
        let file = Array((lines.joined(separator: "\n") + "\n").utf8)
        let vocabulary = try file.withUnsafeBytes { try Vocabulary(parsing: $0, name: "tiny") }
        #expect(vocabulary.count == 258)
        let abc = Array("abcd".utf8)
        abc.withUnsafeBufferPointer { p in
            let end = p.baseAddress! + p.count
            #expect(vocabulary.rank(p.baseAddress!, 2, end) == 256)
            #expect(vocabulary.rank(p.baseAddress!, 3, end) == 257)
            #expect(vocabulary.rank(p.baseAddress!, 4, end) == Vocabulary.absent)
            var sink = CollectingSink()
            vocabulary.encodePiece(p.baseAddress!, 4, end, into: &sink)
            #expect(sink.ids == [257, 100])  // "abc" + "d"
        }
    }

    /// The same tiny vocabulary written in other ways the parser accepts: lines out of rank order, ranks with holes,
    /// CRLF line ends, no final newline, unpadded base64, tokens of 3 to 12 bytes (whole four-digit groups, then the
    /// rest byte by byte). Each token keeps its rank.
    @Test func parsesVariantsOfATinyVocabulary() throws {
        let long = ["ab", "abc", "abcdefghi", "abcdefghijkl", "bcdefghijk"]
        func file(order: [Int], rankOf: (Int) -> Int, newline: String, finalNewline: Bool, pad: Bool) -> [UInt8] {
            var lines = (0..<256).map { "\(Data([UInt8($0)]).base64EncodedString()) \($0)" }
            for (k, token) in long.enumerated() {
                var digits = Data(token.utf8).base64EncodedString()
                if !pad { digits = String(digits.prefix { $0 != "=" }) }
                lines.append("\(digits) \(rankOf(256 + k))")
            }
            let text = order.map { lines[$0] }.joined(separator: newline) + (finalNewline ? newline : "")
            return Array(text.utf8)
        }
        let inOrder = Array(0..<(256 + long.count))
        let variants: [(String, [UInt8], (Int) -> Int)] = [
            ("plain", file(order: inOrder, rankOf: { $0 }, newline: "\n", finalNewline: true, pad: true), { $0 }),
            ("shuffled", file(order: inOrder.reversed(), rankOf: { $0 }, newline: "\n", finalNewline: true, pad: true),
             { $0 }),
            ("holes", file(order: inOrder, rankOf: { $0 < 256 ? $0 : 2 * $0 }, newline: "\n", finalNewline: true,
                           pad: true), { $0 < 256 ? $0 : 2 * $0 }),
            ("crlf", file(order: inOrder, rankOf: { $0 }, newline: "\r\n", finalNewline: true, pad: true), { $0 }),
            ("no final newline", file(order: inOrder, rankOf: { $0 }, newline: "\n", finalNewline: false, pad: true),
             { $0 }),
            ("unpadded", file(order: inOrder, rankOf: { $0 }, newline: "\n", finalNewline: true, pad: false), { $0 }),
        ]
        for (label, bytes, rankOf) in variants {
            let vocabulary = try bytes.withUnsafeBytes { try Vocabulary(parsing: $0, name: label) }
            #expect(vocabulary.count == 256 + long.count, "\(label)")
            for (k, token) in long.enumerated() {
                let t = Array(token.utf8)
                t.withUnsafeBufferPointer { p in
                    let r = vocabulary.rank(p.baseAddress!, p.count, p.baseAddress! + p.count)
                    #expect(r == UInt32(rankOf(256 + k)), "\(label): \(token)")
                    #expect(vocabulary.bytes(ofRank: Int(r)).map(Array.init) == t, "\(label): \(token)")
                }
            }
        }
    }

    @Test func rejectsMalformedVocabulary() {
        // "QUJDREVG!x": two whole groups of four digits, then a bad byte (the byte loop after the fast path).
        for bad in ["!!!! 0\n", "YQ==\n", "YQ== x\n", "", "QUJDREVG!x 0\n", "QUJDREVGR0g\n"] {
            let bytes = Array(bad.utf8)
            let error = #expect(throws: TokenizerError.self) {
                try bytes.withUnsafeBytes { try Vocabulary(parsing: $0, name: "bad") }
            }
            #expect(error?.code == .vocabularyMalformed, "\(bad.debugDescription)")
        }
    }
}

@Suite struct ConcurrencyTests {
    @Test func sharedEncodingFromManyTasks() async throws {
        let texts = goldenVectors.map { ($0.0, $0.1, $0.2) }
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for round in 0..<8 {
                group.addTask {
                    var ok = true
                    for (name, text, ids) in texts where (round + ids.count) % 2 == 0 || round < 4 {
                        let encoded = try Encoding.named(name).encode(text)
                        ok = ok && encoded == ids
                    }
                    return ok
                }
            }
            for try await ok in group { #expect(ok) }
        }
    }
}
