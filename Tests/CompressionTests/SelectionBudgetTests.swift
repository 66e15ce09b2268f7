import Testing
import Tokenizer

@testable import Compression

@Suite struct SelectionBudgetTests {
    @Test func verbEndingsShareAStem() {
        func stem(_ s: String) -> UInt64 {
            var c = s
            return c.withUTF8 { WordHash.stem($0.baseAddress!, $0.count) }
        }
        #expect(stem("filmed") == stem("film"))
        #expect(stem("Filming") == stem("film"))
        #expect(stem("married") == stem("marry"))
        #expect(stem("stopped") == stem("stop"))
        #expect(stem("cities") == stem("city"))
        #expect(stem("called") == stem("call"))
        #expect(stem("need") != stem("ne"))
        #expect(stem("speed") != stem("spe"))
        #expect(stem("thing") != stem("th"))
    }

    /// Lossy steps drop the repeated "Title: " label of `Document [i](Title: t)` headers (and count the title's
    /// first word without its space); the lossless profile leaves headers alone.
    @Test func lossyStepsShortenDocumentHeaders() throws {
        let enc = try o200k()
        let c = TextCompressor(encoding: enc)
        for question in ["who won the first nobel prize in physics", nil] {
            let r = c.compress(context, question: question, ratio: 0.5, options: CompressionOptions(minMessageTokens: 0))
            #expect(!r.text.contains("Title:"), "\(r.text)")
            for line in r.text.split(separator: "\n") {
                #expect(line.hasPrefix("Document ["), "\(line)")
                #expect(!line.contains("]( "), "\(line)")
            }
            #expect(Double(enc.count(r.text)) <= Double(r.originalTokens) * 0.5 + 2)
            #expect(abs(enc.count(r.text) - r.tokens) <= 2, "\(enc.count(r.text)) vs \(r.tokens)")
        }
        let lossless = c.compress(context, question: nil, ratio: 1, options: losslessOnly)
        #expect(lossless.text.contains("Document [9](Title: Nobel Prize in Physics)"))
    }

    /// Without a question, a number keeps the word after it (its unit) and the word before it longer than other
    /// common words: the same words elsewhere in the text go ("about" four times, "degrees" once), the ones next to
    /// the number stay.
    @Test func numbersKeepTheirUnits() throws {
        let c = TextCompressor(encoding: try o200k())
        let text = """
            We spoke about the weather in the morning and then about the garden behind the old house. She knew \
            little about degrees of heat or cold, and cared less about them. The students earned their degrees after \
            years of work, and they talked about it for a long while. Nobody was sure about the road, so they asked \
            about it at the shop near the bridge. Some of the degrees on the wall were framed, and some were not \
            framed at all. The tower now leans at about 3.99 degrees from the vertical after the repairs.
            """
        let r = c.compress(text, question: nil, ratio: 0.5, options: CompressionOptions(minMessageTokens: 0))
        #expect(r.techniques.contains(.pruning))
        #expect(r.text.contains("about 3.99 degrees"), "\(r.text)")
        #expect(r.text.components(separatedBy: "about").count - 1 == 1, "\(r.text)")
        #expect(r.text.components(separatedBy: "degrees").count - 1 < 3, "\(r.text)")
    }

    /// `shorten_headers`: only `[i](Title: t)` headers, only in the lossy steps, counted as pruning even when it
    /// alone meets the budget, and every space before the title goes; off, headers stay as they are.
    @Test func headerLabelsAreShortenedAsPruning() throws {
        let enc = try o200k()
        let c = TextCompressor(encoding: enc)
        let text = (1...20).map { "Document [\($0)](Title: Tower \($0)) The tower number \($0) leans a little." }
            .joined(separator: "\n")
        let r = c.compress(text, question: nil, ratio: 0.97, options: CompressionOptions(minMessageTokens: 0))
        #expect(r.text.contains("Document [1](Tower 1)"), "\(r.text)")
        #expect(!r.text.contains("Title"))
        #expect(r.techniques.contains(.pruning))
        #expect(r.tokens == enc.count(r.text))
        // Two spaces after the label (whitespace normalisation off): both go.
        var raw = CompressionOptions(minMessageTokens: 0, lossless: false)
        let spaced = text.replacingOccurrences(of: "Title: ", with: "Title:  ")
        let s = c.compress(spaced, question: nil, ratio: 0.97, options: raw)
        #expect(s.text.contains("Document [1](Tower 1)"), "\(s.text)")
        #expect(s.tokens == enc.count(s.text))
        raw.shortenHeaders = false
        #expect(c.compress(spaced, question: nil, ratio: 0.97, options: raw).text.contains("(Title:  Tower 1)"))
        var off = CompressionOptions(minMessageTokens: 0)
        off.shortenHeaders = false
        let kept = c.compress(text, question: nil, ratio: 0.97, options: off)
        #expect(kept.text.contains("Document [1](Title:"), "\(kept.text)")
        // A markdown heading with a parenthesised "Title:" is not a passage label.
        let md = "# Notes (Title: Draft)\n" + (1...30).map { "Line \($0) of the draft says little of use here." }
            .joined(separator: " ")
        let m = c.compress(md, question: nil, ratio: 0.6, options: CompressionOptions(minMessageTokens: 0))
        #expect(m.text.contains("(Title: Draft)"), "\(m.text)")
    }

    /// Headers and line breaks are charged once: the selection fills the budget instead of stopping short of it,
    /// and never goes over it.
    @Test func selectionFillsButNeverExceedsTheBudget() throws {
        let enc = try o200k()
        let c = TextCompressor(encoding: enc)
        let long = (0..<4).map { round in
            documents.enumerated().map { "Document [\(round * 12 + $0.offset + 1)](Title: \($0.element.0)) \($0.element.1)" }
                .joined(separator: "\n")
        }.joined(separator: "\n")
        for (q, ratio) in [("who won the first nobel prize in physics", 0.5), ("how long is the river thames", 0.3)] {
            let r = c.compress(long, question: q, ratio: ratio, options: CompressionOptions(minMessageTokens: 0))
            let exact = enc.count(r.text)
            let budget = Double(r.originalTokens) * ratio
            #expect(Double(exact) <= budget, "\(q): \(exact) of \(r.originalTokens)")
            #expect(Double(exact) >= budget * 0.9, "\(q): only \(exact) of a budget of \(budget)")
        }
    }

    /// Pieces found in the thread's piece memo are exactly what classifying them afresh gives (numbers too, whose
    /// hash reads the digits around them: "2018" is "201" + "8", and only the first carries the run's hash),
    /// whether the memo was filled by this text, by an earlier one, or holds entries of the other encoding.
    @Test func memoizedPiecesEqualFreshOnes() throws {
        let enc = try o200k()
        let cl = try Encoding.named(.cl100kBase)
        let c = TextCompressor(encoding: enc)
        var text = ""
        for i in 0..<40 {
            text += "Document [\(i)](Title: The Café \(i % 3)) In 19\(i) the café's owner, Dr. Müller, said: \"It's "
                + "open!\" 2018-\(i)  costs $\(i).99 (approx.)\n\t  \n\nWhy? NASA's macOS-based tools\r\n"
                + " intergovernmental organization's misunderstanding\(i % 2 == 0 ? "s" : "")\n"
        }
        let bytes = Array(text.utf8)
        var fresh: [TextCompressor.Piece] = []
        bytes.withUnsafeBufferPointer { b in
            enc.forEachPiece(b) { s, e, t in fresh.append(c.classifyWithWords(b.baseAddress!, b.count, s, e, tokens: t)) }
        }
        // Every pass walks the pieces: they stay at 40 bytes (a line break's offsets live in the hash fields).
        #expect(MemoryLayout<TextCompressor.Piece>.stride == 40)
        // The word-list flags travel with the memo too (" the" is frequent, " Müller" is not).
        #expect(fresh.contains { $0.flags.contains(.frequent) })
        #expect(fresh.contains { $0.kind == .word && !$0.flags.contains(.frequent) })
        // First call (the memo fills as it goes), second call (found from the first), then after other texts in
        // both encodings.
        var runs = [c.pieces(bytes), c.pieces(bytes)]
        _ = TextCompressor(encoding: cl).pieces(bytes)
        _ = c.pieces(Array(String(text.reversed()).utf8))
        runs.append(c.pieces(bytes))
        for memoized in runs {
            #expect(memoized.count == fresh.count)
            for (m, f) in zip(memoized, fresh) {
                #expect(m.start == f.start && m.end == f.end && m.tokens == f.tokens && m.kind == f.kind
                    && m.flags == f.flags && m.hash == f.hash && m.stem == f.stem && m.breakStart == f.breakStart
                    && m.emitStart == f.emitStart && m.emitEnd == f.emitEnd)
            }
            #expect(memoized.reduce(0) { $0 + Int($1.tokens) } == enc.count(text))
        }
        // Counting through the memo (untouched messages, title words) agrees with the tokenizer, before and after.
        #expect(c.count(bytes) == enc.count(text) && c.count(Array(String(text.reversed()).utf8)) == enc.count(String(text.reversed())))
        // The other encoding's pieces count with its own vocabulary, memo or not.
        let clPieces = TextCompressor(encoding: cl).pieces(bytes)
        #expect(clPieces.reduce(0) { $0 + Int($1.tokens) } == cl.count(text))
    }

    /// The byte range of each of `words` in their concatenation.
    static func byteRanges(of words: [String]) -> [(Int, Int)] {
        var ranges: [(Int, Int)] = []
        var at = 0
        for w in words {
            ranges.append((at, at + w.utf8.count))
            at += w.utf8.count
        }
        return ranges
    }

    /// Four pieces whose slots fall in one set all stay; a fifth takes its own slot's place; what is found is what
    /// was stored, counts resolved where they were stored.
    @Test func memoKeepsFourPiecesPerSet() {
        let memo = TextCompressor.PieceMemo(bits: 2)  // one set of four slots
        let words = [" alpha", " beta", " gamma", " delta", " omega", " sigma", " kappa", " theta", " zeta", " iota"]
        let text = Array(words.joined().utf8)
        text.withUnsafeBufferPointer { b in
            let base = b.baseAddress!
            let ranges = Self.byteRanges(of: words)
            func slot(_ r: (Int, Int)) -> Int {
                memo.probe(TextCompressor.PieceMemo.key(base, r.0, r.1 - r.0, b.count))
            }
            func lookup(_ r: (Int, Int)) -> TextCompressor.Piece? {
                let key = TextCompressor.PieceMemo.key(base, r.0, r.1 - r.0, b.count)
                return memo.piece(at: slot(r), key, base, b.count, start: r.0, end: r.1)
            }
            func store(_ r: (Int, Int), tokens: Int32) -> Int {
                let key = TextCompressor.PieceMemo.key(base, r.0, r.1 - r.0, b.count)
                let p = TextCompressor.classify(base, b.count, r.0, r.1, tokens: -7)  // pending on new piece 6
                let at = memo.store(p, at: slot(r), key)
                #expect(lookup(r)?.tokens == -7)
                memo.resolve(at, pending: 6, tokens: tokens, stem: p.stem)
                return at
            }
            // One set: every piece hashes into it. The first four fill it, whatever their own slots.
            let places = (0..<4).map { store(ranges[$0], tokens: Int32($0 + 1)) }
            #expect(Set(places) == [0, 1, 2, 3])
            for k in 0..<4 { #expect(lookup(ranges[k])?.tokens == Int32(k + 1)) }
            let fresh = TextCompressor.classify(base, b.count, ranges[1].0, ranges[1].1, tokens: 0)
            #expect(lookup(ranges[1])?.hash == fresh.hash && lookup(ranges[1])?.flags == fresh.flags)
            #expect(lookup(ranges[4]) == nil)
            // A fifth goes over the piece in its own slot; the other three stay.
            let fifth = store(ranges[4], tokens: 5)
            #expect(fifth == slot(ranges[4]) & 0xFFFF)
            #expect(lookup(ranges[4])?.tokens == 5)
            for k in 0..<4 { #expect((lookup(ranges[k]) == nil) == (places[k] == fifth)) }
        }
    }

    /// Pieces whose tags collide (same set, same 15-bit tag) are told apart by their bytes: each is found with its
    /// own count, and a piece with a colliding tag that was never stored is not found.
    @Test func memoTellsCollidingTagsApart() {
        let memo = TextCompressor.PieceMemo(bits: 2)  // one set: every probe's slot is in it
        let words = (0..<3000).map { " w\($0)" }
        let text = Array(words.joined().utf8)
        text.withUnsafeBufferPointer { b in
            let base = b.baseAddress!
            let ranges = Self.byteRanges(of: words)
            func key(_ r: (Int, Int)) -> (UInt64, UInt64) { TextCompressor.PieceMemo.key(base, r.0, r.1 - r.0, b.count) }
            // Three pieces with one tag (3,000 probes over 2^15 tags: the birthday bound makes a triple likely; a
            // pair is enough for the first checks).
            var byTag: [Int: [Int]] = [:]
            for (i, r) in ranges.enumerated() { byTag[memo.probe(key(r)) >> 16, default: []].append(i) }
            let group = byTag.values.filter { $0.count >= 2 }.max { $0.count < $1.count }!
            for (n, i) in group.prefix(2).enumerated() {
                let p = TextCompressor.classify(base, b.count, ranges[i].0, ranges[i].1, tokens: n + 1)
                _ = memo.store(p, at: memo.probe(key(ranges[i])), key(ranges[i]))
            }
            for (n, i) in group.prefix(2).enumerated() {
                let r = ranges[i]
                #expect(memo.piece(at: memo.probe(key(r)), key(r), base, b.count, start: r.0, end: r.1)?.tokens
                    == Int32(n + 1))
            }
            if group.count >= 3 {
                let r = ranges[group[2]]
                #expect(memo.piece(at: memo.probe(key(r)), key(r), base, b.count, start: r.0, end: r.1) == nil)
            }
        }
    }

    /// A "who" question favours sentences that hold a name: a word segmentation protects (capitalised, quoted, in
    /// a header), not one protected only for standing next to numbers ("mid-1988", "1,000 of 2,000"), a rule that
    /// runs only before pruning.
    @Test func aWhoQuestionCountsNamesNotWordsNextToNumbers() throws {
        let c = TextCompressor(encoding: try o200k())
        let text = "The plant opened in mid-1988 and grew to 1,000 of 2,000 staff.\n\nThe plant was bought by Ford in 1990."
        let bytes = Array(text.utf8)
        let terms = c.questionTerms("Who bought the plant?")
        func scores(_ type: TextCompressor.AnswerType) -> [Double] {
            var pieces = c.pieces(bytes)
            var sentences = c.segmentCounting(bytes, &pieces, options: CompressionOptions(minMessageTokens: 0))
                .sentences
            _ = c.score(&sentences, &pieces, terms: terms, answerType: type)
            return sentences.map(\.score)
        }
        let plain = scores(.none)
        let who = scores(.name)
        #expect(plain.count == 2)
        #expect(plain[0] > 0 && plain[1] > 0)
        #expect(who[0] == plain[0])
        #expect(who[1] > plain[1])
    }

    /// A passage whose title matches the question vouches for its first sentence, even when that sentence shares
    /// no word with the question; its second sentence gets nothing from the title.
    @Test func aMatchingTitleCarriesItsLeadSentence() throws {
        let c = TextCompressor(encoding: try o200k())
        let text = [
            "Document [1](Title: When We First Met) Principal photography began in mid-July 2016 in New Orleans. The cast includes Adam DeVine.",
            "Document [2](Title: Romantic comedy) Many romantic comedies are set in cities, where couples meet at parties or work.",
        ].joined(separator: "\n")
        let bytes = Array(text.utf8)
        var pieces = c.pieces(bytes)
        var sentences = c.segment(bytes, &pieces, options: CompressionOptions(minMessageTokens: 0))
        let terms = c.questionTerms("where was when we first met filmed")
        _ = c.score(&sentences, &pieces, terms: terms)
        func sentence(_ prefix: String) -> TextCompressor.Sentence {
            sentences.first { s in
                String(decoding: bytes[Int(pieces[Int(s.first)].start)...], as: UTF8.self)
                    .trimmingPrefix(" ").hasPrefix(prefix)
            }!
        }
        let lead = sentence("Principal photography")
        #expect(lead.own == 0)
        #expect(lead.score > 0)
        #expect(sentence("The cast").score == 0)
    }

    /// A word the tokenizer splits ("1940s" is "194" + "0" + "s") is kept whole when a part of it is protected.
    @Test func splitWordsAroundNumbersAndNamesStayWhole() throws {
        let enc = try o200k()
        let c = TextCompressor(encoding: enc)
        let text = """
            The vaccine became widely available in the 1940s and the practice was common by the 12th anniversary of \
            the programme, when a 6ft banner was hung from the clinic and most of the staff used macOS laptops for \
            the very long and rather repetitive paperwork that had always been part of the job since mid-1988.
            """
        let r = c.compress(text, question: nil, ratio: 0.45, options: CompressionOptions(minMessageTokens: 0))
        for span in ["1940s", "12th", "6ft", "macOS", "mid-1988"] {
            #expect(r.text.contains(span), "lost \(span): \(r.text)")
        }
        // Spelled-out numbers are numbers.
        let counted = c.compress(
            "The committee met seven times over the long and rather uneventful summer, and the eighth meeting was held in a very small and quite uncomfortable room near the old station.",
            question: nil, ratio: 0.5, options: CompressionOptions(minMessageTokens: 0))
        for span in ["seven", "eighth"] {
            #expect(counted.text.contains(span), "lost \(span): \(counted.text)")
        }
    }

    /// Without a question, the budget holds even when protected pieces alone exceed it: whole sentences go, and a
    /// later occurrence of a multi-word name is no longer protected (the first one stays intact).
    @Test func withoutAQuestionTheBudgetHolds() throws {
        let enc = try o200k()
        let c = TextCompressor(encoding: enc)
        let names = (0..<30).map { "Super Bowl LII was won by the Philadelphia Eagles against the New England Patriots in Minneapolis on February \($0 % 28 + 1), 2018." }
            .joined(separator: " ")
        let r = c.compress(names, question: nil, ratio: 0.3, options: CompressionOptions(minMessageTokens: 0))
        #expect(Double(enc.count(r.text)) <= Double(r.originalTokens) * 0.3 + 2, "\(enc.count(r.text)) of \(r.originalTokens)")
        #expect(r.text.hasPrefix("Super Bowl LII"), "\(r.text)")
        #expect(r.techniques.contains(.selection))
    }

    @Test func aRepeatedMultiWordNameLosesItsProtection() throws {
        let c = TextCompressor(encoding: try o200k())
        let text = "The final of Super Bowl LII was played in Minneapolis. Fans of Super Bowl LII remember it well."
        let bytes = Array(text.utf8)
        var pieces = c.pieces(bytes)
        _ = c.segment(bytes, &pieces, options: CompressionOptions(minMessageTokens: 0))
        c.markRepeats(&pieces)
        let lii = pieces.indices.filter { String(decoding: bytes[Int(pieces[$0].start)..<Int(pieces[$0].end)], as: UTF8.self) == " LII" }
        #expect(lii.count == 2)
        #expect(pieces[lii[0]].flags.contains(.protected))
        #expect(!pieces[lii[1]].flags.contains(.protected) && pieces[lii[1]].flags.contains(.repeated))
    }
}

@Suite struct LookupTests {
    @Test func frequentWordsAreThoseOfZipfFiveOrMore() {
        let lexicon = Lexicon.shared
        for w in ["the", "of", "and", "first", "new", "in", "physics", "nobel", "röntgen", "quartermaster", "xyzzy"] {
            let h = WordHash.of(w)
            #expect(lexicon.isFrequent(h) == (lexicon.zipf10(h) >= 50), "\(w)")
        }
        #expect(Lexicon.shared.isFrequent(WordHash.of("The")))
        #expect(!Lexicon.shared.isFrequent(WordHash.of("physics")))
    }

    @Test func wordSetsAndScans() {
        let set = WordSet(["one", "two", "three"])
        #expect(set.contains(WordHash.of("Two")))
        #expect(!set.contains(WordHash.of("four")))
        #expect(TextCompressor.hasBlankLine(Array("a\nb\n\nc".utf8)))
        #expect(!TextCompressor.hasBlankLine(Array("a\nb\nc\n".utf8)))
        #expect(!TextCompressor.hasBlankLine([]))
        let text = Array("see https://example.com and \"quoted\" or `code` with the word thatch".utf8)
        let spans = TextCompressor.protectedSpans(text).map { String(decoding: text[$0], as: UTF8.self) }
        #expect(spans == ["https://example.com", "\"quoted\"", "`code`"])
    }
}
