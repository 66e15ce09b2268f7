import Testing
import Tokenizer

@testable import Compression

/// The per-thread analysis cache (``TextCompressor/AnalysisCache``): a text found again gives what analysing it
/// anew gives, whatever the question; other bytes, another ratio or other options are not found; the bound holds.
@Suite struct AnalysisCacheTests {
    /// ~3.5 KB of passages (above the cache's minimum).
    static let text: [UInt8] = {
        var s = context
        for (k, d) in documents.enumerated() { s += "\nDocument [\(k + 13)](Title: \(d.0) (again)) \(d.1) Seen again." }
        return Array(s.utf8)
    }()

    static func same(_ a: TextCompression, _ b: TextCompression) -> Bool {
        a.bytes == b.bytes && a.originalTokens == b.originalTokens && a.tokens == b.tokens && a.quality == b.quality
            && a.techniques == b.techniques
    }

    static func fresh(_ c: TextCompressor, _ text: [UInt8], _ q: String?, _ ratio: Double, _ o: CompressionOptions)
        -> TextCompression
    {
        switch c.analyze(text, ratio: ratio, options: o) {
        case .done(let r): return r
        case .lossy(let input): return c.compress(input, question: q, options: o)
        }
    }

    @Test func aTextFoundAgainGivesWhatAnalysingItAnewGives() throws {
        let c = TextCompressor(encoding: try o200k())
        #expect(Self.text.count >= TextCompressor.AnalysisCache.minBytes)
        let questions: [String?] = [
            "Who won the first Nobel Prize in Physics?", "How long is the River Thames?", "Summarize this.", nil,
        ]
        let options = CompressionOptions()
        for ratio in [0.5, 0.25, 1.0] {
            for q in questions {
                // Twice through the cache (the second call finds the first's analysis), once without it.
                let first = c.compress(Self.text, question: q, ratio: ratio, options: options)
                let again = c.compress(Self.text, question: q, ratio: ratio, options: options)
                let anew = Self.fresh(c, Self.text, q, ratio, options)
                #expect(Self.same(first, anew) && Self.same(again, anew), "ratio \(ratio), question \(q ?? "none")")
            }
            // This thread's cache holds the text for this ratio (a synchronous test stays on one thread).
            let memo = TextCompressor.PieceMemo.current(for: c.encoding, lexicon: c.lexicon)
            #expect(memo.analyses.lookup(Self.text, ratio: ratio, options: options) != nil)
        }
        // The questions ranked differently: the cache did not keep one question's outcome.
        let a = c.compress(Self.text, question: questions[0], ratio: 0.25, options: options)
        let b = c.compress(Self.text, question: questions[1], ratio: 0.25, options: options)
        #expect(a.bytes != b.bytes)
        #expect(a.text.contains("Röntgen") && b.text.contains("215 miles"))
    }

    @Test func onlyTheSameBytesRatioAndOptionsAreFound() throws {
        let c = TextCompressor(encoding: try o200k())
        let cache = TextCompressor.AnalysisCache(budget: 1 << 22)
        let options = CompressionOptions()
        let analysis = c.analyze(Self.text, ratio: 0.5, options: options)
        #expect(cache.lookup(Self.text, ratio: 0.5, options: options) == nil)
        cache.store(Self.text, ratio: 0.5, options: options, analysis)
        #expect(cache.lookup(Self.text, ratio: 0.5, options: options) != nil)
        var other = Self.text
        other[other.count / 2] ^= 0x01  // one bit
        #expect(cache.lookup(other, ratio: 0.5, options: options) == nil)
        #expect(cache.lookup(Array(Self.text.dropLast()), ratio: 0.5, options: options) == nil)
        #expect(cache.lookup(Self.text, ratio: 0.25, options: options) == nil)
        var noHeaders = options
        noHeaders.shortenHeaders = false
        #expect(cache.lookup(Self.text, ratio: 0.5, options: noHeaders) == nil)
        #expect(cache.count == 1)
    }

    @Test func theLeastRecentlyUsedGoFirstWithinTheBound() throws {
        let c = TextCompressor(encoding: try o200k())
        let options = CompressionOptions()
        let ratios = [0.5, 0.4, 0.3]
        let analyses = ratios.map { c.analyze(Self.text, ratio: $0, options: options) }
        guard case .lossy(let input) = analyses[0] else {
            Issue.record("expected a lossy analysis")
            return
        }
        // Room for two entries, not three.
        let entry = Self.text.count + 256 + input.size
        let cache = TextCompressor.AnalysisCache(budget: entry * 5 / 2)
        cache.store(Self.text, ratio: ratios[0], options: options, analyses[0])
        cache.store(Self.text, ratio: ratios[1], options: options, analyses[1])
        #expect(cache.count == 2)
        #expect(cache.lookup(Self.text, ratio: ratios[0], options: options) != nil)  // now the most recent
        cache.store(Self.text, ratio: ratios[2], options: options, analyses[2])
        #expect(cache.count == 2)
        #expect(cache.lookup(Self.text, ratio: ratios[1], options: options) == nil)
        #expect(cache.lookup(Self.text, ratio: ratios[0], options: options) != nil)
        #expect(cache.lookup(Self.text, ratio: ratios[2], options: options) != nil)
        // An entry over half the bound is not kept at all.
        let small = TextCompressor.AnalysisCache(budget: entry)
        small.store(Self.text, ratio: ratios[0], options: options, analyses[0])
        #expect(small.count == 0)
    }
}
