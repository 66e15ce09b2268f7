import Foundation
import Tokenizer
import Wire

/// The outcome of compressing one text.
public struct TextCompression: Sendable {
    /// The compressed text (the original when nothing could be done or the quality guard said no).
    public var bytes: [UInt8]
    public var originalTokens: Int
    /// Tokens of `bytes`, as the sum of the kept pre-tokenizer pieces' tokens (equal to a fresh count except at the
    /// rare seams where dropping a piece changes how its neighbours split).
    public var tokens: Int
    /// 0...1, see ``TextCompressor``.
    public var quality: Double
    public var techniques: CompressionTechniques
    public var changed: Bool { techniques != [] }

    public var text: String { String(decoding: bytes, as: UTF8.self) }
}

/// Compresses one text toward a token budget, in three steps:
///
/// 1. **Lossless**: whitespace normalisation outside code fences, minification of embedded JSON.
/// 2. **Question-aware selection** (when there is a question): the text is cut into passages ("Document [i]" lines,
///    markdown sections, numbered items, blank-line paragraphs, else lines) and sentences; each sentence is scored
///    by BM25 against the question's content words (light stemming), plus its passage's BM25 score, a bonus for
///    question words appearing next to each other, and a share of the previous sentence's score (answers often
///    follow the sentence that matches the question). Sentences are taken best first while they fit, then emitted
///    in their original order; a passage header (`Document [i](Title: ...)`, a markdown heading) is kept with the
///    first kept sentence of its passage.
/// 3. **Pruning** by self-information (wordfreq Zipf values): the most predictable pieces go first ("the", "of",
///    commas), never a protected one: numbers, capitalised words, words of the question, URLs, `code`, quoted
///    strings, passage headers, sentences that ask something (``CompressionOptions/preserveQuestions``),
///    `preserve_sections` blocks, fenced code and JSON. A function word between two protected words ("Bank *of*
///    America") or an article before a name counts as more informative than elsewhere.
///
/// Quality score (0...1): with a question, the mean of (a) the share of question-word weight (IDF) present in the
/// original that is still present and (b) the best kept sentence's score over the best sentence's score; without a
/// question, the mean of (c) the share of protected pieces kept and (d) the share of self-information kept, divided
/// by the kept token share (so a 2x compression that keeps the informative half scores near 1).
///
/// Everything runs on the UTF-8 bytes with one tokenizer pass; no dictionaries are built per call.
public struct TextCompressor: Sendable {
    public let encoding: Encoding
    public let lexicon: Lexicon
    // Tuning (chosen on the development split of the QA benchmark, lines 0-1599 only; see
    // Benchmarks/compression_quality.py). Pruning: a repeated lowercase word keeps this share of its
    // self-information; a repeated stand-alone name drops to this information; function words (Zipf >= kSandZ) between
    // protected words and sentence-initial capitalised words of Zipf >= kInitZ; an article takes this share of the
    // next word's information.
    static let kRep: Double = 0.5
    static let kCapRep: Double = 1.2
    static let kSandZ: Double = 5.0
    static let kInitZ: Double = 5.0
    static let kArticle: Double = 0.5
    // Selection: whole passages (best BM25 first) up to this share of the budget, then the best sentence of each
    // remaining passage (kCover), then any sentence by score. Term weights: local IDF times global rarity (kGlobal).
    // Sentence score: own BM25 + kPassageW x passage BM25 + kCarry x previous sentence's + kPhrase per adjacent
    // question-word pair + kType when it holds what the question asks for (a name for "who", a number for "when").
    static let kWhole: Double = 0.6
    static let kGlobal: Double = 1.0
    static let kCover = 1
    static let kType: Double = 0.5
    /// Selection keeps budget / kPruneShare tokens and pruning takes the rest (1: no pruning after selection,
    /// which measured best: pruning inside selected passages breaks multi-word answers).
    static let kPruneShare: Double = 1.0
    static let kPassageW: Double = 0
    static let kCarry: Double = 0.25
    static let kPhrase: Double = 0.5
    static let kPunct: Double = 0.6

    public init(encoding: Encoding, lexicon: Lexicon = .shared) {
        self.encoding = encoding
        self.lexicon = lexicon
    }

    // MARK: - Pieces, sentences, passages

    struct Piece {
        var start: Int32
        var end: Int32
        var tokens: Int32
        var kind: Kind
        var flags: Flags
        var sentence: Int32 = 0
        var stem: UInt64 = 0
        var hash: UInt64 = 0
        /// For newline pieces: where the line break starts (".\n" is one piece; its "." goes with its sentence).
        var breakStart: Int32 = 0
    }

    enum Kind: UInt8 { case word, number, punct, space, newline }

    struct Flags: OptionSet {
        let rawValue: UInt8
        static let capital = Flags(rawValue: 1)
        static let protected = Flags(rawValue: 2)
        static let term = Flags(rawValue: 4)
        static let dropped = Flags(rawValue: 8)
        static let leadingSpace = Flags(rawValue: 16)
        static let terminal = Flags(rawValue: 32)  // ends with . ! ?
        static let question = Flags(rawValue: 64)  // ends with ?
        static let repeated = Flags(rawValue: 128)  // a name seen before
    }

    struct Sentence {
        var first: Int32
        var end: Int32
        var passage: Int32
        var tokens: Int32 = 0
        var words: Int32 = 0
        var score: Double = 0
        var own: Double = 0
        var isHeader = false
        var mustKeep = false
        var kept = false
    }

    /// Compresses `text` so it keeps about `ratio` of its tokens, using `question` (may be nil) to rank.
    public func compress(_ text: String, question: String?, ratio: Double, options: CompressionOptions = .init())
        -> TextCompression
    {
        compress(Array(text.utf8), question: question, ratio: ratio, options: options)
    }

    public func compress(_ original: [UInt8], question: String?, ratio: Double, options: CompressionOptions)
        -> TextCompression
    {
        let originalTokens = count(original)
        var bytes = original
        var techniques: CompressionTechniques = []
        if options.lossless {
            if let b = Lossless.minifyJSON(bytes) {
                bytes = b
                techniques.insert(.json)
            }
            if let b = Lossless.normalizeWhitespace(bytes) {
                bytes = b
                techniques.insert(.whitespace)
            }
        }
        let budget = Int((Double(originalTokens) * ratio).rounded(.down))
        var pieces = self.pieces(bytes)
        var total = 0
        for p in pieces { total += Int(p.tokens) }
        let lossy = options.selection || options.pruning
        if total <= budget || !lossy || originalTokens < options.minMessageTokens || Self.isJSON(bytes) {
            return TextCompression(
                bytes: bytes, originalTokens: originalTokens, tokens: total, quality: 1, techniques: techniques)
        }
        var sentences = segment(bytes, &pieces, options: options)
        let terms = questionTerms(question)
        let hasQuestion = !terms.isEmpty
        var termWeights: [Double] = []
        var bestScore = 0.0
        var passageScores: [Double] = []
        if hasQuestion {
            (termWeights, bestScore, passageScores) = score(
                &sentences, &pieces, terms: terms, answerType: Self.answerType(question))
        }
        var used = 0
        if hasQuestion && options.selection {
            used = select(
                &sentences, passageScores: passageScores,
                budget: Int(Double(budget) / (options.pruning ? Self.kPruneShare : 1.0)))
            techniques.insert(.selection)
        } else {
            for i in sentences.indices { sentences[i].kept = true }
            used = total
        }
        if options.pruning && used > budget {
            if prune(bytes, &pieces, sentences, toDrop: used - budget) { techniques.insert(.pruning) }
        }
        // Emit.
        var out = [UInt8]()
        out.reserveCapacity(bytes.count)
        var kept = 0
        var protectedAll = 0
        var protectedKept = 0
        var infoAll = 0.0
        var infoKept = 0.0
        bytes.withUnsafeBufferPointer { b in
            for p in pieces {
                let s = sentences[Int(p.sentence)]
                let isStructural = p.kind == .newline
                let keep = isStructural || (s.kept && !p.flags.contains(.dropped))
                if !hasQuestion && (p.kind == .word || p.kind == .number) {
                    let info = p.kind == .number ? 6 : lexicon.information(p.hash)
                    infoAll += info
                    if p.flags.contains(.protected) { protectedAll += 1 }
                    if keep {
                        infoKept += info
                        if p.flags.contains(.protected) { protectedKept += 1 }
                    }
                }
                guard keep else { continue }
                if isStructural {
                    // Separators survive only between kept content, once; the punctuation before a line break
                    // (".\n") only with its sentence.
                    if out.isEmpty || out.last == 0x0A { continue }
                    let from = s.kept ? Int(p.start) : Int(p.breakStart)
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: b[from..<Int(p.end)]))
                    kept += Int(p.tokens)
                    continue
                }
                var start = Int(p.start)
                if p.flags.contains(.leadingSpace) && (out.isEmpty || out.last == 0x0A) { start += 1 }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: b[start..<Int(p.end)]))
                kept += Int(p.tokens)
            }
        }
        while let last = out.last, last == 0x0A || last == 0x20 { out.removeLast() }
        var quality = 1.0
        if hasQuestion {
            var present = Set<Int>()
            var surviving = Set<Int>()
            var bestKept = 0.0
            for p in pieces where p.flags.contains(.term) {
                let t = terms.firstIndex(of: p.stem) ?? -1
                if t >= 0 {
                    present.insert(t)
                    if sentences[Int(p.sentence)].kept && !p.flags.contains(.dropped) { surviving.insert(t) }
                }
            }
            for s in sentences where s.kept { bestKept = max(bestKept, s.own) }
            let wAll = present.reduce(0.0) { $0 + termWeights[$1] }
            let wKept = surviving.reduce(0.0) { $0 + termWeights[$1] }
            let coverage = wAll > 0 ? wKept / wAll : 1
            let evidence = bestScore > 0 ? bestKept / bestScore : 1
            quality = 0.5 * coverage + 0.5 * evidence
        } else {
            let protectedShare = protectedAll > 0 ? Double(protectedKept) / Double(protectedAll) : 1
            let keptShare = total > 0 ? max(Double(kept) / Double(total), 1e-9) : 1
            let infoShare = infoAll > 0 ? min(1, (infoKept / infoAll) / keptShare) : 1
            quality = 0.5 * protectedShare + 0.5 * infoShare
        }
        return TextCompression(
            bytes: out, originalTokens: originalTokens, tokens: kept, quality: quality, techniques: techniques)
    }

    func count(_ bytes: [UInt8]) -> Int {
        var n = 0
        bytes.withUnsafeBufferPointer { b in encoding.forEachPiece(b) { _, _, t in n += t } }
        return n
    }

    static func isJSON(_ b: [UInt8]) -> Bool {
        guard let f = b.first(where: { !Lossless.isBlank($0) }), f == UInt8(ascii: "{") || f == UInt8(ascii: "[")
        else { return false }
        return b.withUnsafeBytes { JSONValidation.valueEnd($0) } != nil
    }

    // MARK: Pieces

    func pieces(_ bytes: [UInt8]) -> [Piece] {
        var out: [Piece] = []
        out.reserveCapacity(bytes.count / 4 + 1)
        bytes.withUnsafeBufferPointer { b in
            let base = b.baseAddress!
            encoding.forEachPiece(b) { s, e, t in
                var p = Piece(start: Int32(s), end: Int32(e), tokens: Int32(t), kind: .punct, flags: [])
                var i = s
                let c0 = base[s]
                if c0 == 0x20 && e - s > 1 {
                    p.flags.insert(.leadingSpace)
                    i += 1
                }
                // Classify by the first non-space byte.
                var hasNewline = false
                var allSpace = true
                for k in s..<e {
                    let c = base[k]
                    if c == 0x0A { hasNewline = true }
                    if c != 0x20 && c != 0x09 && c != 0x0A && c != 0x0D { allSpace = false }
                }
                if hasNewline {
                    p.kind = .newline
                    var k = s
                    while k < e && base[k] != 0x0A && base[k] != 0x0D { k += 1 }
                    p.breakStart = Int32(allSpace ? s : k)
                } else if allSpace {
                    p.kind = .space
                } else {
                    // Skip one leading punctuation byte ("(word", "-word").
                    var w = i
                    if w < e && !Self.isWordStart(base[w]) && w + 1 < e && Self.isWordStart(base[w + 1]) { w += 1 }
                    let c = base[w]
                    if c >= 0x30 && c <= 0x39 {
                        p.kind = .number
                        // o200k splits digit runs in threes ("2018" is "201" + "8"): the run's first piece carries
                        // the hash of the whole run, so question numbers match.
                        let continues = s > 0 && base[s - 1] >= 0x30 && base[s - 1] <= 0x39
                        if !continues {
                            var we = w
                            while we < b.count && base[we] >= 0x30 && base[we] <= 0x39 { we += 1 }
                            p.hash = WordHash.of(base + w, we - w)
                            p.stem = p.hash
                        }
                    } else if Self.isWordStart(c) {
                        p.kind = .word
                        if (c >= 0x41 && c <= 0x5A) || (c >= 0xC3 && c <= 0xC3 && w + 1 < e && base[w + 1] < 0x9F) {
                            p.flags.insert(.capital)
                        }
                        var we = w
                        while we < e && (Self.isWordByte(base[we]) || base[we] == UInt8(ascii: "'")) { we += 1 }
                        p.hash = WordHash.of(base + w, we - w)
                        p.stem = WordHash.stem(base + w, we - w)
                    } else {
                        p.kind = .punct
                        let last = base[e - 1]
                        if last == UInt8(ascii: ".") || last == UInt8(ascii: "!") || last == UInt8(ascii: "?")
                            || ((last == UInt8(ascii: "\"") || last == UInt8(ascii: ")")) && e - s >= 2
                                && (base[e - 2] == UInt8(ascii: ".") || base[e - 2] == UInt8(ascii: "?")))
                        {
                            p.flags.insert(.terminal)
                            if last == UInt8(ascii: "?") || base[max(s, e - 2)] == UInt8(ascii: "?") {
                                p.flags.insert(.question)
                            }
                        }
                    }
                }
                out.append(p)
            }
        }
        return out
    }

    /// A byte that can start a word: ASCII letters and digits, and UTF-8 lead bytes other than those of Latin-1
    /// symbols (C2) and general punctuation (E2: dashes, quotes, bullets).
    @inline(__always)
    static func isWordStart(_ c: UInt8) -> Bool {
        (c >= 0x61 && c <= 0x7A) || (c >= 0x41 && c <= 0x5A) || (c >= 0x30 && c <= 0x39)
            || (c >= 0xC3 && c != 0xE2 && c < 0xF8)
    }

    @inline(__always)
    static func isWordByte(_ c: UInt8) -> Bool {
        (c >= 0x61 && c <= 0x7A) || (c >= 0x41 && c <= 0x5A) || (c >= 0x30 && c <= 0x39) || c >= 0x80
    }

    // MARK: Segmentation

    /// Cuts pieces into sentences and passages and marks protected pieces.
    func segment(_ bytes: [UInt8], _ pieces: inout [Piece], options: CompressionOptions) -> [Sentence] {
        var sentences: [Sentence] = []
        sentences.reserveCapacity(pieces.count / 12 + 2)
        let hasBlankLines = Self.contains(bytes, [0x0A, 0x0A])
        var passage: Int32 = 0
        var current = Sentence(first: 0, end: 0, passage: 0)
        var inFence = false
        var inSection = false
        var pendingTerminal = false
        var lineStart = true
        var protectRest = false  // fenced code / preserved section running
        var quoteOpen = false
        var quoteStart = 0
        bytes.withUnsafeBufferPointer { b in
            let base = b.baseAddress!
            func close(at i: Int) {
                current.end = Int32(i)
                if current.end > current.first { sentences.append(current) }
                current = Sentence(first: Int32(i), end: Int32(i), passage: passage)
            }
            var i = 0
            let n = pieces.count
            while i < n {
                var p = pieces[i]
                let s = Int(p.start)
                if p.kind == .newline {
                    close(at: i)
                    pieces[i].sentence = Int32(sentences.count - 1 < 0 ? 0 : sentences.count - 1)
                    let newlines = Self.countNewlines(base, s, Int(p.end))
                    lineStart = true
                    pendingTerminal = false
                    quoteOpen = false
                    if newlines >= 2 || !hasBlankLines {
                        passage += 1
                        current.passage = passage
                        if newlines >= 2 && inSection && !inFence {
                            inSection = false
                            protectRest = false
                        }
                    }
                    current.first = Int32(i + 1)
                    i += 1
                    continue
                }
                if lineStart {
                    lineStart = false
                    let lineEnd = Self.lineEnd(base, s, bytes.count)
                    let line = UnsafeBufferPointer(rebasing: b[s..<lineEnd])
                    // Fences.
                    var k = 0
                    while k < line.count && (line[k] == 0x20 || line[k] == 0x09) { k += 1 }
                    if line.count - k >= 3 && line[k] == 0x60 && line[k + 1] == 0x60 && line[k + 2] == 0x60 {
                        inFence.toggle()
                        protectRest = inFence || inSection
                        current.mustKeep = true
                    }
                    // Preserved sections.
                    if !options.preserveSections.isEmpty && Self.containsAny(line, options.preserveSections) {
                        inSection = true
                        protectRest = true
                    }
                    // Passage starts.
                    let header = Self.headerEnd(line)
                    if header != nil || Self.startsPassage(line) {
                        if hasBlankLines && current.first < Int32(i) {
                            close(at: i)
                        }
                        if hasBlankLines {
                            passage += 1
                            current.passage = passage
                        }
                        if let h = header {
                            // Header pieces form their own sentence.
                            let hEnd = s + h
                            var j = i
                            while j < n && Int(pieces[j].start) < hEnd && pieces[j].kind != .newline {
                                pieces[j].flags.insert(.protected)
                                pieces[j].sentence = Int32(sentences.count)
                                j += 1
                            }
                            current.isHeader = true
                            current.mustKeep = true  // never pruned; kept with its passage
                            close(at: j)
                            current.passage = passage
                            if j > i {
                                i = j
                                continue
                            }
                        }
                    }
                }
                // Sentence boundary: a terminal punctuation piece, then a word that starts a sentence.
                if pendingTerminal && p.flags.contains(.leadingSpace) && (p.kind == .word || p.kind == .number) {
                    let c = base[s + 1]
                    if (c >= 0x41 && c <= 0x5A) || (c >= 0x30 && c <= 0x39) || c >= 0xC0 || c == UInt8(ascii: "\"") {
                        close(at: i)
                    }
                }
                pendingTerminal = false
                if p.flags.contains(.terminal) && !Self.isAbbreviation(base, pieces, i) {
                    pendingTerminal = true
                    if p.flags.contains(.question) && options.preserveQuestions { current.mustKeep = true }
                }
                // Protection.
                var protect = protectRest || p.kind == .number || p.flags.contains(.capital)
                if protect && !protectRest && p.kind == .word && Int32(i) == current.first {
                    // A sentence-initial common word ("The", "In", "It") is protected only before another
                    // capitalised word ("The Beatles").
                    let nextCapital = i + 1 < n && pieces[i + 1].flags.contains(.capital)
                    if !nextCapital && (lexicon.zipf(p.hash) ?? 0) >= Self.kInitZ { protect = false }
                }
                if protect { p.flags.insert(.protected) }
                if p.kind == .word && !p.flags.contains(.protected) {
                    // URLs, code spans.
                    if Self.startsURL(base, s, Int(p.end)) { p.flags.insert(.protected) }
                }
                // Backtick code and short quoted strings: protect everything between the delimiters.
                let q = Self.quoteByte(base, s, Int(p.end))
                if q {
                    if quoteOpen {
                        if i - quoteStart <= 24 {
                            for j in quoteStart...i { pieces[j].flags.insert(.protected) }
                            p.flags.insert(.protected)
                        }
                        quoteOpen = false
                    } else {
                        quoteOpen = true
                        quoteStart = i
                    }
                }
                if protectRest { current.mustKeep = true }
                p.sentence = Int32(sentences.count)
                pieces[i] = p
                if p.kind == .word || p.kind == .number { current.words += 1 }
                i += 1
            }
            close(at: n)
        }
        // Piece -> sentence indices (close() appends in order; recompute to be exact), token totals.
        for (si, s) in sentences.enumerated() {
            var t: Int32 = 0
            for j in Int(s.first)..<Int(s.end) {
                pieces[j].sentence = Int32(si)
                t += pieces[j].tokens
            }
            sentences[si].tokens = t
        }
        // Newline pieces belong to the preceding sentence for bookkeeping; they are emitted structurally.
        if sentences.isEmpty { sentences.append(Sentence(first: 0, end: Int32(pieces.count), passage: 0)) }
        // Protect runs of up to two function words between protected words ("Bank of America", "Taxpayers in the
        // United States"), punctuation glued to a number ("20%", "$5"), and let repeated stand-alone names go
        // after their first occurrence.
        let n = pieces.count
        if n > 2 {
            func solid(_ j: Int) -> Bool {
                let p = pieces[j]
                return p.flags.contains(.protected) && (p.kind == .word || p.kind == .number)
            }
            var j = 1
            while j < n - 1 {
                guard pieces[j].kind == .word, !pieces[j].flags.contains(.protected), solid(j - 1) else {
                    j += 1
                    continue
                }
                var k = j
                while k < n && k - j < 2 && pieces[k].kind == .word && !pieces[k].flags.contains(.protected)
                    && (lexicon.zipf(pieces[k].hash) ?? 0) >= Self.kSandZ
                {
                    k += 1
                }
                if k > j && k < n && solid(k) {
                    for m in j..<k { pieces[m].flags.insert(.protected) }
                }
                j = max(k, j + 1)
            }
            for j in 0..<n where pieces[j].kind == .punct && !pieces[j].flags.contains(.protected) {
                let glued = !pieces[j].flags.contains(.leadingSpace) && j > 0 && pieces[j - 1].kind == .number
                let before = j + 1 < n && pieces[j + 1].kind == .number && !pieces[j + 1].flags.contains(.leadingSpace)
                    && pieces[j].end - pieces[j].start <= 2
                if glued || before { pieces[j].flags.insert(.protected) }
            }
            var seenWords = Set<UInt64>()
            for j in 0..<n where pieces[j].kind == .word && !pieces[j].flags.contains(.protected) {
                if !seenWords.insert(pieces[j].hash).inserted { pieces[j].flags.insert(.repeated) }
            }
            var seen = Set<UInt64>()
            for j in 0..<n where pieces[j].kind == .word && pieces[j].flags.contains(.capital)
                && pieces[j].flags.contains(.protected)
            {
                let after = j + 1 < n && pieces[j + 1].kind == .space ? j + 2 : j + 1
                let alone = !(j > 0 && solid(j - 1)) && !(after < n && solid(after))
                guard alone else { continue }
                if !seen.insert(pieces[j].hash).inserted {
                    pieces[j].flags.remove(.protected)
                    pieces[j].flags.insert(.repeated)
                }
            }
            // A lone space piece before a number (" 18" is " " + "18" in o200k) goes with what follows it.
            for j in 0..<(n - 1) where pieces[j].kind == .space && pieces[j + 1].flags.contains(.protected) {
                pieces[j].flags.insert(.protected)
            }
            // Punctuation between protected words ("May 18, 2018", "Tulsa, Oklahoma").
            for j in 1..<(n - 1) where pieces[j].kind == .punct && !pieces[j].flags.contains(.protected) {
                if pieces[j - 1].flags.contains(.protected) && pieces[j + 1].flags.contains(.protected)
                    && pieces[j - 1].kind != .newline && pieces[j + 1].kind != .newline
                    && pieces[j - 1].kind != .punct && pieces[j + 1].kind != .punct
                {
                    pieces[j].flags.insert(.protected)
                }
            }
        }
        return sentences
    }

    static func contains(_ b: [UInt8], _ needle: [UInt8]) -> Bool {
        guard b.count >= needle.count else { return false }
        var i = 0
        while i + needle.count <= b.count {
            if b[i] == needle[0] {
                var ok = true
                for k in 1..<needle.count where b[i + k] != needle[k] {
                    ok = false
                    break
                }
                if ok { return true }
            }
            i += 1
        }
        return false
    }

    static func containsAny(_ line: UnsafeBufferPointer<UInt8>, _ markers: [String]) -> Bool {
        for m in markers {
            let needle = Array(m.utf8)
            guard !needle.isEmpty, line.count >= needle.count else { continue }
            var i = 0
            while i + needle.count <= line.count {
                var ok = true
                for k in 0..<needle.count where line[i + k] != needle[k] {
                    ok = false
                    break
                }
                if ok { return true }
                i += 1
            }
        }
        return false
    }

    @inline(__always)
    static func countNewlines(_ base: UnsafePointer<UInt8>, _ s: Int, _ e: Int) -> Int {
        var c = 0
        for k in s..<e where base[k] == 0x0A { c += 1 }
        return c
    }

    @inline(__always)
    static func lineEnd(_ base: UnsafePointer<UInt8>, _ s: Int, _ n: Int) -> Int {
        var e = s
        while e < n && base[e] != 0x0A { e += 1 }
        return e
    }

    /// The byte length of a passage header at the start of `line`: `Document [i](Title: t)` up to the closing
    /// parenthesis, or a whole markdown heading line. Nil when the line has none.
    static func headerEnd(_ line: UnsafeBufferPointer<UInt8>) -> Int? {
        let doc = Array("Document [".utf8)
        if line.count > doc.count && line.starts(with: doc) {
            var i = doc.count
            while i < line.count && line[i] != UInt8(ascii: "]") { i += 1 }
            i += 1
            guard i < line.count else { return line.count }
            if line[i] == UInt8(ascii: "(") {
                var depth = 0
                while i < line.count {
                    if line[i] == UInt8(ascii: "(") { depth += 1 }
                    if line[i] == UInt8(ascii: ")") {
                        depth -= 1
                        if depth == 0 { return i + 1 }
                    }
                    i += 1
                }
                return line.count
            }
            return i
        }
        if line.first == UInt8(ascii: "#") {
            var i = 0
            while i < line.count && line[i] == UInt8(ascii: "#") { i += 1 }
            if i <= 6 && i < line.count && line[i] == 0x20 { return line.count }
        }
        return nil
    }

    /// Numbered items ("[3] ...", "3. ...", "3) ...") and "Passage"/"Source" labels start passages.
    static func startsPassage(_ line: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let c = line.first else { return false }
        if c == UInt8(ascii: "[") && line.count > 2 && line[1] >= 0x30 && line[1] <= 0x39 { return true }
        if c >= 0x30 && c <= 0x39 {
            var i = 0
            while i < line.count && line[i] >= 0x30 && line[i] <= 0x39 { i += 1 }
            return i < line.count - 1 && i <= 3 && (line[i] == UInt8(ascii: ".") || line[i] == UInt8(ascii: ")"))
                && line[i + 1] == 0x20
        }
        return false
    }

    static let abbreviations: Set<UInt64> = Set(
        ["mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "no", "mt", "inc", "ltd", "co", "gen", "gov", "sen", "rep",
         "prof", "fig", "vol", "ca", "approx", "e.g", "i.e", "u.s", "etc", "jan", "feb", "aug", "sept", "oct", "nov",
         "dec"].map { WordHash.of($0) })

    /// A "." after a single capital letter (an initial) or a common abbreviation does not end a sentence.
    static func isAbbreviation(_ base: UnsafePointer<UInt8>, _ pieces: [Piece], _ i: Int) -> Bool {
        guard i > 0, base[Int(pieces[i].end) - 1] == UInt8(ascii: ".") else { return false }
        let prev = pieces[i - 1]
        guard prev.kind == .word else { return false }
        var s = Int(prev.start)
        if prev.flags.contains(.leadingSpace) { s += 1 }
        let len = Int(prev.end) - s
        if len == 1 && base[s] >= 0x41 && base[s] <= 0x5A { return true }
        return abbreviations.contains(prev.hash)
    }

    static func startsURL(_ base: UnsafePointer<UInt8>, _ s: Int, _ e: Int) -> Bool {
        var i = s
        if base[i] == 0x20 { i += 1 }
        return e - i >= 4 && base[i] == UInt8(ascii: "h") && base[i + 1] == UInt8(ascii: "t")
            && base[i + 2] == UInt8(ascii: "t") && base[i + 3] == UInt8(ascii: "p")
            || e - i >= 3 && base[i] == UInt8(ascii: "w") && base[i + 1] == UInt8(ascii: "w")
                && base[i + 2] == UInt8(ascii: "w")
    }

    /// The piece is (or contains) a backtick or a double quote.
    static func quoteByte(_ base: UnsafePointer<UInt8>, _ s: Int, _ e: Int) -> Bool {
        for k in s..<e where base[k] == 0x60 || base[k] == 0x22 { return true }
        return false
    }

    // MARK: Question terms and scoring

    /// Stem hashes of the question's content words (stop words out, duplicates out, at most 32).
    func questionTerms(_ question: String?) -> [UInt64] {
        guard let question, !question.isEmpty else { return [] }
        var terms: [UInt64] = []
        var compounds = Set<UInt64>()
        var previousStart = 0
        var previousEnd = -1
        var q = Array(question.utf8)
        q.withUnsafeMutableBufferPointer { b in
            let base = b.baseAddress!
            var i = 0
            let n = b.count
            while i < n {
                while i < n && !Self.isWordByte(base[i]) { i += 1 }
                var e = i
                while e < n && (Self.isWordByte(base[e]) || (base[e] == UInt8(ascii: "'") && e + 1 < n && Self.isWordByte(base[e + 1]))) {
                    e += 1
                }
                if e > i {
                    let h = WordHash.of(base + i, e - i)
                    if !StopWords.hashes.contains(h) {
                        let st = WordHash.stem(base + i, e - i)
                        if !terms.contains(st) && terms.count < 32 { terms.append(st) }
                        // "gall bladder" also matches "gallbladder".
                        if previousEnd >= 0 && e - previousStart <= 40 {
                            var joined = Array(UnsafeBufferPointer(start: base + previousStart, count: previousEnd - previousStart))
                            joined.append(contentsOf: UnsafeBufferPointer(start: base + i, count: e - i))
                            let j = joined.withUnsafeBufferPointer { WordHash.stem($0.baseAddress!, $0.count) }
                            if !terms.contains(j) && terms.count < 32 {
                                terms.append(j)
                                compounds.insert(j)
                            }
                        }
                        previousStart = i
                        previousEnd = e
                    } else {
                        previousEnd = -1
                    }
                }
                i = e
            }
        }
        return terms
    }

    /// Scores sentences by BM25 against the question terms; returns term weights and the best sentence score.
    enum AnswerType { case none, name, number }

    /// What kind of answer the question asks for, from its wh-word.
    static func answerType(_ question: String?) -> AnswerType {
        guard let q = question?.lowercased() else { return .none }
        let words = q.split(whereSeparator: { !$0.isLetter && $0 != "'" }).prefix(12)
        guard let first = words.firstIndex(where: { ["who", "whom", "whose", "when", "how", "where", "which"].contains($0) || $0 == "what" })
        else { return .none }
        switch words[first] {
        case "who", "whom", "whose", "where": return .name
        case "when": return .number
        case "how":
            let next = words.dropFirst(first - words.startIndex + 1).first ?? ""
            return ["many", "much", "old", "long", "tall", "far", "big"].contains(next) ? .number : .none
        case "what", "which":
            let next = words.dropFirst(first - words.startIndex + 1).first ?? ""
            return ["year", "date", "time", "day", "age", "percentage"].contains(next) ? .number : .none
        default: return .none
        }
    }

    func score(_ sentences: inout [Sentence], _ pieces: inout [Piece], terms: [UInt64], answerType: AnswerType = .none)
        -> ([Double], Double, [Double])
    {
        let nt = terms.count
        let ns = sentences.count
        var tf = [UInt16](repeating: 0, count: ns * nt)
        var passageCount = 0
        for s in sentences { passageCount = max(passageCount, Int(s.passage) + 1) }
        var ptf = [UInt16](repeating: 0, count: passageCount * nt)
        var passageWords = [Int32](repeating: 0, count: passageCount)
        var phrase = [Double](repeating: 0, count: ns)
        var lastTerm = -10
        var lastPos = -10
        var candidate = [Bool](repeating: false, count: ns)
        for j in pieces.indices where pieces[j].kind == .word || pieces[j].kind == .number {
            let st = pieces[j].stem != 0 ? pieces[j].stem : pieces[j].hash
            var t = -1
            if st != 0 {
                for k in 0..<nt where terms[k] == st {
                    t = k
                    break
                }
            }
            guard t >= 0 else {
                // Something of the kind the question asks for (a name for "who", a number for "when").
                switch answerType {
                case .name where pieces[j].kind == .word && pieces[j].flags.contains(.protected): candidate[Int(pieces[j].sentence)] = true
                case .number where pieces[j].kind == .number: candidate[Int(pieces[j].sentence)] = true
                default: break
                }
                continue
            }
            pieces[j].flags.insert(.term)
            let si = Int(pieces[j].sentence)
            tf[si * nt + t] &+= 1
            ptf[Int(sentences[si].passage) * nt + t] &+= 1
            if (t == lastTerm + 1 || t == lastTerm - 1) && j - lastPos <= 3 { phrase[si] += 1 }
            lastTerm = t
            lastPos = j
        }
        var totalWords = 0
        for s in sentences {
            totalWords += Int(s.words)
            passageWords[Int(s.passage)] += s.words
        }
        var df = [Int](repeating: 0, count: nt)
        var pdf = [Int](repeating: 0, count: nt)
        for si in 0..<ns { for t in 0..<nt where tf[si * nt + t] > 0 { df[t] += 1 } }
        for p in 0..<passageCount { for t in 0..<nt where ptf[p * nt + t] > 0 { pdf[t] += 1 } }
        let k1 = 1.2
        let b = 0.75
        let avgS = max(1, Double(totalWords) / Double(max(ns, 1)))
        let avgP = max(1, Double(totalWords) / Double(max(passageCount, 1)))
        var weights = [Double](repeating: 0, count: nt)
        var pweights = [Double](repeating: 0, count: nt)
        for t in 0..<nt {
            // Local IDF (this prompt's sentences / passages) times global rarity: a word rare in English ("nobel")
            // outweighs a common one ("first") that happens to be rare in this prompt.
            let global = Self.kGlobal > 0 ? (1 - Self.kGlobal) + Self.kGlobal * lexicon.information(terms[t]) / 4 : 1
            weights[t] = global * log(1 + (Double(ns) - Double(df[t]) + 0.5) / (Double(df[t]) + 0.5))
            pweights[t] = global * log(1 + (Double(passageCount) - Double(pdf[t]) + 0.5) / (Double(pdf[t]) + 0.5))
        }
        var pscore = [Double](repeating: 0, count: passageCount)
        for p in 0..<passageCount {
            var sc = 0.0
            let len = Double(passageWords[p])
            for t in 0..<nt {
                let f = Double(ptf[p * nt + t])
                if f > 0 { sc += pweights[t] * f * (k1 + 1) / (f + k1 * (1 - b + b * len / avgP)) }
            }
            pscore[p] = sc
        }
        var best = 0.0
        var prevOwn = 0.0
        var prevPassage: Int32 = -1
        for si in 0..<ns {
            var sc = 0.0
            let len = Double(sentences[si].words)
            for t in 0..<nt {
                let f = Double(tf[si * nt + t])
                if f > 0 { sc += weights[t] * f * (k1 + 1) / (f + k1 * (1 - b + b * len / avgS)) }
            }
            if sc > 0 { sc += Self.kPhrase * phrase[si] + (candidate[si] ? Self.kType : 0) }
            sentences[si].own = sc
            if sentences[si].passage != prevPassage { prevOwn = 0 }
            sentences[si].score = sc + Self.kPassageW * pscore[Int(sentences[si].passage)] + Self.kCarry * prevOwn
            if !sentences[si].isHeader { prevOwn = sc }
            prevPassage = sentences[si].passage
            best = max(best, sc)
        }
        return (weights, best, pscore)
    }

    // MARK: Selection

    /// Keeps sentences best first while they fit in `budget` tokens (must-keep ones first, whatever they cost);
    /// returns the tokens used.
    func select(_ sentences: inout [Sentence], passageScores: [Double], budget: Int) -> Int {
        var used = 0
        var opened = Set<Int32>()
        var headerOf: [Int32: Int] = [:]
        for (i, s) in sentences.enumerated() where s.isHeader { headerOf[s.passage] = i }
        func take(_ i: Int) {
            sentences[i].kept = true
            used += Int(sentences[i].tokens)
            let p = sentences[i].passage
            if !opened.contains(p) {
                opened.insert(p)
                if let h = headerOf[p] {
                    sentences[h].kept = true
                    used += Int(sentences[h].tokens)
                }
            }
        }
        for i in sentences.indices where sentences[i].mustKeep && !sentences[i].isHeader { take(i) }
        // Whole passages first, best BM25 score first, up to a share of the budget.
        if Self.kWhole > 0 && passageScores.count > 1 {
            var cost = [Int](repeating: 0, count: passageScores.count)
            var members = [[Int]](repeating: [], count: passageScores.count)
            for (i, s) in sentences.enumerated() where !s.kept {
                cost[Int(s.passage)] += Int(s.tokens)
                members[Int(s.passage)].append(i)
            }
            let order = passageScores.indices.sorted {
                passageScores[$0] > passageScores[$1] || (passageScores[$0] == passageScores[$1] && $0 < $1)
            }
            let cap = Int(Double(budget) * Self.kWhole)
            for p in order where passageScores[p] > 0 && !members[p].isEmpty {
                if used + cost[p] <= cap {
                    for i in members[p] where !sentences[i].kept { take(i) }
                }
            }
        }
        let order = sentences.indices.filter { !sentences[$0].isHeader && !sentences[$0].kept }
            .sorted { sentences[$0].score > sentences[$1].score || (sentences[$0].score == sentences[$1].score && $0 < $1) }
        if Self.kCover > 0 {
            // Coverage: the best sentence of every passage not kept yet, best first, before seconds.
            for i in order where !sentences[i].kept && !opened.contains(sentences[i].passage) && sentences[i].own > 0 {
                var cost = Int(sentences[i].tokens)
                if let h = headerOf[sentences[i].passage] { cost += Int(sentences[h].tokens) }
                if used + cost <= budget { take(i) }
            }
        }
        for i in order where !sentences[i].kept {
            var cost = Int(sentences[i].tokens)
            if !opened.contains(sentences[i].passage), let h = headerOf[sentences[i].passage] {
                cost += Int(sentences[h].tokens)
            }
            if used + cost <= budget { take(i) }
        }
        return used
    }

    // MARK: Pruning

    /// Drops the least informative unprotected pieces of kept sentences until `toDrop` tokens are gone (or
    /// nothing droppable is left). Returns whether anything was dropped.
    func prune(_ bytes: [UInt8], _ pieces: inout [Piece], _ sentences: [Sentence], toDrop: Int) -> Bool {
        // Priority buckets 0...255 (information x 32); protected and structural pieces are not candidates.
        var bucketTokens = [Int](repeating: 0, count: 256)
        var priority = [UInt8](repeating: 255, count: pieces.count)
        var candidates = 0
        for j in pieces.indices {
            let p = pieces[j]
            guard sentences[Int(p.sentence)].kept, !sentences[Int(p.sentence)].mustKeep,
                !p.flags.contains(.protected), !p.flags.contains(.term), p.kind != .newline
            else { continue }
            var info: Double
            switch p.kind {
            case .word:
                info = lexicon.information(p.hash)
                if p.flags.contains(.repeated) { info = p.flags.contains(.capital) ? Self.kCapRep : info * Self.kRep }
            case .number: info = 6
            case .punct: info = p.flags.contains(.terminal) ? Self.kPunct + 0.3 : Self.kPunct
            case .space: info = 0
            case .newline: continue
            }
            if p.kind == .word && info < 1.5 && j + 1 < pieces.count && Self.articles.contains(p.hash) {
                // An article goes with the word it introduces ("the Indian Ocean", "the subcutis").
                let next = pieces[j + 1]
                if next.kind == .word || next.kind == .number {
                    let nextInfo = next.flags.contains(.protected) || next.kind == .number
                        ? 6 : lexicon.information(next.hash)
                    info = max(info, nextInfo * Self.kArticle)
                }
            }
            let bucket = UInt8(min(254, Int(info * 32)))
            priority[j] = bucket
            bucketTokens[Int(bucket)] += Int(p.tokens)
            candidates += 1
        }
        guard candidates > 0 else { return false }
        var dropped = 0
        var threshold = 0
        while threshold < 255 && dropped + bucketTokens[threshold] <= toDrop {
            dropped += bucketTokens[threshold]
            threshold += 1
        }
        var any = false
        for j in pieces.indices where priority[j] < threshold {
            pieces[j].flags.insert(.dropped)
            any = true
        }
        // Part of the threshold bucket, in text order.
        if threshold < 255 && dropped < toDrop {
            for j in pieces.indices where Int(priority[j]) == threshold && dropped < toDrop {
                pieces[j].flags.insert(.dropped)
                dropped += Int(pieces[j].tokens)
                any = true
            }
        }
        return any
    }
}

