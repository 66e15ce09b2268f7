import Foundation

/// A BPE encoding byte-exact with OpenAI's tiktoken (`encode_ordinary`: special-token strings such as
/// `<|endoftext|>` are plain text).
///
/// Get one with ``Encoding/o200kBase``, ``Encoding/cl100kBase``, ``Encoding/named(_:)-swift.type.method`` or
/// ``Encoding/forModel(_:)``. The shipped vocabularies are loaded on first use, once per process
/// (thread-safe), and checked against their official SHA-256. Instances are immutable and `Sendable`.
public final class Encoding: Sendable {
    /// The encodings this module ships.
    public enum Name: String, Sendable, CaseIterable, CustomStringConvertible {
        /// gpt-4o, gpt-4.1, gpt-5, o-series.
        case o200kBase = "o200k_base"
        /// gpt-4, gpt-3.5-turbo, text-embedding-3, text-embedding-ada-002.
        case cl100kBase = "cl100k_base"

        /// SHA-256 of the official `.tiktoken` file (the hash tiktoken itself checks).
        public var expectedSHA256: String {
            switch self {
            case .o200kBase: "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
            case .cl100kBase: "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
            }
        }

        /// Special tokens (only used by the decoders: encoding treats their text as ordinary text).
        var specialTokens: [Int: String] {
            switch self {
            case .o200kBase: [199_999: "<|endoftext|>", 200_018: "<|endofprompt|>"]
            case .cl100kBase:
                [
                    100_257: "<|endoftext|>", 100_258: "<|fim_prefix|>", 100_259: "<|fim_middle|>",
                    100_260: "<|fim_suffix|>", 100_276: "<|endofprompt|>",
                ]
            }
        }

        public var description: String { rawValue }
    }

    public let name: Name
    let vocabulary: Vocabulary
    private let specialTokenBytes: [Int: [UInt8]]

    /// Number of mergeable (ordinary) tokens.
    public var mergeableTokenCount: Int { vocabulary.count }

    // MARK: Loading

    /// Parses a `.tiktoken` file's bytes after checking their SHA-256 against `name.expectedSHA256`.
    public init(_ name: Name, vocabularyFile data: [UInt8]) throws(TokenizerError) {
        let digest = SHA256.hexDigest(data)
        guard digest == name.expectedSHA256 else {
            throw TokenizerError(
                code: .vocabularyHashMismatch,
                message: "\(name) vocabulary has SHA-256 \(digest), expected \(name.expectedSHA256)"
            )
        }
        self.name = name
        let parsed = data.withUnsafeBytes { raw in
            Result { () throws(TokenizerError) in try Vocabulary(parsing: raw, name: name.rawValue) }
        }
        self.vocabulary = try parsed.get()
        self.specialTokenBytes = name.specialTokens.mapValues { Array($0.utf8) }
        _ = ScalarClassTable.shared
    }

    /// Loads a `.tiktoken` file (uncompressed) from disk, checking its SHA-256.
    public convenience init(_ name: Name, contentsOf url: URL) throws(TokenizerError) {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw TokenizerError(code: .vocabularyUnreadable, message: "cannot read \(url.path)", cause: error)
        }
        try self.init(name, vocabularyFile: [UInt8](data))
    }

    /// The shipped vocabulary file of `name` (in this module's resource bundle).
    public static func bundledVocabularyURL(_ name: Name) -> URL? {
        Bundle.module.url(forResource: name.rawValue, withExtension: "tiktoken", subdirectory: "Resources")
    }

    private static func loadBundled(_ name: Name) throws(TokenizerError) -> Encoding {
        guard let url = bundledVocabularyURL(name) else {
            throw TokenizerError(
                code: .vocabularyUnreadable, message: "\(name).tiktoken is missing from the Tokenizer resources")
        }
        return try Encoding(name, contentsOf: url)
    }

    private enum Loaded {
        // Static lets are initialized lazily, exactly once, thread-safely.
        static let o200k = Result { () throws(TokenizerError) in try loadBundled(.o200kBase) }
        static let cl100k = Result { () throws(TokenizerError) in try loadBundled(.cl100kBase) }
    }

    /// The shipped encoding `name`, loaded on first use.
    public static func named(_ name: Name) throws(TokenizerError) -> Encoding {
        switch name {
        case .o200kBase: try Loaded.o200k.get()
        case .cl100kBase: try Loaded.cl100k.get()
        }
    }

    /// The shipped encoding called `name` ("o200k_base" or "cl100k_base").
    public static func named(_ name: String) throws(TokenizerError) -> Encoding {
        guard let known = Name(rawValue: name) else {
            throw TokenizerError(
                code: .unknownEncoding,
                message: "unknown encoding '\(name)' (known: \(Name.allCases.map(\.rawValue).joined(separator: ", ")))"
            )
        }
        return try named(known)
    }

    /// o200k_base. Traps if the shipped vocabulary is missing or corrupt (a packaging error); use
    /// ``named(_:)-swift.type.method`` to handle that instead.
    public static var o200kBase: Encoding {
        do { return try named(.o200kBase) } catch { fatalError("\(error)") }
    }

    /// cl100k_base. Traps if the shipped vocabulary is missing or corrupt; see ``o200kBase``.
    public static var cl100kBase: Encoding {
        do { return try named(.cl100kBase) } catch { fatalError("\(error)") }
    }

    // MARK: Encoding

    /// The token ids of `text` (tiktoken's `encode_ordinary`).
    public func encode(_ text: String) -> [Int] {
        var sink = CollectingSink()
        sink.ids.reserveCapacity(text.utf8.count / 3 + 1)
        run(text, into: &sink)
        return sink.ids
    }

    /// The number of tokens of `text`, without building the id array.
    public func count(_ text: String) -> Int {
        var sink = CountingSink()
        run(text, into: &sink)
        return sink.count
    }

    /// The pieces the pre-tokenizer splits `text` into (for debugging and tests).
    public func pieces(_ text: String) -> [Substring] {
        var copy = text
        var lengths: [Int] = []
        copy.withUTF8 { buffer in forEachPieceRange(buffer) { s, e in lengths.append(e - s) } }
        let utf8 = copy.utf8
        var lower = utf8.startIndex
        return lengths.map { length in
            let upper = utf8.index(lower, offsetBy: length)
            defer { lower = upper }
            return copy[lower..<upper]
        }
    }

    /// Visits the pre-tokenizer pieces of `bytes` (valid UTF-8) in order: `body(start, end, tokens)` with the
    /// piece's byte range and its token count. The counts add up to ``count(_:)`` of the same text, so a caller
    /// that keeps or drops whole pieces knows its token total without encoding again (prompt compression).
    public func forEachPiece(_ bytes: UnsafeBufferPointer<UInt8>, _ body: (Int, Int, Int) -> Void) {
        forEachPieceRange(bytes) { s, e in body(s, e, tokenCount(ofPiece: s, e, in: bytes)) }
    }

    /// The pre-tokenizer pieces of `bytes` (valid UTF-8) in order, `body(start, end)`, without encoding them: a
    /// caller that has seen a piece's bytes before reuses what it knows and asks ``tokenCount(ofPiece:_:in:)``
    /// only for new ones.
    public func forEachPieceRange(_ bytes: UnsafeBufferPointer<UInt8>, _ body: (Int, Int) -> Void) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        let n = bytes.count
        let scanner = PreTokenizer(base: base, count: n)
        let o200k = name == .o200kBase
        var p = 0
        while p < n {
            let e = o200k ? scanner.nextO200k(at: p) : scanner.nextCl100k(at: p)
            body(p, e)
            p = e
        }
    }

    /// The ends of the pre-tokenizer pieces of `bytes` that start at `start` (the end of an earlier piece, or 0), at
    /// most `max` of them, in order, written to `ends`; returns how many (0 only when `start` is at the end). The
    /// same pieces as ``forEachPieceRange(_:_:)``, a chunk at a time: a caller with work per piece does it in a loop
    /// of its own, over a small buffer, instead of in a closure called for every piece.
    public func pieceEnds(
        _ bytes: UnsafeBufferPointer<UInt8>, from start: Int, into ends: UnsafeMutablePointer<Int32>, max: Int
    ) -> Int {
        guard let base = bytes.baseAddress, start < bytes.count else { return 0 }
        let n = bytes.count
        let scanner = PreTokenizer(base: base, count: n)
        var p = start
        var k = 0
        if name == .o200kBase {
            while p < n && k < max {
                p = scanner.nextO200k(at: p)
                ends[k] = Int32(truncatingIfNeeded: p)
                k += 1
            }
        } else {
            while p < n && k < max {
                p = scanner.nextCl100k(at: p)
                ends[k] = Int32(truncatingIfNeeded: p)
                k += 1
            }
        }
        return k
    }

    /// The tokens of the pre-tokenizer piece `bytes[start..<end]` (a range ``forEachPieceRange(_:_:)`` reported).
    public func tokenCount(ofPiece start: Int, _ end: Int, in bytes: UnsafeBufferPointer<UInt8>) -> Int {
        let base = bytes.baseAddress!
        var sink = CountingSink()
        vocabulary.encodePiece(base + start, end - start, base + bytes.count, into: &sink)
        return sink.count
    }

    /// Token counts of many pre-tokenizer pieces of `bytes` at once: `counts[i]` for the piece
    /// `starts[i]..<ends[i]` (ranges ``forEachPieceRange(_:_:)`` reported), `count` of them. Same results as
    /// ``tokenCount(ofPiece:_:in:)`` one by one, faster when many pieces are new: the vocabulary lookups of
    /// whole pieces (most pieces are one token) go first in one tight loop, so their memory accesses overlap
    /// instead of waiting one after the other; pieces that are not a token are merged after.
    public func tokenCounts(
        ofPieces starts: UnsafePointer<Int32>, _ ends: UnsafePointer<Int32>, count: Int,
        in bytes: UnsafeBufferPointer<UInt8>, into counts: UnsafeMutablePointer<Int32>
    ) {
        guard let base = bytes.baseAddress, count > 0 else { return }
        vocabulary.countPieces(base, base + bytes.count, starts, ends, count, into: counts)
    }

    private func run<S: TokenSink>(_ text: String, into sink: inout S) {
        var copy = text  // withUTF8 is mutating; native strings are not copied
        copy.withUTF8 { buffer in
            guard let base = buffer.baseAddress, buffer.count > 0 else { return }
            let n = buffer.count
            let end = base + n
            let scanner = PreTokenizer(base: base, count: n)
            let vocabulary = self.vocabulary
            var p = 0
            switch name {
            case .o200kBase:
                while p < n {
                    let e = scanner.nextO200k(at: p)
                    vocabulary.encodePiece(base + p, e - p, end, into: &sink)
                    p = e
                }
            case .cl100kBase:
                while p < n {
                    let e = scanner.nextCl100k(at: p)
                    vocabulary.encodePiece(base + p, e - p, end, into: &sink)
                    p = e
                }
            }
        }
    }

    // MARK: Decoding

    /// The bytes of `ids` (special tokens decode to their text). Throws on an id the encoding does not know.
    public func decodeBytes(_ ids: [Int]) throws(TokenizerError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(ids.count * 4)
        for id in ids {
            guard appendBytes(of: id, to: &out) else {
                throw TokenizerError(code: .unknownTokenID, message: "token id \(id) is not in \(name)")
            }
        }
        return out
    }

    /// Appends the bytes of token `id` (a rank or a special token); false for an unknown id.
    private func appendBytes(of id: Int, to out: inout [UInt8]) -> Bool {
        if let bytes = vocabulary.bytes(ofRank: id) {
            out.append(contentsOf: bytes)
        } else if let special = specialTokenBytes[id] {
            out.append(contentsOf: special)
        } else {
            return false
        }
        return true
    }

    /// The text of `ids`; invalid UTF-8 (a multi-byte character split across a cut) and unknown ids become
    /// U+FFFD, like tiktoken's `decode(errors="replace")`.
    public func decode(_ ids: [Int]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(ids.count * 4)
        for id in ids where !appendBytes(of: id, to: &out) {
            out.append(contentsOf: [0xEF, 0xBF, 0xBD])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The bytes of one token, or nil if the id is unknown.
    public func tokenBytes(_ id: Int) -> [UInt8]? {
        if let bytes = vocabulary.bytes(ofRank: id) { return Array(bytes) }
        return specialTokenBytes[id]
    }
}
