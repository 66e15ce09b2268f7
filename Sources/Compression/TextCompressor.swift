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
///    question words appearing next to each other, a share of the previous sentence's score (answers often
///    follow the sentence that matches the question), and for a passage's first sentence a share of its header's
///    score (a title that matches the question vouches for the lead sentence). Sentences are taken best first while they fit, then emitted
///    in their original order (a passage's header and line break count against the budget when the passage is
///    opened); a passage header (`Document [i](Title: ...)`, a markdown heading) is kept with the
///    first kept sentence of its passage.
/// 3. **Pruning** by self-information (wordfreq Zipf values): the most predictable pieces go first ("the", "of",
///    commas), never a protected one: numbers (digits and spelled out, "seven", "eighth"), capitalised words, words
///    of the question, URLs, `code`, quoted strings, passage headers, sentences that ask something
///    (``CompressionOptions/preserveQuestions``), `preserve_sections` blocks, fenced code and JSON; a word the
///    tokenizer split ("1940s", "macOS") is protected whole when a part of it is. A function word between two
///    protected words ("Bank *of* America") or an article before a name counts as more informative than elsewhere;
///    a later occurrence of a name (one word or several) is no longer protected; the words right after and right
///    before a number count almost as much as the number ("3.99 degrees", "more than 200"); a piece's information
///    is divided by a power of its token count; a passage's lead sentence counts a little more. Lossy steps also
///    shorten `Document [i](Title: t)` headers to `Document [i](t)`.
/// 4. **Budget**: when protected pieces alone exceed the budget (no question), whole sentences go, the least
///    information per token first, so the achieved ratio holds.
///
/// Quality score (0...1): with a question, the mean of (a) the share of question-word weight (IDF) present in the
/// original that is still present and (b) the best kept sentence's score over the best sentence's score; without a
/// question, the mean of (c) the share of protected pieces kept and (d) the square root of the share of
/// self-information kept (the informative half of a text carries well over half of its information).
///
/// Everything runs on the UTF-8 bytes with one tokenizer pass; no dictionaries are built per call.
/// A fixed set of words by ``WordHash`` (open addressing, no per-lookup hashing: the word hash is the key).
struct WordSet: Sendable {
    private let keys: [UInt64]
    private let mask: Int

    init(_ words: [String]) { self.init(hashes: words.map { WordHash.of($0) }) }

    init(hashes: [UInt64]) {
        var size = 16
        while size < hashes.count * 4 { size <<= 1 }
        var keys = [UInt64](repeating: 0, count: size)
        for h in hashes {
            var slot = Int(truncatingIfNeeded: h ^ (h >> 29)) & (size - 1)
            while keys[slot] != 0 && keys[slot] != h { slot = (slot + 1) & (size - 1) }
            keys[slot] = h
        }
        self.keys = keys
        self.mask = size - 1
    }

    @inline(__always)
    func contains(_ h: UInt64) -> Bool {
        var slot = Int(truncatingIfNeeded: h ^ (h >> 29)) & mask
        while true {
            let k = keys[slot]
            if k == h { return true }
            if k == 0 { return false }
            slot = (slot + 1) & mask
        }
    }
}

struct HashSet64 {
    var keys: [UInt64]
    let mask: Int

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = [UInt64](repeating: 0, count: size)
        mask = size - 1
    }

    /// Inserts `h` (non-zero); false when it was there.
    @inline(__always)
    mutating func insert(_ h: UInt64) -> Bool {
        var slot = Int(truncatingIfNeeded: h ^ (h >> 29)) & mask
        while true {
            let k = keys[slot]
            if k == h { return false }
            if k == 0 {
                keys[slot] = h
                return true
            }
            slot = (slot + 1) & mask
        }
    }
}

public struct TextCompressor: Sendable {
    public let encoding: Encoding
    public let lexicon: Lexicon
    // Tuning (chosen on the development split of the QA benchmark, lines 0-1599 only; see
    // Benchmarks/compression_quality.py). Pruning: a repeated lowercase word keeps this share of its
    // self-information; a repeated stand-alone name drops to this information; function words of Zipf >= 5
    // (``Lexicon/isFrequent(_:)``) between protected words and sentence-initial capitalised words of Zipf >= 5 are
    // handled apart; an article takes this share of the next word's information, a function word between two
    // informative words (>= 3.5) kBridge of the lesser.
    static let kRep: Double = 0.5
    static let kCapRep: Double = 1.2
    static let kArticle: Double = 0.9
    // Selection: whole passages (best BM25 first) up to this share of the budget, then the best sentence of each
    // remaining passage (kCover), then any sentence by score. Term weights: local IDF times global rarity (kGlobal).
    // Sentence score: own BM25 + kPassageW x passage BM25 + kCarry x previous sentence's + kPhrase per adjacent
    // question-word pair + kType when it holds what the question asks for (a name for "who", a number for "when")
    // + kHead x its header's BM25 for a passage's first sentence.
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
    static let kBridge: Double = 0.7
    static let kHead: Double = 0.5
    // Without a question: a piece's information is divided by its tokens^kTokPow (a multi-token piece costs more),
    // and a passage's lead sentence gets kLead more.
    static let kTokPow: Double = 0.3
    static let kLead: Double = 0.5
    // Numbers keep their neighbours: the word after one (its unit or what it counts, "3.99 degrees", "15th
    // century") gets kUnit x a number's information, the word before one ("more than 200", "around 2011") kPre x.
    static let kUnit: Double = 1.0
    static let kPre: Double = 0.8
    static let articles = WordSet(["the", "a", "an"])

    /// Whether texts of ``AnalysisCache/minBytes`` or more are looked up in, and kept in, this thread's
    /// ``AnalysisCache`` (when its budget, env `AUTO_OPTIMIZER_ANALYSIS_CACHE_BYTES`, is not 0). Same results either
    /// way; `false` is for measuring what a text never seen before costs.
    public let cachesAnalyses: Bool

    public init(encoding: Encoding, lexicon: Lexicon = .shared, cachesAnalyses: Bool = true) {
        self.encoding = encoding
        self.lexicon = lexicon
        self.cachesAnalyses = cachesAnalyses
    }

    // MARK: - Pieces, sentences, passages

    /// Fields are ordered widest first, and a line break's offsets share the word hashes' room (it has none), so a
    /// piece takes 40 bytes: every step walks the whole array (~7,300 pieces for an 8k-token prompt), and in a
    /// sidecar that array is the larger part of what a request reads.
    struct Piece {
        /// Word and number pieces: the hash of the word's stem and of the word (``WordHash``); 0 for punctuation
        /// and spaces. Line breaks: `breakStart` (low half) and `emitStart` (high half); `emitEnd`.
        var stem: UInt64 = 0
        var hash: UInt64 = 0
        var start: Int32
        var end: Int32
        var tokens: Int32
        var sentence: Int32 = 0
        var flags: Flags
        var kind: Kind
        /// Zipf value x 10 of a word (0: not listed; ``unknown``: not looked up yet, see ``information``).
        var zipf10: UInt8 = Piece.unknown
        static let unknown: UInt8 = 255

        /// For line breaks: where the line break starts (".\n" is one piece; its "." goes with its sentence); set
        /// only on line breaks.
        var breakStart: Int32 {
            get { kind == .newline ? Int32(truncatingIfNeeded: stem) : start }
            set { stem = stem & 0xFFFF_FFFF_0000_0000 | UInt64(UInt32(bitPattern: newValue)) }
        }
        /// What is emitted (after whitespace normalisation): `start..<end` unless a line break's was normalised;
        /// set only on line breaks.
        var emitStart: Int32 {
            get { kind == .newline ? Int32(truncatingIfNeeded: stem &>> 32) : start }
            set { stem = stem & 0xFFFF_FFFF | UInt64(UInt32(bitPattern: newValue)) &<< 32 }
        }
        var emitEnd: Int32 {
            get { kind == .newline ? Int32(truncatingIfNeeded: hash) : end }
            set { hash = UInt64(UInt32(bitPattern: newValue)) }
        }

        /// Self-information 0...8 of a word piece (unlisted words count as Zipf 2).
        var information: Double {
            zipf10 == 0 || zipf10 == Piece.unknown ? 8 - Lexicon.unknownZipf : max(0, 8 - Double(zipf10) / 10)
        }
    }

    enum Kind: UInt8 { case word, number, punct, space, newline }

    struct Flags: OptionSet {
        let rawValue: UInt16
        static let capital = Flags(rawValue: 1)
        static let protected = Flags(rawValue: 2)
        static let term = Flags(rawValue: 4)
        static let dropped = Flags(rawValue: 8)
        static let leadingSpace = Flags(rawValue: 16)
        static let terminal = Flags(rawValue: 32)  // ends with . ! ?
        static let question = Flags(rawValue: 64)  // ends with ?
        static let repeated = Flags(rawValue: 128)  // a name seen before
        static let collapsed = Flags(rawValue: 256)  // a blank run normalised away
        static let asSpace = Flags(rawValue: 512)  // a blank run emitted as one space
        static let spacePrefix = Flags(rawValue: 1024)  // "\tword": emitted as " word"
        static let noSpace = Flags(rawValue: 2048)  // emitted without its leading space
        static let frequent = Flags(rawValue: 4096)  // a word of Zipf >= 5 (``Lexicon/isFrequent(_:)``)
        static let numberWord = Flags(rawValue: 8192)  // a word in ``numberWords``
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
        if cachesAnalyses && original.count >= AnalysisCache.minBytes && AnalysisCache.budget > 0 {
            let cache = PieceMemo.current(for: encoding, lexicon: lexicon).analyses
            if let hit = cache.lookup(original, ratio: ratio, options: options) {
                return finish(hit, question: question, options: options)
            }
            let analysis = analyze(original, ratio: ratio, options: options)
            cache.store(original, ratio: ratio, options: options, analysis)
            return finish(analysis, question: question, options: options)
        }
        // Not kept: the ranking may change the pieces and sentences in place instead of copying them.
        return finish(analyze(original, ratio: ratio, options: options), question: question, options: options)
    }

    func finish(_ analysis: consuming Analysis, question: String?, options: CompressionOptions) -> TextCompression {
        switch consume analysis {
        case .done(let result):
            return result
        case .lossy(let input):
            return compress(input, question: question, options: options)
        }
    }

    /// What compressing a text comes to before its question is looked at: either the outcome (nothing lossy to
    /// do: the question is not used), or the pieces, sentences and passages the question's terms are ranked in.
    /// It depends on the text's bytes, the ratio and the options alone (and the compressor's encoding and
    /// lexicon), so it is kept per thread for texts that come again (``AnalysisCache``).
    enum Analysis {
        case done(TextCompression)
        case lossy(LossyInput)
    }

    struct LossyInput {
        /// The text after the lossless steps (a JSON message minified), whose ranges the pieces are.
        var bytes: [UInt8]
        var techniques: CompressionTechniques
        var originalCount: Int
        var budget: Int
        var pieces: [Piece]
        var segmentation: Segmentation

        /// Bytes held (for ``AnalysisCache``'s bound).
        var size: Int {
            bytes.count + pieces.capacity * MemoryLayout<Piece>.stride
                + segmentation.sentences.capacity * MemoryLayout<Sentence>.stride
                + segmentation.lineBreaks.capacity * 8
        }
    }

    /// The lossless steps, pieces, sentences and passages of `original`: everything but the question's ranking.
    func analyze(_ original: [UInt8], ratio: Double, options: CompressionOptions) -> Analysis {
        var bytes = original
        var techniques: CompressionTechniques = []
        var originalTokens: Int? = nil
        var jsonSpans: [Range<Int>] = []
        if options.lossless, let m = Lossless.minifyJSON(bytes) {
            originalTokens = count(original)
            bytes = m.bytes
            jsonSpans = m.spans
            techniques.insert(.json)
        }
        let wholeJSON = Self.isJSON(bytes)
        var total = 0
        var normalizer: SpacingNormalizer? = options.lossless && !wholeJSON ? SpacingNormalizer() : nil
        var pieces = self.pieces(
            bytes, protecting: wholeJSON ? [] : Self.protectedSpans(bytes) + jsonSpans, normalizing: &normalizer,
            total: &total)
        let originalCount = originalTokens ?? total
        if let normalizer, normalizer.changed {
            techniques.insert(.whitespace)
            total -= normalizer.removed
        }
        let budget = Int((Double(originalCount) * ratio).rounded(.down))
        let lossy = options.selection || options.pruning
        if total <= budget || !lossy || originalCount < options.minMessageTokens || wholeJSON {
            let all = [Sentence(first: 0, end: Int32(pieces.count), passage: 0, kept: true)]
            let out = emit(bytes, pieces, all)
            if out.bytes == original { techniques = [] }
            return .done(
                TextCompression(
                    bytes: out.bytes, originalTokens: originalCount, tokens: out.tokens, quality: 1,
                    techniques: techniques))
        }
        let segmentation = segmentCounting(bytes, &pieces, options: options)
        // Dropping the labels is lossy: it counts as pruning (quality guard, technique, savings) even when no
        // other step has to run.
        if options.shortenHeaders && segmentation.shortened { techniques.insert(.pruning) }
        return .lossy(
            LossyInput(
                bytes: bytes, techniques: techniques, originalCount: originalCount,
                budget: budget, pieces: pieces, segmentation: segmentation))
    }

    /// Ranks `input`'s sentences by `question` and keeps what fits its budget.
    func compress(_ input: consuming LossyInput, question: String?, options: CompressionOptions) -> TextCompression {
        let bytes = input.bytes
        let budget = input.budget
        let originalCount = input.originalCount
        var techniques = input.techniques
        let total = input.segmentation.tokens
        let lineBreaks = input.segmentation.lineBreaks
        // Taken out of `input`, so that without the cache they are the only references and change in place.
        var pieces = input.pieces
        var sentences = input.segmentation.sentences
        input.pieces = []
        input.segmentation.sentences = []
        let terms = questionTerms(question)
        var termWeights: [Double] = []
        var bestScore = 0.0
        var passageScores: [Double] = []
        var termPieces: [Int32] = []
        if !terms.isEmpty {
            (termWeights, bestScore, passageScores, termPieces) = score(
                &sentences, &pieces, terms: terms, answerType: Self.answerType(question))
        }
        // A question none of whose words occur ("Summarize this.") cannot rank anything: prune instead.
        let hasQuestion = bestScore > 0
        var used = 0
        if hasQuestion && options.selection {
            var breaks = [Int](repeating: 0, count: passageScores.count)
            for b in lineBreaks where Int(b.sentence) < sentences.count {
                let k = Int(sentences[Int(b.sentence)].passage)
                if k < breaks.count { breaks[k] += Int(b.tokens) }
            }
            used = select(
                &sentences, passageScores: passageScores, breaks: breaks,
                budget: Int(Double(budget) / (options.pruning ? Self.kPruneShare : 1.0)))
            techniques.insert(.selection)
        } else {
            for i in sentences.indices { sentences[i].kept = true }
            used = total
        }
        // The protection that depends on the neighbours is read by pruning and by the quality of a compression
        // without a question, and added here when one of them runs (before pruning, which unprotects repeats).
        var neighboursProtected = false
        if options.pruning && used > budget {
            protectNeighbours(&pieces, sentences)
            neighboursProtected = true
            let bonus = hasQuestion ? [] : sentenceBonus(sentences)
            if prune(&pieces, sentences, toDrop: used - budget, bonus: bonus) { techniques.insert(.pruning) }
        }
        var out = emit(bytes, pieces, sentences)
        if options.pruning && !hasQuestion && out.tokens > budget {
            // Protected pieces alone exceed the budget: whole sentences go, least informative first.
            if dropSentences(&sentences, &pieces, toDrop: out.tokens - budget) > 0 {
                techniques.insert(.selection)
                out = emit(bytes, pieces, sentences)
            }
        }
        var quality = 1.0
        if hasQuestion {
            var present = [Bool](repeating: false, count: terms.count)
            var surviving = [Bool](repeating: false, count: terms.count)
            var bestKept = 0.0
            for j in termPieces {
                let p = pieces[Int(j)]
                guard let t = terms.firstIndex(of: p.stem) else { continue }
                present[t] = true
                if sentences[Int(p.sentence)].kept && !p.flags.contains(.dropped) { surviving[t] = true }
            }
            for s in sentences where s.kept { bestKept = max(bestKept, s.own) }
            var wAll = 0.0
            var wKept = 0.0
            for t in terms.indices where present[t] {
                wAll += termWeights[t]
                if surviving[t] { wKept += termWeights[t] }
            }
            let coverage = wAll > 0 ? wKept / wAll : 1
            let evidence = bestScore > 0 ? bestKept / bestScore : 1
            quality = 0.5 * coverage + 0.5 * evidence
        } else {
            if !neighboursProtected { protectNeighbours(&pieces, sentences) }
            var protectedAll = 0
            var protectedKept = 0
            var infoAll = 0.0
            var infoKept = 0.0
            for p in pieces where p.kind == .word || p.kind == .number {
                let info = p.kind == .number
                    ? 6 : (p.zipf10 == Piece.unknown ? lexicon.information(p.hash) : p.information)
                let keep = sentences[Int(p.sentence)].kept && !p.flags.contains(.dropped)
                infoAll += info
                if p.flags.contains(.protected) { protectedAll += 1 }
                if keep {
                    infoKept += info
                    if p.flags.contains(.protected) { protectedKept += 1 }
                }
            }
            let protectedShare = protectedAll > 0 ? Double(protectedKept) / Double(protectedAll) : 1
            let infoShare = infoAll > 0 ? (infoKept / infoAll).squareRoot() : 1
            quality = 0.5 * protectedShare + 0.5 * infoShare
        }
        return TextCompression(
            bytes: out.bytes, originalTokens: originalCount, tokens: out.tokens, quality: quality,
            techniques: techniques)
    }

    /// Concatenates the kept pieces. Line breaks survive only between kept content, once; the punctuation glued to
    /// a line break (".\n") only with its sentence; a leading space is dropped at the start of a line.
    func emit(_ bytes: [UInt8], _ pieces: [Piece], _ sentences: [Sentence]) -> (bytes: [UInt8], tokens: Int) {
        var kept = 0
        // The output is never longer than the input: pieces emit sub-ranges of their bytes, a blank run or a tab
        // at most one space in its place.
        let out = [UInt8](unsafeUninitializedCapacity: bytes.count + 1) { o, written in
            guard let ob = o.baseAddress else { return }
            var w = 0
            bytes.withUnsafeBufferPointer { b in
                guard let base = b.baseAddress else { return }
                let n = b.count
                let capacity = o.count
                @inline(__always) func put(_ from: Int, _ to: Int) {
                    let len = to - from
                    guard len > 0 else { return }
                    if len <= 16 && from + 16 <= n && w + 16 <= capacity {
                        // Most pieces are a few bytes: two 8-byte moves instead of a call to memcpy (the bytes
                        // written past `len` are overwritten next, or left out of `written`).
                        let src = UnsafeRawPointer(base + from)
                        let dst = UnsafeMutableRawPointer(ob + w)
                        dst.storeBytes(of: src.loadUnaligned(as: UInt64.self), as: UInt64.self)
                        dst.storeBytes(of: src.loadUnaligned(fromByteOffset: 8, as: UInt64.self), toByteOffset: 8,
                                       as: UInt64.self)
                    } else {
                        (ob + w).initialize(from: base + from, count: len)
                    }
                    w += len
                }
                /// One space, unless the output is empty or already ends in a space or a line break.
                @inline(__always) func space() {
                    if w > 0 && ob[w - 1] != 0x0A && ob[w - 1] != 0x20 {
                        (ob + w).initialize(to: 0x20)
                        w += 1
                    }
                }
                pieces.withUnsafeBufferPointer { pieces in
                    sentences.withUnsafeBufferPointer { sentences in
                        @inline(__always) func emit(_ p: Piece) {
                            if p.flags.contains(.collapsed) { return }
                            let s = sentences[Int(p.sentence)]
                            if p.kind == .newline {
                                // ".\n": the punctuation goes with its sentence; a bare break only between kept
                                // content.
                                let withPunct = s.kept && p.breakStart > p.start && p.emitStart == p.start
                                if !withPunct && (w == 0 || ob[w - 1] == 0x0A) { return }
                                put(withPunct ? Int(p.emitStart) : Int(p.breakStart), Int(p.emitEnd))
                                kept += Int(p.tokens)
                                return
                            }
                            guard s.kept && !p.flags.contains(.dropped) else { return }
                            var start = Int(p.emitStart)
                            if p.flags.contains(.leadingSpace)
                                && (w == 0 || ob[w - 1] == 0x0A || p.flags.contains(.noSpace))
                            {
                                start = Int(p.start) + 1
                            }
                            if p.flags.contains(.asSpace) {
                                space()
                            } else if p.flags.contains(.spacePrefix) {
                                space()
                                put(Int(p.start) + 1, Int(p.emitEnd))
                            } else {
                                put(start, Int(p.emitEnd))
                            }
                            kept += Int(p.tokens)
                        }
                        // Sentence by sentence: a sentence not kept emits nothing (its pieces are its own, and no
                        // line break is in one), so its pieces are not read; the line breaks between sentences are.
                        var i = 0
                        for s in sentences {
                            let first = Int(s.first)
                            let end = Int(s.end)
                            while i < first {
                                emit(pieces[i])
                                i += 1
                            }
                            if s.kept {
                                while i < end {
                                    emit(pieces[i])
                                    i += 1
                                }
                            } else {
                                i = max(i, end)
                            }
                        }
                        while i < pieces.count {
                            emit(pieces[i])
                            i += 1
                        }
                    }
                }
            }
            while w > 0, ob[w - 1] == 0x0A || ob[w - 1] == 0x20 || ob[w - 1] == 0x09 || ob[w - 1] == 0x0D { w -= 1 }
            written = w
        }
        return (out, kept)
    }

    /// Byte ranges that must survive verbatim: URLs, `code`, short "quoted" strings (straight or curly quotes).
    static func protectedSpans(_ b: [UInt8]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        let n = b.count
        var i = 0
        func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x0A || c == 0x09 || c == 0x0D }
        while i < n {
            i = b.withUnsafeBufferPointer { Self.nextSpanCandidate($0, from: i) }
            guard i < n else { break }
            let c = b[i]
            if c == UInt8(ascii: "h") || c == UInt8(ascii: "w") {
                let atWordStart = i == 0 || !isWordByte(b[i - 1])
                if atWordStart && (Self.hasPrefix(b, i, "https://") || Self.hasPrefix(b, i, "http://")
                    || Self.hasPrefix(b, i, "www."))
                {
                    var e = i
                    while e < n && !isSpace(b[e]) && b[e] != UInt8(ascii: "\"") && b[e] != UInt8(ascii: "<")
                        && b[e] != UInt8(ascii: ">")
                    {
                        e += 1
                    }
                    while e > i && [UInt8(ascii: "."), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: ":"),
                                    UInt8(ascii: ")"), UInt8(ascii: "?"), UInt8(ascii: "!")].contains(b[e - 1])
                    {
                        e -= 1
                    }
                    out.append(i..<e)
                    i = e
                    continue
                }
            }
            if c == UInt8(ascii: "`") || c == UInt8(ascii: "\"") || (c == 0xE2 && i + 2 < n && b[i + 1] == 0x80 && b[i + 2] == 0x9C) {
                let limit = c == UInt8(ascii: "`") ? 300 : 160
                let open = c == 0xE2 ? 3 : 1
                var e = i + open
                while e < n && e - i <= limit && b[e] != 0x0A {
                    if c == 0xE2 ? (b[e] == 0xE2 && e + 2 < n && b[e + 1] == 0x80 && b[e + 2] == 0x9D) : b[e] == c { break }
                    e += 1
                }
                if e < n && e - i <= limit && b[e] != 0x0A {
                    let end = e + (c == 0xE2 ? 3 : 1)
                    out.append(i..<end)
                    i = end
                    continue
                }
            }
            i += 1
        }
        return out
    }

    /// The first index from `i` that may start a protected span: a " ` or curly-quote lead byte, or an "ht" / "ww"
    /// (URLs); `b.count` when there is none.
    @inline(__always)
    static func nextSpanCandidate(_ b: UnsafeBufferPointer<UInt8>, from i: Int) -> Int {
        let n = b.count
        var k = i
        // Eight bytes at a time (SWAR): skip words with none of the bytes and no "ht" / "ww" pair (the pair's
        // second byte is read from the word one byte further on).
        if let base = b.baseAddress {
            let raw = UnsafeRawPointer(base)
            while k + 9 <= n {
                let w = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: k, as: UInt64.self))
                let w1 = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: k + 1, as: UInt64.self))
                let hit = SWAR.bytesEqual(w, 0x22) | SWAR.bytesEqual(w, 0x60) | SWAR.bytesEqual(w, 0xE2)
                    | (SWAR.bytesEqual(w, 0x68) & SWAR.bytesEqual(w1, 0x74))
                    | (SWAR.bytesEqual(w, 0x77) & SWAR.bytesEqual(w1, 0x77))
                if hit != 0 { return k + hit.trailingZeroBitCount >> 3 }
                k += 8
            }
        }
        while k < n {
            let c = b[k]
            if c == 0x22 || c == 0x60 || c == 0xE2 { return k }
            if (c == UInt8(ascii: "h") && k + 1 < n && b[k + 1] == UInt8(ascii: "t"))
                || (c == UInt8(ascii: "w") && k + 1 < n && b[k + 1] == UInt8(ascii: "w"))
            {
                return k
            }
            k += 1
        }
        return n
    }

    static func hasPrefix(_ b: [UInt8], _ i: Int, _ p: StaticString) -> Bool {
        let n = p.utf8CodeUnitCount
        guard i + n <= b.count else { return false }
        let s = p.utf8Start
        for k in 0..<n where b[i + k] != s[k] { return false }
        return true
    }

    /// Whitespace normalisation on the pieces, outside fenced code blocks: blank runs inside a line become one
    /// space (or nothing when the next piece brings its own), spaces before a line break go, three or more line
    /// breaks become two; leading and trailing blank lines go at emission. One piece at a time, in order
    /// (``pieces(_:protecting:normalizing:total:)`` runs it in its pass over the pieces): a piece is visited once its
    /// token count and protection are final; the visit reads the kinds of its neighbours and the leading space of the
    /// next piece. `changed` tells whether anything changed, `removed` the tokens of the blank runs that went.
    struct SpacingNormalizer {
        var changed = false
        /// Tokens of the blank runs that went.
        var removed = 0
        private var inFence = false
        private var lineStart = true

        @inline(__always)
        mutating func visit(
            _ j: Int, _ pieces: UnsafeMutableBufferPointer<Piece>, _ base: UnsafePointer<UInt8>, _ count: Int
        ) {
            let n = pieces.count
            let p = pieces[j]
            if lineStart {
                lineStart = false
                var k = Int(p.start)
                if p.kind == .space {
                    k = Int(p.end)
                }
                while k < count && (base[k] == 0x20 || base[k] == 0x09) { k += 1 }
                if k + 2 < count && base[k] == 0x60 && base[k + 1] == 0x60 && base[k + 2] == 0x60 {
                    inFence.toggle()
                }
            }
            if p.kind == .newline {
                lineStart = true
                if inFence { return }  // breaks inside a fence stay verbatim
                let s = Int(p.start)
                let e = Int(p.end)
                // The positions of the first two and the last two line feeds, and how many there are.
                var newlineCount = 0
                var first = -1
                var second = -1
                var secondToLast = -1
                var last = -1
                for k in s..<e where base[k] == 0x0A {
                    if newlineCount == 0 { first = k } else if newlineCount == 1 { second = k }
                    secondToLast = last
                    last = k
                    newlineCount += 1
                }
                guard newlineCount >= 3 || (newlineCount > 0 && first > s) else { return }
                // At most two line breaks (from the second-to-last one), then the next line's indentation.
                var breakFrom = newlineCount >= 3 ? secondToLast : first
                if breakFrom > s && base[breakFrom - 1] == 0x0D && newlineCount < 3 { breakFrom -= 1 }
                let punctEnd = Int(p.breakStart)
                if punctEnd > s {
                    // ".\n\n\n": the punctuation and two breaks when kept, two breaks when not.
                    if newlineCount >= 3 {
                        pieces[j].emitEnd = Int32(second + 1)
                        pieces[j].breakStart = Int32(breakFrom)
                        changed = true
                    }
                } else {
                    pieces[j].emitStart = Int32(breakFrom)
                    pieces[j].breakStart = Int32(breakFrom)
                    changed = true
                }
                return
            }
            if p.kind == .word && !inFence && base[Int(p.start)] == 0x09 && !p.flags.contains(.protected) {
                pieces[j].flags.insert(.spacePrefix)
                changed = true
            }
            if p.kind == .space && !inFence && !p.flags.contains(.protected) {
                let atLineStart = j == 0 || pieces[j - 1].kind == .newline
                if atLineStart && j > 0 { return }  // indentation stays
                let nextBrings = j + 1 >= n || pieces[j + 1].flags.contains(.leadingSpace)
                    || pieces[j + 1].kind == .newline
                if nextBrings || j == 0 {
                    pieces[j].flags.insert(.collapsed)
                    removed += Int(pieces[j].tokens)
                    pieces[j].tokens = 0
                    changed = true
                } else if p.end - p.start > 1 || base[Int(p.start)] != 0x20 {
                    pieces[j].flags.insert(.asSpace)
                    changed = true
                }
            }
        }
    }

    func count(_ bytes: [UInt8]) -> Int {
        bytes.withUnsafeBufferPointer { count($0) }
    }

    /// The tokens of `b` as a text of its own, each piece's count from ``PieceMemo`` when it is there (a new one is
    /// stored): a system prompt, a question or a title's first word is byte-pair encoded once per thread, not on
    /// every request.
    func count(_ b: UnsafeBufferPointer<UInt8>) -> Int {
        guard let base = b.baseAddress else { return 0 }
        let memo = PieceMemo.current(for: encoding, lexicon: lexicon)
        var total = 0
        encoding.forEachPieceRange(b) { s, e in
            let length = e - s
            var start = Int32(truncatingIfNeeded: s)
            var end = Int32(truncatingIfNeeded: e)
            var tokens: Int32 = 0
            guard length <= PieceMemo.maxLength else {
                if let c = memo.longCount(base, s, length) {
                    total += Int(c)
                    return
                }
                encoding.tokenCounts(ofPieces: &start, &end, count: 1, in: b, into: &tokens)
                memo.storeLong(base, s, length, tokens: tokens)
                total += Int(tokens)
                return
            }
            let key = PieceMemo.key(base, s, length, b.count)
            let slot = memo.probe(key)
            if let p = memo.piece(at: slot, key, base, b.count, start: s, end: e), p.tokens >= 0 {
                total += Int(p.tokens)
                return
            }
            encoding.tokenCounts(ofPieces: &start, &end, count: 1, in: b, into: &tokens)
            _ = memo.store(classifyWithWords(base, b.count, s, e, tokens: Int(tokens)), at: slot, key)
            total += Int(tokens)
        }
        return total
    }

    static func isJSON(_ b: [UInt8]) -> Bool {
        guard let f = b.first(where: { !Lossless.isBlank($0) }), f == UInt8(ascii: "{") || f == UInt8(ascii: "[")
        else { return false }
        return b.withUnsafeBytes { JSONValidation.valueEnd($0) } != nil
    }

    // MARK: Pieces

    func pieces(_ bytes: [UInt8]) -> [Piece] {
        var total = 0
        var normalizer: SpacingNormalizer? = nil
        return pieces(bytes, protecting: [], normalizing: &normalizer, total: &total)
    }

    /// The pre-tokenizer's pieces of `bytes`, classified and token-counted, those overlapping any of `spans`
    /// (byte ranges that must survive verbatim, ``protectedSpans(_:)``) marked protected, then whitespace-normalised
    /// by `normalizer` when there is one; `total` is their tokens before normalisation.
    func pieces(
        _ bytes: [UInt8], protecting spans: [Range<Int>], normalizing normalizer: inout SpacingNormalizer?,
        total: inout Int
    ) -> [Piece] {
        var sum = 0
        defer { total = sum }
        return bytes.withUnsafeBufferPointer { b -> [Piece] in
            guard let base = b.baseAddress, b.count > 0 else { return [] }
            let n = b.count
            // The pre-tokenizer's pieces first, all of them (``Encoding/pieceEnds(_:from:into:max:)``: their ends,
            // 4 bytes a piece; a piece has at least one byte), so that the array of pieces is made at its size and
            // filled in place, and the loop filling it keeps its state in registers (a closure called for every piece
            // kept it in memory).
            let ends = UnsafeMutablePointer<Int32>.allocate(capacity: n)
            defer { ends.deallocate() }
            let count = encoding.pieceEnds(b, from: 0, into: ends, max: n)
            // Pieces seen before (on this thread, in this text or an earlier one: " the", " of", ",", " Document")
            // take their tokens and classification from ``PieceMemo`` instead of byte-pair encoding and classifying
            // them again.
            let memo = PieceMemo.current(for: encoding, lexicon: lexicon)
            if n >= Self.prefetchTagsMinimum { memo.prefetchTags() }
            // New pieces are counted together afterwards (``Encoding/tokenCounts(ofPieces:_:count:in:into:)``:
            // their vocabulary lookups overlap instead of each waiting on memory). Until then a piece's `tokens`
            // is -(k + 1), k the index of the new piece whose count it takes; memo hits copy that reference (and
            // take the stem from `newStems[k]`), and the memo slot it was stored in (`newSlots[k]`, -1 for none)
            // gets the count with the pieces.
            var newStarts: [Int32] = []
            var newEnds: [Int32] = []
            var newSlots: [Int32] = []
            var newStems: [UInt64] = []
            newStarts.reserveCapacity(n / 16 + 1)
            newEnds.reserveCapacity(n / 16 + 1)
            newSlots.reserveCapacity(n / 16 + 1)
            newStems.reserveCapacity(n / 16 + 1)
            @inline(__always) func take(_ q: QueuedPiece) -> Piece {
                let s = Int(q.start)
                let e = Int(q.end)
                let key = (q.key0, q.key1)
                // (The lanes are from the prefetch; a piece stored since, the same one a few pieces back, is found
                // by looking again.)
                if q.slot >= 0,
                    var p = memo.piece(at: Int(q.slot), lanes: q.lanes, key, base, n, start: s, end: e)
                        ?? memo.piece(at: Int(q.slot), key, base, n, start: s, end: e)
                {
                    if p.tokens < 0 && p.kind == .word { p.stem = newStems[Int(-p.tokens) - 1] }
                    return p
                }
                var p = classifyWithWords(base, n, s, e, tokens: 0)
                if q.slot < 0, let c = memo.longCount(base, s, e - s) {
                    p.tokens = c
                    return p
                }
                let k = newStarts.count
                p.tokens = -Int32(truncatingIfNeeded: k + 1)
                newStarts.append(q.start)
                newEnds.append(q.end)
                newStems.append(p.kind == .word ? p.stem : 0)
                newSlots.append(
                    q.slot >= 0 ? Int32(truncatingIfNeeded: memo.store(p, at: Int(q.slot), key)) : -1)
                return p
            }
            /// Piece `i`'s key and memo probe.
            @inline(__always) func queued(_ i: Int) -> QueuedPiece {
                let s = i == 0 ? 0 : Int(ends[i - 1])
                var q = QueuedPiece(start: Int32(truncatingIfNeeded: s), end: ends[i])
                let length = Int(ends[i]) - s
                if length <= PieceMemo.maxLength {
                    (q.key0, q.key1) = PieceMemo.key(base, s, length, n)
                    q.slot = Int32(truncatingIfNeeded: memo.probe((q.key0, q.key1)))
                }
                return q
            }
            // A piece's memo line is asked for (``PieceMemo/prefetch(_:)``) `queueDepth` pieces before it is read,
            // so that waiting on memory overlaps the work on the pieces in between.
            var out = withUnsafeTemporaryAllocation(of: QueuedPiece.self, capacity: Self.queueDepth) { ring in
                [Piece](unsafeUninitializedCapacity: count) { pieces, initialized in
                    let first = pieces.baseAddress!
                    let mask = Self.queueDepth - 1
                    for i in 0..<min(Self.queueDepth, count) {
                        ring[i] = queued(i)
                        if ring[i].slot >= 0 { ring[i].lanes = memo.prefetch(Int(ring[i].slot)) }
                    }
                    for i in 0..<count {
                        let q = ring[i & mask]
                        if i + Self.queueDepth < count {
                            var next = queued(i + Self.queueDepth)
                            if next.slot >= 0 { next.lanes = memo.prefetch(Int(next.slot)) }
                            ring[i & mask] = next
                        }
                        (first + i).initialize(to: take(q))
                    }
                    initialized = count
                }
            }
            let counts = UnsafeMutablePointer<Int32>.allocate(capacity: max(newStarts.count, 1))
            defer { counts.deallocate() }
            if !newStarts.isEmpty {
                newStarts.withUnsafeBufferPointer { starts in
                    newEnds.withUnsafeBufferPointer { ends in
                        encoding.tokenCounts(
                            ofPieces: starts.baseAddress!, ends.baseAddress!, count: starts.count, in: b, into: counts)
                    }
                }
                // The memo keeps no placeholder past this call.
                for k in newSlots.indices {
                    if newSlots[k] >= 0 {
                        memo.resolve(Int(newSlots[k]), pending: k, tokens: counts[k], stem: newStems[k])
                    } else {
                        memo.storeLong(base, Int(newStarts[k]), Int(newEnds[k] - newStarts[k]), tokens: counts[k])
                    }
                }
            }
            // One pass over the pieces: placeholder counts, the total, protected spans, whitespace.
            let sorted = spans.sorted { $0.lowerBound < $1.lowerBound }
            var k = 0
            out.withUnsafeMutableBufferPointer { pieces in
                for i in pieces.indices {
                    if pieces[i].tokens < 0 { pieces[i].tokens = counts[Int(-pieces[i].tokens) - 1] }
                    sum += Int(pieces[i].tokens)
                    if k < sorted.count {
                        let s = Int(pieces[i].start)
                        while k < sorted.count && sorted[k].upperBound <= s { k += 1 }
                        if k < sorted.count && sorted[k].lowerBound < Int(pieces[i].end) {
                            pieces[i].flags.insert(.protected)
                        }
                    }
                    normalizer?.visit(i, pieces, base, n)
                }
            }
            return out
        }
    }

    /// A piece found by the pre-tokenizer, waiting for its memo line (``pieces(_:protecting:normalizing:total:)``).
    struct QueuedPiece {
        var start: Int32
        var end: Int32
        /// The memo slot, -1 for a piece too long for the memo.
        var slot: Int32 = -1
        var key0: UInt64 = 0
        var key1: UInt64 = 0
        /// The memo set's lanes whose tags matched when its line was asked for (``PieceMemo/prefetch(_:)``).
        var lanes: UInt64 = 0
    }

    /// How many pieces ahead of its use a memo line is asked for (a power of two).
    static let queueDepth = 8

    /// From how many bytes a text's pieces ask for the memo's tags all at once (``PieceMemo/prefetchTags()``): a
    /// 2 KiB text has ~500 pieces, which read about as many of the 512 lines of tags.
    static let prefetchTagsMinimum = 2048

    /// ``classify(_:_:_:_:tokens:)`` plus what this compressor's word lists say of a word (``Flags/frequent``,
    /// ``Flags/numberWord``): looked up once per piece here (and kept in ``PieceMemo``), not on every step that asks.
    @inline(__always)
    func classifyWithWords(_ base: UnsafePointer<UInt8>, _ count: Int, _ s: Int, _ e: Int, tokens t: Int) -> Piece {
        var p = Self.classify(base, count, s, e, tokens: t)
        if p.kind == .word {
            if lexicon.isFrequent(p.hash) { p.flags.insert(.frequent) }
            if Self.numberWords.contains(p.hash) { p.flags.insert(.numberWord) }
        }
        return p
    }

    /// One piece's kind, flags and word hashes, from its bytes `base[s..<e]` (of `count`).
    @inline(__always)
    static func classify(_ base: UnsafePointer<UInt8>, _ count: Int, _ s: Int, _ e: Int, tokens t: Int) -> Piece {
        var p = Piece(start: Int32(s), end: Int32(e), tokens: Int32(t), flags: [], kind: .punct)
        var i = s
        let c0 = base[s]
        if c0 == 0x20 && e - s > 1 && base[s + 1] != 0x20 && base[s + 1] != 0x0A && base[s + 1] != 0x09
            && base[s + 1] != 0x0D
        {
            p.flags.insert(.leadingSpace)
            i += 1
        }
        // Classify by the first non-space byte.
        var hasNewline = false
        var allSpace = false
        if c0 == 0x20 || c0 == 0x0A || c0 == 0x09 || c0 == 0x0D {
            // Whitespace pieces start with whitespace; a word's leading space is followed by more.
            allSpace = true
            for k in s..<e {
                let c = base[k]
                if c == 0x0A { hasNewline = true }
                if c != 0x20 && c != 0x09 && c != 0x0A && c != 0x0D {
                    allSpace = false
                    break
                }
            }
            if !allSpace { hasNewline = false }
        }
        if !allSpace {
            // Punctuation runs may end in line breaks (".\n").
            let last = base[e - 1]
            hasNewline = last == 0x0A || last == 0x0D
        }
        if hasNewline {
            p.kind = .newline
            var k = s
            while k < e && base[k] != 0x0A && base[k] != 0x0D { k += 1 }
            p.breakStart = Int32(allSpace ? s : k)
            p.emitStart = Int32(s)
            p.emitEnd = Int32(e)
        } else if allSpace {
            p.kind = .space
        } else {
            let w = wordStart(base, s, e, leadingSpace: i > s)
            let c = base[w]
            if c >= 0x30 && c <= 0x39 {
                p.kind = .number
                p.hash = numberHash(base, count, s, digitsAt: w)
                p.stem = p.hash
            } else if isWordStart(c) {
                p.kind = .word
                if (c >= 0x41 && c <= 0x5A) || (c >= 0xC3 && c <= 0xC3 && w + 1 < e && base[w + 1] < 0x9F) {
                    p.flags.insert(.capital)
                }
                var we = w
                while we < e && (Self.isWordByte(base[we]) || base[we] == UInt8(ascii: "'")) { we += 1 }
                p.hash = WordHash.of(base + w, we - w)
                // Every stemming rule needs a final s, d or g: other words are their own stem.
                let final = base[we - 1] | 0x20
                p.stem = final == UInt8(ascii: "s") || final == UInt8(ascii: "d") || final == UInt8(ascii: "g")
                    ? WordHash.stem(base + w, we - w) : p.hash
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
        return p
    }

    /// Where the word or number of the piece `base[s..<e]` starts: after its leading space and one punctuation byte
    /// ("(word", "-word", "(1988").
    @inline(__always)
    static func wordStart(_ base: UnsafePointer<UInt8>, _ s: Int, _ e: Int, leadingSpace: Bool) -> Int {
        var w = leadingSpace ? s + 1 : s
        if w < e && !isWordStart(base[w]) && w + 1 < e && isWordStart(base[w + 1]) { w += 1 }
        return w
    }

    /// The hash of the number piece starting at `s` of `base[0..<count]`, its digits at `w` (``wordStart``): o200k
    /// splits digit runs in threes ("2018" is "201" + "8"), so the run's first piece carries the hash of the whole
    /// run (read past the piece), the others 0, and question numbers match.
    @inline(__always)
    static func numberHash(_ base: UnsafePointer<UInt8>, _ count: Int, _ s: Int, digitsAt w: Int) -> UInt64 {
        guard !(s > 0 && base[s - 1] >= 0x30 && base[s - 1] <= 0x39) else { return 0 }
        var we = w
        while we < count && base[we] >= 0x30 && base[we] <= 0x39 { we += 1 }
        return WordHash.of(base + w, we - w)
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

    /// Cuts pieces into sentences and passages and marks protected pieces (the neighbour rules included).
    func segment(_ bytes: [UInt8], _ pieces: inout [Piece], options: CompressionOptions) -> [Sentence] {
        let sentences = segmentCounting(bytes, &pieces, options: options).sentences
        protectNeighbours(&pieces, sentences)
        return sentences
    }

    /// What ``segmentCounting(_:_:options:)`` found besides the sentences, counted on its way over the pieces.
    struct Segmentation {
        var sentences: [Sentence]
        /// Tokens of all pieces (titles' labels dropped).
        var tokens: Int
        /// Whether a header's title label was dropped (``CompressionOptions/shortenHeaders``).
        var shortened: Bool
        /// Each line-break piece: the sentence it is booked to (the last one before it, or the first) and its
        /// tokens.
        var lineBreaks: [(sentence: Int32, tokens: Int32)]
    }

    func segmentCounting(_ bytes: [UInt8], _ pieces: inout [Piece], options: CompressionOptions) -> Segmentation {
        var lineBreaks: [(sentence: Int32, tokens: Int32)] = []
        var tokens = 0
        var shortened = false
        var sentences: [Sentence] = []
        sentences.reserveCapacity(pieces.count / 6 + 2)
        let hasBlankLines = Self.hasBlankLine(bytes)
        var passage: Int32 = 0
        var current = Sentence(first: 0, end: 0, passage: 0)
        var inFence = false
        var inSection = false
        var pendingTerminal = false
        var lineStart = true
        var protectRest = false  // fenced code / preserved section running
        pieces.withUnsafeMutableBufferPointer { pieces in
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
                let p = pieces[i]
                let s = Int(p.start)
                if p.kind == .newline {
                    close(at: i)
                    pieces[i].sentence = Int32(sentences.count - 1 < 0 ? 0 : sentences.count - 1)
                    lineBreaks.append((pieces[i].sentence, p.tokens))
                    tokens += Int(p.tokens)
                    let newlines = Self.countNewlines(base, s, Int(p.end))
                    lineStart = true
                    pendingTerminal = false
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
                            if options.shortenHeaders, let t = Self.dropTitleLabel(bytes, pieces, from: i, to: j) {
                                // The title's first word without its space may take other tokens.
                                let from = Int(pieces[t].start) + 1
                                let word = UnsafeBufferPointer(rebasing: b[from..<Int(pieces[t].end)])
                                pieces[t].tokens = Int32(count(word))
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
                    || p.flags.contains(.numberWord)
                if protect && !protectRest && p.kind == .word && Int32(i) == current.first {
                    // A sentence-initial common word ("The", "In", "It") is protected only before another
                    // capitalised word ("The Beatles").
                    let nextCapital = i + 1 < n && pieces[i + 1].flags.contains(.capital)
                    if !nextCapital && p.flags.contains(.frequent) { protect = false }
                }
                if protect { pieces[i].flags.insert(.protected) }
                if protectRest { current.mustKeep = true }
                // (pieces[i].sentence is set below, once the sentences are final: they tile the non-newline pieces)
                if p.kind == .word || p.kind == .number { current.words += 1 }
                i += 1
            }
            close(at: n)
        }
        }
        pieces.withUnsafeMutableBufferPointer { pieces in
            // Piece -> sentence indices (close() appends in order; recompute to be exact), token totals. Sentences
            // hold every piece but the line breaks (counted above). The protection that depends on the neighbours
            // (``protectNeighbours(_:_:)``) is left to the steps that read it.
            var anyFlags: UInt16 = 0
            for (si, s) in sentences.enumerated() {
                var t: Int32 = 0
                for j in Int(s.first)..<Int(s.end) {
                    pieces[j].sentence = Int32(si)
                    anyFlags |= pieces[j].flags.rawValue
                    t += pieces[j].tokens
                }
                sentences[si].tokens = t
                tokens += Int(t)
            }
            shortened = anyFlags & Flags.dropped.rawValue != 0
            // Newline pieces belong to the preceding sentence for bookkeeping; they are emitted structurally. (With
            // no sentence there are only line breaks, whose flags no protection step changes.)
            if sentences.isEmpty { sentences.append(Sentence(first: 0, end: Int32(pieces.count), passage: 0)) }
        }
        return Segmentation(sentences: sentences, tokens: tokens, shortened: shortened, lineBreaks: lineBreaks)
    }

    /// The protection that depends on a piece's neighbours (``protectAround(_:_:)``) added to the pieces of
    /// `sentences` (line breaks are in none, and no rule changes them). Only pruning and the quality of a compression
    /// without a question read it, so ``compress(_:question:options:)`` runs it only when one of them does: a
    /// question whose passages fit the budget never needs it (its ranking reads the protection segmentation gives: a
    /// "who" question's names are the words protected there). The rules read and set only kinds
    /// and flags, on a compact copy (`meta`, 4 bytes a piece: flags, kind, length 1 / <= 2), which stays in the
    /// first-level cache where the pieces (40 bytes each) do not; a flag set since segmentation (``Flags/term``) is
    /// kept, and read by no rule.
    func protectNeighbours(_ pieces: inout [Piece], _ sentences: [Sentence]) {
        let n = pieces.count
        guard n > 2 else { return }
        let meta = UnsafeMutablePointer<UInt32>.allocate(capacity: n)
        defer { meta.deallocate() }
        pieces.withUnsafeMutableBufferPointer { pieces in
            for j in 0..<n { meta[j] = Meta.pack(pieces[j]) }
            protectAround(meta, n)
            for s in sentences {
                for j in Int(s.first)..<Int(s.end) {
                    pieces[j].flags = Flags(rawValue: UInt16(truncatingIfNeeded: meta[j]))
                }
            }
        }
    }

    /// A piece's kind and flags packed in 32 bits for ``protectAround(_:_:_:)``.
    enum Meta {
        static let kindShift: UInt32 = 16
        static let oneByte: UInt32 = 1 << 20
        static let short: UInt32 = 1 << 21
        static let protected = UInt32(Flags.protected.rawValue)
        static let leadingSpace = UInt32(Flags.leadingSpace.rawValue)
        static let terminal = UInt32(Flags.terminal.rawValue)
        static let frequent = UInt32(Flags.frequent.rawValue)

        @inline(__always)
        static func pack(_ p: Piece) -> UInt32 {
            let length = p.end - p.start
            return UInt32(p.flags.rawValue) | UInt32(p.kind.rawValue) &<< kindShift
                | (length == 1 ? oneByte : 0) | (length <= 2 ? short : 0)
        }
        @inline(__always)
        static func kind(_ m: UInt32) -> UInt32 { (m &>> kindShift) & 7 }
        /// A protected word or number.
        @inline(__always)
        static func solid(_ m: UInt32) -> Bool {
            m & protected != 0 && (kind(m) == UInt32(Kind.word.rawValue) || kind(m) == UInt32(Kind.number.rawValue))
        }
        /// Can be part of a word the tokenizer split: a word, a number, one inner - ' / or . byte.
        @inline(__always)
        static func glueable(_ m: UInt32) -> Bool {
            let k = kind(m)
            return k == UInt32(Kind.word.rawValue) || k == UInt32(Kind.number.rawValue)
                || (k == UInt32(Kind.punct.rawValue) && m & oneByte != 0 && m & terminal == 0)
        }
    }

    /// Protection that depends on the neighbours, on the packed pieces `meta[0..<n]` (n > 2): runs of up to two
    /// function words between protected words ("Bank of America", "Taxpayers in the United States"), punctuation
    /// glued to a number ("20%", "$5"), a word the tokenizer split when a part of it is protected, a lone space
    /// before a protected piece, punctuation between protected words ("May 18, 2018"). In this order: each pass
    /// sees what the passes before it protected.
    func protectAround(_ meta: UnsafeMutablePointer<UInt32>, _ n: Int) {
        Self.protectAroundBlocks(meta, n)
    }

    /// ``protectAround(_:_:)``, eight pieces at a time (SIMD): the same five passes in the same order, each piece's
    /// bit computed from the same neighbours as ``protectAroundScalar(_:_:)`` (the reference, which the tests
    /// compare it with on random inputs), so the result is the same bit for bit. The two passes that look for runs
    /// (function words, split words) test eight pieces at once whether any could start or continue one, and go
    /// piece by piece only through the (few) blocks that do.
    static func protectAroundBlocks(_ meta: UnsafeMutablePointer<UInt32>, _ n: Int) {
        guard n > 2 else { return }
        typealias V = SIMD8<UInt32>
        let raw = UnsafeMutableRawPointer(meta)
        @inline(__always) func load(_ i: Int) -> V { raw.loadUnaligned(fromByteOffset: i &* 4, as: V.self) }
        @inline(__always) func store(_ v: V, _ i: Int) { raw.storeBytes(of: v, toByteOffset: i &* 4, as: V.self) }
        let word = UInt32(Kind.word.rawValue) &<< Meta.kindShift
        let number = UInt32(Kind.number.rawValue) &<< Meta.kindShift
        let punct = UInt32(Kind.punct.rawValue) &<< Meta.kindShift
        let space = UInt32(Kind.space.rawValue) &<< Meta.kindShift
        let newline = UInt32(Kind.newline.rawValue) &<< Meta.kindShift
        let kindBits = UInt32(7) &<< Meta.kindShift
        let prot = Meta.protected
        let zero = V(repeating: 0)
        let kinds = V(repeating: kindBits)
        let protV = V(repeating: prot)
        @inline(__always) func isKind(_ v: V, _ k: UInt32) -> SIMDMask<V.MaskStorage> { v & kinds .== V(repeating: k) }
        @inline(__always) func has(_ v: V, _ bits: UInt32) -> SIMDMask<V.MaskStorage> {
            v & V(repeating: bits) .!= zero
        }
        @inline(__always) func solid(_ m: UInt32) -> Bool { Meta.solid(m) }

        // 1. Function-word runs ("Bank of America"): a start is a frequent unprotected word after a solid piece.
        // A block with no such pair has no start. (The pieces before it are read as they are now, which may be
        // protected where the reference read them before a run protected them: that only makes a block go piece by
        // piece when it need not.) Its last piece is the next block's `before`, as the reference reads it.
        let startMask = kindBits | prot | Meta.frequent
        let startValue = word | Meta.frequent
        @inline(__always) func solid(_ v: V) -> SIMDMask<V.MaskStorage> {
            has(v, prot) .& (isKind(v, word) .| isKind(v, number))
        }
        @inline(__always) func startLike(_ v: V) -> SIMDMask<V.MaskStorage> {
            v & V(repeating: startMask) .== V(repeating: startValue)
        }
        var before = meta[0]
        var j = 1
        while j < n - 1 {
            // A start that protects anything: a solid piece follows after one or two such words.
            if j + 10 <= n
                && !any(
                    startLike(load(j)) .& solid(load(j - 1))
                        .& (solid(load(j + 1)) .| (startLike(load(j + 1)) .& solid(load(j + 2)))))
            {
                before = meta[j + 7]
                j += 8
                continue
            }
            let blockEnd = min(j + 8, n - 1)
            while j < blockEnd {
                let m = meta[j]
                let start = m & startMask == startValue && solid(before)
                before = m
                if start {
                    var k = j
                    while k < n && k - j < 2 && Meta.kind(meta[k]) == UInt32(Kind.word.rawValue)
                        && meta[k] & prot == 0 && meta[k] & Meta.frequent != 0
                    {
                        k += 1
                    }
                    if k > j && k < n && solid(meta[k]) {
                        for i in j..<k { meta[i] |= prot }
                    }
                }
                j += 1
            }
        }
        // 2. Punctuation glued to a number ("20%", "$5", "3.5"): after a number with no space between, or before
        // one with no space between when it is short.
        @inline(__always) func glued(_ l: UInt32, _ m: UInt32, _ r: UInt32) -> Bool {
            Meta.kind(m) == UInt32(Kind.punct.rawValue)
                && ((m & Meta.leadingSpace == 0 && Meta.kind(l) == UInt32(Kind.number.rawValue))
                    || (Meta.kind(r) == UInt32(Kind.number.rawValue) && r & Meta.leadingSpace == 0
                        && m & Meta.short != 0))
        }
        if glued(0, meta[0], meta[1]) { meta[0] |= prot }
        j = 1
        while j + 9 <= n {
            let l = load(j - 1)
            let m = load(j)
            let r = load(j + 1)
            let hit = isKind(m, punct)
                .& ((.!has(m, Meta.leadingSpace) .& isKind(l, number))
                    .| (isKind(r, number) .& .!has(r, Meta.leadingSpace) .& has(m, Meta.short)))
            store(m.replacing(with: m | protV, where: hit), j)
            j += 8
        }
        while j < n {
            if glued(meta[j - 1], meta[j], j + 1 < n ? meta[j + 1] : 0) { meta[j] |= prot }
            j += 1
        }
        // 3. Split words ("1940s", "macOS"): a run of glueable pieces with no space between is protected whole (but
        // for its trailing punctuation) when a part is solid. A block where no piece joins the one before it, with
        // no run open at its start, cuts only runs of one piece, which change nothing.
        @inline(__always) func glueable(_ v: V) -> SIMDMask<V.MaskStorage> {
            isKind(v, word) .| isKind(v, number)
                .| (isKind(v, punct) .& has(v, Meta.oneByte) .& .!has(v, Meta.terminal))
        }
        // A run whose pieces after its first are all punctuation is cut back to its first piece, which changes
        // nothing: a block with no run open at its start and no piece but punctuation joining the one before it
        // changes nothing; the next run starts at its last cut.
        let lanes = V(1, 2, 4, 8, 16, 32, 64, 128)
        var r = 0
        var gluedBefore = Meta.glueable(meta[0])
        var e = 1
        while e <= n {
            if e + 8 <= n && r == e - 1 {
                let m = load(e)
                let joins = glueable(m) .& glueable(load(e - 1)) .& .!has(m, Meta.leadingSpace)
                if !any(joins .& .!isKind(m, punct)) {
                    let cuts = zero.replacing(with: lanes, where: .!joins).wrappedSum()
                    if cuts != 0 { r = e + 31 - cuts.leadingZeroBitCount }
                    gluedBefore = Meta.glueable(meta[e + 7])
                    e += 8
                    continue
                }
            }
            let blockEnd = min(e + 8, n + 1)
            while e < blockEnd {
                let g = e < n && Meta.glueable(meta[e])
                let joins = g && gluedBefore && meta[e] & Meta.leadingSpace == 0
                gluedBefore = g
                if !joins {
                    if e - r > 1 {
                        var last = e - 1
                        while last > r && Meta.kind(meta[last]) == UInt32(Kind.punct.rawValue) { last -= 1 }
                        if last > r && (r...last).contains(where: { Meta.solid(meta[$0]) }) {
                            for i in r...last { meta[i] |= prot }
                        }
                    }
                    r = e
                }
                e += 1
            }
        }
        // 4. A lone space piece before a protected piece (" 18" is " " + "18"); the piece after is read before
        // the pass reaches it, as in the reference.
        j = 0
        while j + 9 <= n {
            let m = load(j)
            let after = load(j + 1)
            store(m.replacing(with: m | protV, where: isKind(m, space) .& has(after, prot)), j)
            j += 8
        }
        while j < n - 1 {
            if Meta.kind(meta[j]) == UInt32(Kind.space.rawValue) && meta[j + 1] & prot != 0 { meta[j] |= prot }
            j += 1
        }
        // 5. Punctuation between protected words ("May 18, 2018"); what this pass protects is punctuation, which it
        // does not accept as a neighbour, so reading a neighbour before or after the pass changed it is the same.
        @inline(__always) func between(_ l: UInt32, _ m: UInt32, _ r: UInt32) -> Bool {
            let lk = Meta.kind(l)
            let rk = Meta.kind(r)
            return Meta.kind(m) == UInt32(Kind.punct.rawValue) && l & prot != 0 && r & prot != 0
                && lk != UInt32(Kind.newline.rawValue) && rk != UInt32(Kind.newline.rawValue)
                && lk != UInt32(Kind.punct.rawValue) && rk != UInt32(Kind.punct.rawValue)
        }
        j = 1
        while j + 9 <= n {
            let l = load(j - 1)
            let m = load(j)
            let r = load(j + 1)
            let hit = isKind(m, punct) .& has(l, prot) .& has(r, prot) .& .!isKind(l, newline)
                .& .!isKind(r, newline) .& .!isKind(l, punct) .& .!isKind(r, punct)
            store(m.replacing(with: m | protV, where: hit), j)
            j += 8
        }
        while j < n - 1 {
            if between(meta[j - 1], meta[j], meta[j + 1]) { meta[j] |= prot }
            j += 1
        }
    }

    /// The reference implementation of ``protectAround(_:_:)``, one piece at a time.
    func protectAroundScalar(_ meta: UnsafeMutablePointer<UInt32>, _ n: Int) {
        let word = UInt32(Kind.word.rawValue)
        let number = UInt32(Kind.number.rawValue)
        let punct = UInt32(Kind.punct.rawValue)
        let space = UInt32(Kind.space.rawValue)
        let newline = UInt32(Kind.newline.rawValue)
        let prot = Meta.protected
        // Function-word runs. Only a frequent unprotected word after a solid piece starts one (a run's words are
        // frequent), rarely: that test is one mask compare and a flag, and the run is read from memory only then.
        // Testing every piece instead of jumping over a run tested changes nothing: the pieces of a run that was
        // protected are protected, those of one that was not follow an unprotected word.
        let kindBits = UInt32(7) &<< Meta.kindShift
        let startMask = kindBits | prot | Meta.frequent
        let startValue = word &<< Meta.kindShift | Meta.frequent
        var before = meta[0]
        for j in 1..<(n - 1) {
            let m = meta[j]
            let start = m & startMask == startValue && Meta.solid(before)
            before = m
            guard start else { continue }
            var k = j
            while k < n && k - j < 2 && Meta.kind(meta[k]) == word && meta[k] & prot == 0
                && meta[k] & Meta.frequent != 0
            {
                k += 1
            }
            if k > j && k < n && Meta.solid(meta[k]) {
                for i in j..<k { meta[i] |= prot }
            }
        }
        // The three passes of neighbour rules (this one and the last two) are branch-free: each piece's bit is
        // computed from it and its neighbours (the kinds are random enough that branches on them mispredict), and
        // setting a bit that is already set changes nothing. The first and last piece: neighbours outside are 0
        // (kind 0 is a word, with no flags), which no rule below accepts where it needs a neighbour.
        @inline(__always) func bit(_ b: Bool) -> UInt32 { b ? 1 : 0 }
        @inline(__always) func isKind(_ m: UInt32, _ k: UInt32) -> UInt32 { bit(Meta.kind(m) == k) }
        @inline(__always) func at(_ i: Int) -> UInt32 { i >= 0 && i < n ? meta[i] : 0 }
        @inline(__always) func gluedPunct(_ a: UInt32, _ m: UInt32, _ b: UInt32) -> UInt32 {
            let glued = bit(m & Meta.leadingSpace == 0) & isKind(a, number)
            let before = isKind(b, number) & bit(b & Meta.leadingSpace == 0) & bit(m & Meta.short != 0)
            return isKind(m, punct) & (glued | before)
        }
        // (The window `left`, `mid`, `right` slides in registers: reading back a piece the loop has just written
        // would chain every iteration to the one before through memory; the rule reads no bit the pass writes.)
        var left: UInt32 = 0
        var mid = meta[0]
        for j in 0..<n {
            let right = at(j + 1)
            meta[j] = mid | prot &* gluedPunct(left, mid, right)
            left = mid
            mid = right
        }
        // A word the tokenizer split is protected whole when a part of it is: "1940s", "12th", "6ft", "macOS",
        // "mid-1988" (runs of word, number and inner - ' / . pieces with no space between).
        // A run is cut before every piece that does not join the one before it (both glueable, no space between);
        // nearly every run is one piece long, so only a cut after a longer run does any work.
        var r = 0
        var glued = Meta.glueable(meta[0])
        for e in 1...n {
            let g = e < n && Meta.glueable(meta[e])
            let joins = g && glued && meta[e] & Meta.leadingSpace == 0
            glued = g
            guard !joins else { continue }
            if e - r > 1 {
                var last = e - 1
                while last > r && Meta.kind(meta[last]) == punct { last -= 1 }
                if last > r && (r...last).contains(where: { Meta.solid(meta[$0]) }) {
                    for i in r...last { meta[i] |= prot }
                }
            }
            r = e
        }
        // A lone space piece before a number (" 18" is " " + "18" in o200k) goes with what follows it. (In order:
        // the piece after is read before this pass reaches it.)
        for j in 0..<(n - 1) {
            meta[j] |= prot &* (isKind(meta[j], space) & bit(meta[j + 1] & prot != 0))
        }
        // Punctuation between protected words ("May 18, 2018", "Tulsa, Oklahoma"). (A piece this pass protects is
        // punctuation, which no later piece of the pass accepts as its neighbour: its left neighbour is read as it
        // was before the pass.)
        left = meta[0]
        mid = meta[1]
        for j in 1..<(n - 1) {
            let right = meta[j + 1]
            let words = (1 &- isKind(left, newline)) & (1 &- isKind(right, newline)) & (1 &- isKind(left, punct))
                & (1 &- isKind(right, punct))
            meta[j] = mid | prot &* (isKind(mid, punct) & bit(left & prot != 0) & bit(right & prot != 0) & words)
            left = mid
            mid = right
        }
    }

    // Lossy steps shorten `Document [i](Title: t)` headers to `Document [i](t)` (`CompressionOptions.shortenHeaders`,
    // profile key `shorten_headers`): the label repeats on every passage and tells the reader nothing the
    // parenthesis does not (2 tokens a passage).

    /// In the header pieces `from..<to`: the `Title` `:` pieces right after `(` are dropped (no tokens), and the
    /// space in front of the title goes with them.
    /// Returns the piece that lost its leading space, if any.
    static func dropTitleLabel(_ b: [UInt8], _ pieces: UnsafeMutableBufferPointer<Piece>, from: Int, to: Int) -> Int? {
        var j = from
        while j + 2 < to {
            let p = pieces[j]
            if p.kind == .word && p.end - p.start == 5 && !p.flags.contains(.leadingSpace)
                && hasPrefix(b, Int(p.start), "Title") && j > from
                && Int(pieces[j - 1].end) >= 2 && hasPrefix(b, Int(pieces[j - 1].end) - 2, "](")
                && pieces[j + 1].end - pieces[j + 1].start == 1 && b[Int(pieces[j + 1].start)] == UInt8(ascii: ":")
            {
                for k in j...(j + 1) {
                    pieces[k].flags.remove(.protected)
                    pieces[k].flags.insert(.dropped)
                    pieces[k].tokens = 0
                }
                var t = j + 2
                if pieces[t].kind == .space {
                    // "Title:  t" (a run of spaces is its own piece before the last one): the run goes too.
                    pieces[t].flags.remove(.protected)
                    pieces[t].flags.insert(.dropped)
                    pieces[t].tokens = 0
                    t += 1
                }
                if t < to && pieces[t].flags.contains(.leadingSpace) && pieces[t].kind != .newline {
                    pieces[t].flags.insert(.noSpace)
                    return t
                }
                return nil
            }
            j += 1
        }
        return nil
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
        guard s < n, let q = memchr(base + s, 0x0A, n - s) else { return n }
        return base.distance(to: q.assumingMemoryBound(to: UInt8.self))
    }

    /// Whether `b` has two line breaks in a row ("\n\n"), found with memchr.
    static func hasBlankLine(_ b: [UInt8]) -> Bool {
        b.withUnsafeBufferPointer { buf in
            guard let base = buf.baseAddress else { return false }
            var i = 0
            let n = buf.count
            while i < n, let q = memchr(base + i, 0x0A, n - i) {
                let k = base.distance(to: q.assumingMemoryBound(to: UInt8.self))
                if k + 1 < n && base[k + 1] == 0x0A { return true }
                i = k + 1
            }
            return false
        }
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

    /// Spelled-out numbers and ordinals, protected like digits.
    static let numberWords = WordSet(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty", "thirty",
         "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "hundred", "thousand", "million", "billion",
         "trillion", "dozen", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
         "tenth", "eleventh", "twelfth", "twentieth", "hundredth", "once", "twice", "half"])

    static let abbreviations = WordSet(
        ["mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "no", "mt", "inc", "ltd", "co", "gen", "gov", "sen", "rep",
         "prof", "fig", "vol", "ca", "approx", "e.g", "i.e", "u.s", "etc", "jan", "feb", "aug", "sept", "oct", "nov",
         "dec"])

    /// A "." after a single capital letter (an initial) or a common abbreviation does not end a sentence.
    static func isAbbreviation(_ base: UnsafePointer<UInt8>, _ pieces: UnsafeMutableBufferPointer<Piece>, _ i: Int) -> Bool {
        guard i > 0, base[Int(pieces[i].end) - 1] == UInt8(ascii: ".") else { return false }
        let prev = pieces[i - 1]
        guard prev.kind == .word else { return false }
        var s = Int(prev.start)
        if prev.flags.contains(.leadingSpace) { s += 1 }
        let len = Int(prev.end) - s
        if len == 1 && base[s] >= 0x41 && base[s] <= 0x5A { return true }
        return abbreviations.contains(prev.hash)
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

    /// The kind of answer a question asks for (``answerType(_:)``).
    enum AnswerType { case none, name, number }

    /// What kind of answer the question asks for, from its wh-word.
    static func answerType(_ question: String?) -> AnswerType {
        guard var q = question else { return .none }
        return q.withUTF8 { b -> AnswerType in
            // Lowercased ASCII words of the first dozen.
            var words: [UInt64] = []
            var i = 0
            while i < b.count && words.count < 12 {
                while i < b.count && !isLetter(b[i]) { i += 1 }
                var e = i
                while e < b.count && (isLetter(b[e]) || b[e] == UInt8(ascii: "'")) { e += 1 }
                if e > i { words.append(WordHash.of(b.baseAddress! + i, e - i)) }
                i = e
            }
            guard let first = words.firstIndex(where: { Self.whWords[$0] != nil }) else { return .none }
            let next = first + 1 < words.count ? words[first + 1] : 0
            switch Self.whWords[words[first]]! {
            case 0: return .name
            case 1: return .number
            case 2: return Self.howNumber.contains(next) ? .number : .none
            default: return Self.whatNumber.contains(next) ? .number : .none
            }
        }
    }

    @inline(__always)
    static func isLetter(_ c: UInt8) -> Bool { (c >= 0x61 && c <= 0x7A) || (c >= 0x41 && c <= 0x5A) }

    static let whWords: [UInt64: Int] = {
        var d: [UInt64: Int] = [:]
        for w in ["who", "whom", "whose", "where"] { d[WordHash.of(w)] = 0 }
        d[WordHash.of("when")] = 1
        d[WordHash.of("how")] = 2
        for w in ["what", "which"] { d[WordHash.of(w)] = 3 }
        return d
    }()
    static let howNumber = Set(["many", "much", "old", "long", "tall", "far", "big"].map { WordHash.of($0) })
    static let whatNumber = Set(["year", "date", "time", "day", "age", "percentage"].map { WordHash.of($0) })

    /// Scores sentences by BM25 against the question terms; returns the term weights, the best sentence score, the
    /// passages' scores and the indices of the pieces it marked ``Flags/term`` (in order).
    func score(_ sentences: inout [Sentence], _ pieces: inout [Piece], terms: [UInt64], answerType: AnswerType = .none)
        -> ([Double], Double, [Double], [Int32])
    {
        var termPieces: [Int32] = []
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
        var termMask: UInt64 = 0
        for t in terms { termMask |= 1 << (t & 63) }
        pieces.withUnsafeMutableBufferPointer { pieces in
            for j in pieces.indices where pieces[j].kind == .word || pieces[j].kind == .number {
                let st = pieces[j].stem != 0 ? pieces[j].stem : pieces[j].hash
                var t = -1
                if st != 0 && termMask & (1 << (st & 63)) != 0 {
                    for k in 0..<nt where terms[k] == st {
                        t = k
                        break
                    }
                }
                guard t >= 0 else {
                    // Something of the kind the question asks for (a name for "who": a word segmentation protected,
                    // capitalised, quoted or in a header; a number for "when").
                    switch answerType {
                    case .name where pieces[j].kind == .word && pieces[j].flags.contains(.protected): candidate[Int(pieces[j].sentence)] = true
                    case .number where pieces[j].kind == .number: candidate[Int(pieces[j].sentence)] = true
                    default: break
                    }
                    continue
                }
                pieces[j].flags.insert(.term)
                termPieces.append(Int32(truncatingIfNeeded: j))
                let si = Int(pieces[j].sentence)
                tf[si * nt + t] &+= 1
                ptf[Int(sentences[si].passage) * nt + t] &+= 1
                if (t == lastTerm + 1 || t == lastTerm - 1) && j - lastPos <= 3 { phrase[si] += 1 }
                lastTerm = t
                lastPos = j
            }
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
        var headerOwn = 0.0
        var lead = true
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
            if sentences[si].passage != prevPassage {
                prevOwn = 0
                headerOwn = 0
                lead = true
            }
            sentences[si].score = sc + Self.kPassageW * pscore[Int(sentences[si].passage)] + Self.kCarry * prevOwn
            if sentences[si].isHeader {
                headerOwn = sc
            } else {
                if lead { sentences[si].score += Self.kHead * headerOwn }
                lead = false
                prevOwn = sc
            }
            prevPassage = sentences[si].passage
            best = max(best, sc)
        }
        return (weights, best, pscore, termPieces)
    }

    // MARK: Selection

    /// Keeps sentences best first while they fit in `budget` tokens (must-keep ones first, whatever they cost);
    /// returns the tokens used.
    func select(_ sentences: inout [Sentence], passageScores: [Double], breaks: [Int] = [], budget: Int) -> Int {
        var used = 0
        // Per passage (passages are numbered from 0): opened yet, its header sentence (-1: none).
        var passages = max(passageScores.count, breaks.count)
        for s in sentences { passages = max(passages, Int(s.passage) + 1) }
        var opened = [Bool](repeating: false, count: passages)
        var headerOf = [Int](repeating: -1, count: passages)
        for (i, s) in sentences.enumerated() where s.isHeader { headerOf[Int(s.passage)] = i }
        /// What opening passage `p` costs besides its sentences: its header and its line breaks.
        func openCost(_ p: Int32) -> Int {
            var c = Int(p) < breaks.count ? breaks[Int(p)] : 0
            let h = headerOf[Int(p)]
            if h >= 0 && !sentences[h].kept { c += Int(sentences[h].tokens) }
            return c
        }
        func take(_ i: Int) {
            guard !sentences[i].kept else { return }
            sentences[i].kept = true
            used += Int(sentences[i].tokens)
            let p = sentences[i].passage
            if !opened[Int(p)] {
                opened[Int(p)] = true
                used += Int(p) < breaks.count ? breaks[Int(p)] : 0
                let h = headerOf[Int(p)]
                if h >= 0 && !sentences[h].kept {
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
            for (i, s) in sentences.enumerated() where !s.kept && !s.isHeader {
                cost[Int(s.passage)] += Int(s.tokens)
                members[Int(s.passage)].append(i)
            }
            let order = passageScores.indices.sorted {
                passageScores[$0] > passageScores[$1] || (passageScores[$0] == passageScores[$1] && $0 < $1)
            }
            let cap = Int(Double(budget) * Self.kWhole)
            for p in order where passageScores[p] > 0 && !members[p].isEmpty {
                if used + cost[p] + (opened[p] ? 0 : openCost(Int32(p))) <= cap {
                    for i in members[p] where !sentences[i].kept { take(i) }
                }
            }
        }
        let order = sentences.indices.filter { !sentences[$0].isHeader && !sentences[$0].kept }
            .sorted { sentences[$0].score > sentences[$1].score || (sentences[$0].score == sentences[$1].score && $0 < $1) }
        if Self.kCover > 0 {
            // Coverage: the best sentence of every passage not kept yet, best first, before seconds.
            for i in order where !sentences[i].kept && !opened[Int(sentences[i].passage)] && sentences[i].own > 0 {
                let cost = Int(sentences[i].tokens) + openCost(sentences[i].passage)
                if used + cost <= budget { take(i) }
            }
        }
        for i in order where !sentences[i].kept {
            let p = sentences[i].passage
            let cost = Int(sentences[i].tokens) + (opened[Int(p)] ? 0 : openCost(p))
            if used + cost <= budget { take(i) }
        }
        return used
    }

    // MARK: Sentence dropping (no question)

    /// Without a question: extra information for the pieces of a passage's lead sentence (the sentence that
    /// introduces its subject), when the text has several passages.
    func sentenceBonus(_ sentences: [Sentence]) -> [Double] {
        guard Self.kLead > 0, let last = sentences.last, last.passage > 1 else { return [] }
        var bonus = [Double](repeating: 0, count: sentences.count)
        var prev: Int32 = -1
        for si in sentences.indices where !sentences[si].isHeader {
            if sentences[si].passage != prev { bonus[si] = Self.kLead }
            prev = sentences[si].passage
        }
        return bonus
    }

    /// Without a question to rank by: unkeeps whole sentences (never must-keep ones or headers), the least
    /// information per kept token first, until `toDrop` tokens are gone; a passage left with no sentence loses its
    /// header and line break too. Returns the tokens freed.
    func dropSentences(_ sentences: inout [Sentence], _ pieces: inout [Piece], toDrop: Int) -> Int {
        guard toDrop > 0 else { return 0 }
        let ns = sentences.count
        var info = [Double](repeating: 0, count: ns)
        var kept = [Int](repeating: 0, count: ns)
        var passageCount = 0
        for s in sentences { passageCount = max(passageCount, Int(s.passage) + 1) }
        var breaks = [Int](repeating: 0, count: passageCount)
        var headerOf = [Int](repeating: -1, count: passageCount)
        var alive = [Int](repeating: 0, count: passageCount)
        for j in pieces.indices {
            let si = Int(pieces[j].sentence)
            guard si < ns else { continue }
            if pieces[j].kind == .newline {
                breaks[Int(sentences[si].passage)] += Int(pieces[j].tokens)
                continue
            }
            guard j >= Int(sentences[si].first) && j < Int(sentences[si].end), !pieces[j].flags.contains(.dropped)
            else { continue }
            kept[si] += Int(pieces[j].tokens)
            switch pieces[j].kind {
            case .word:
                if pieces[j].zipf10 == Piece.unknown { pieces[j].zipf10 = lexicon.zipf10(pieces[j].hash) }
                info[si] += pieces[j].flags.contains(.repeated) ? Self.kCapRep : pieces[j].information
            case .number: info[si] += 6
            default: break
            }
        }
        var order: [Int] = []
        for si in 0..<ns {
            let p = Int(sentences[si].passage)
            if sentences[si].isHeader {
                headerOf[p] = si
            } else if sentences[si].kept {
                alive[p] += 1
                if !sentences[si].mustKeep && kept[si] > 0 { order.append(si) }
            }
        }
        let density = order.map { info[$0] / Double(kept[$0]) }
        let sorted = order.indices.sorted { density[$0] < density[$1] || (density[$0] == density[$1] && $0 > $1) }
        var freed = 0
        for k in sorted where freed < toDrop {
            let si = order[k]
            sentences[si].kept = false
            freed += kept[si]
            let p = Int(sentences[si].passage)
            alive[p] -= 1
            if alive[p] == 0 {
                freed += breaks[p]
                if headerOf[p] >= 0 && sentences[headerOf[p]].kept {
                    sentences[headerOf[p]].kept = false
                    freed += kept[headerOf[p]]
                }
            }
        }
        return freed
    }

    // MARK: Pruning

    /// Drops the least informative unprotected pieces of kept sentences until `toDrop` tokens are gone (or
    /// nothing droppable is left). Returns whether anything was dropped.
    /// Marks later occurrences of a lowercase word (less informative in context) and of a stand-alone name (it
    /// loses its protection: one intact occurrence is enough).
    func markRepeats(_ pieces: inout [Piece]) {
        let n = pieces.count
        func solid(_ j: Int) -> Bool {
            pieces[j].flags.contains(.protected) && (pieces[j].kind == .word || pieces[j].kind == .number)
        }
        var seenWords = HashSet64(capacity: n)
        var seenNames = HashSet64(capacity: n)
        for j in 0..<n where pieces[j].kind == .word {
            if !pieces[j].flags.contains(.protected) {
                if !seenWords.insert(pieces[j].hash) { pieces[j].flags.insert(.repeated) }
            } else if pieces[j].flags.contains(.capital) {
                let after = j + 1 < n && pieces[j + 1].kind == .space ? j + 2 : j + 1
                let alone = !(j > 0 && solid(j - 1)) && !(after < n && solid(after))
                if alone && !seenNames.insert(pieces[j].hash) {
                    pieces[j].flags.remove(.protected)
                    pieces[j].flags.insert(.repeated)
                }
            }
        }
        // Multi-word names ("Super Bowl LII", "The Divergent Series"): runs of protected pieces within a sentence,
        // with a capitalised word; a later occurrence of the same run loses its protection as a stand-alone name
        // does.
        var j = 0
        while j < n {
            guard solid(j) else {
                j += 1
                continue
            }
            var e = j
            var words = 0
            var capital = false
            var h: UInt64 = 0x9E37_79B9_7F4A_7C15
            while e < n && pieces[e].flags.contains(.protected) && pieces[e].kind != .newline
                && !pieces[e].flags.contains(.terminal) && pieces[e].sentence == pieces[j].sentence
            {
                if pieces[e].kind == .word || pieces[e].kind == .number {
                    words += 1
                    if pieces[e].flags.contains(.capital) { capital = true }
                    h = (h ^ pieces[e].hash) &* 0x0000_0100_0000_01B3
                }
                e += 1
            }
            while e > j && !solid(e - 1) { e -= 1 }
            if words >= 2 && capital && !seenNames.insert(h == 0 ? 1 : h) {
                for m in j..<e {
                    pieces[m].flags.remove(.protected)
                    pieces[m].flags.insert(.repeated)
                }
            }
            j = max(e, j + 1)
        }
    }

    func prune(_ pieces: inout [Piece], _ sentences: [Sentence], toDrop: Int, bonus: [Double] = []) -> Bool {
        markRepeats(&pieces)
        for j in pieces.indices where pieces[j].kind == .word && pieces[j].zipf10 == Piece.unknown {
            pieces[j].zipf10 = lexicon.zipf10(pieces[j].hash)
        }
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
                info = p.information
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
                        ? 6 : next.information
                    info = max(info, nextInfo * Self.kArticle)
                }
            }
            if p.kind == .word && info < 2 && j > 0 && j + 1 < pieces.count && Self.kBridge > 0 {
                // A function word bridging two informative words ("tenderness of meat") goes with them.
                let a = pieces[j - 1]
                let b = pieces[j + 1]
                func weight(_ x: Piece) -> Double {
                    if x.kind == .number || x.flags.contains(.protected) { return 6 }
                    return x.kind == .word ? x.information : 0
                }
                let bridge = min(weight(a), weight(b))
                if bridge >= 3.5 { info = max(info, bridge * Self.kBridge) }
            }
            if p.kind == .word && Self.kUnit > 0 && j > 0 && p.flags.contains(.leadingSpace) {
                // The word after a number is usually its unit or what it counts ("3.99 degrees", "15th century").
                let a = pieces[j - 1]
                let afterNumber = a.kind == .number
                    || (a.kind == .word && !a.flags.contains(.leadingSpace) && j > 1 && pieces[j - 2].kind == .number)
                if afterNumber { info = max(info, 6 * Self.kUnit) }
            }
            if p.kind == .word && Self.kPre > 0 && j + 1 < pieces.count {
                // " 18" is " " + "18" in o200k: look past a lone space piece.
                let next = pieces[j + 1].kind == .space && j + 2 < pieces.count ? j + 2 : j + 1
                if pieces[next].kind == .number { info = max(info, 6 * Self.kPre) }
            }
            if p.tokens > 1 { info /= pow(Double(p.tokens), Self.kTokPow) }
            if !bonus.isEmpty { info += bonus[Int(p.sentence)] }
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

