import Tokenizer
import Wire

/// The outcome of compressing a chat request's messages.
public struct PromptCompression: Sendable {
    /// New contents for the messages that changed (index into the request's `messages`, UTF-8 text).
    public var edits: [(index: Int, text: [UInt8])] = []
    /// Tokens of the touched messages before and after (contents only; the sidecar's accounting counts the whole
    /// prompt exactly, off the hot path).
    public var originalTokens = 0
    public var compressedTokens = 0
    /// Token-weighted mean quality of the compressed messages (1 when only lossless steps ran).
    public var quality = 1.0
    public var techniques: CompressionTechniques = []
    /// False when the quality guard (``CompressionOptions/minQuality``) sent the original prompt.
    public var applied = true
    /// Why nothing was done, when nothing was ("below min_prompt_tokens", "no eligible message", ...).
    public var skipped: String?

    public var tokensSaved: Int { applied ? max(0, originalTokens - compressedTokens) : 0 }
}

/// Applies a compression profile to a chat request: which messages may be touched (roles, never the system
/// prompt or the last user turn, which also serves as the question), removal of blocks repeated across the
/// conversation, then ``TextCompressor`` per message toward the profile's ratio, and the quality guard.
public struct PromptCompressor: Sendable {
    public let text: TextCompressor

    /// `cachesAnalyses: false` analyses every text anew (``TextCompressor/cachesAnalyses``).
    public init(encoding: Encoding, lexicon: Lexicon = .shared, cachesAnalyses: Bool = true) {
        self.text = TextCompressor(encoding: encoding, lexicon: lexicon, cachesAnalyses: cachesAnalyses)
    }

    /// Loads the word table and both vocabularies (~0.2 s, once per process) so the first compressed request does
    /// not pay for it on an event loop. Call off the event loops, at startup or when a policy starts compressing.
    public static func warmUp() {
        _ = Lexicon.shared
        _ = try? Encoding.named(.o200kBase)
        _ = try? Encoding.named(.cl100kBase)
    }

    /// What a message that only repeated earlier blocks becomes.
    public static let repeatedMarker = "(same content as an earlier message)"

    /// Blocks shorter than this many bytes are never treated as repeats (a "Thanks!" may well recur).
    static let minRepeatBlock = 64

    public func compress(_ view: RequestView, options: CompressionOptions) -> PromptCompression {
        var result = PromptCompression()
        let messages = view.messages
        guard !messages.isEmpty else {
            result.skipped = "no messages"
            return result
        }
        let lastUser = messages.lastIndex(where: { $0.role == "user" })
        let question = lastUser.flatMap { view.text(ofMessage: $0) }
        var texts: [[UInt8]?] = []
        texts.reserveCapacity(messages.count)
        var promptBytes = 0
        for i in messages.indices {
            let t = view.textBytes(ofMessage: i)
            texts.append(t)
            promptBytes += t?.count ?? 0
        }
        // A token is at least one byte: fewer bytes than the minimum is below it without counting. Otherwise the
        // count comes after compressing, from the eligible messages' own counts (no second tokenizer pass).
        if options.minPromptTokens > 0 && promptBytes < options.minPromptTokens {
            return Self.belowMinimum()
        }
        var eligible: [Int] = []
        for (i, m) in messages.enumerated() {
            guard let role = m.role, options.roles.contains(role), role != "system", role != "developer",
                i != lastUser, m.contentKind == .string, texts[i] != nil
            else { continue }
            eligible.append(i)
        }
        guard !eligible.isEmpty else {
            result.skipped = "no eligible message"
            return result
        }
        // Repeated blocks: a block (blank-line separated, >= 64 bytes) already seen earlier in the conversation
        // goes from eligible messages.
        var seen = HashSet64(capacity: 64)
        var deduped: [Int: [UInt8]] = [:]
        let eligibleSet = Set(eligible)
        if options.lossless {
            for i in messages.indices {
                guard let t = texts[i] else { continue }
                var keep: [Range<Int>] = []
                var removed = false
                for block in Lossless.blocks(t) {
                    let trimmed = Self.trim(t, block)
                    guard trimmed.count >= Self.minRepeatBlock else {
                        keep.append(block)
                        continue
                    }
                    let h = t.withUnsafeBufferPointer { b in
                        // Blocks that differ only in letter case count as repeats.
                        ByteHash.hash(b.baseAddress! + trimmed.lowerBound, count: trimmed.count, foldingCase: true)
                    }
                    if !seen.insert(h) && eligibleSet.contains(i) {
                        removed = true
                    } else {
                        keep.append(block)
                    }
                }
                if removed {
                    var out: [UInt8] = []
                    for (k, r) in keep.enumerated() {
                        if k > 0 { out.append(contentsOf: [0x0A, 0x0A]) }
                        out.append(contentsOf: t[r])
                    }
                    // A message that only repeats earlier text still says so: an empty tool result reads as
                    // "nothing found".
                    deduped[i] = keep.isEmpty ? Array(Self.repeatedMarker.utf8) : out
                }
            }
        }
        var weighted = 0.0
        var lossyTokens = 0
        for i in eligible {
            let original = texts[i]!
            let input = deduped[i] ?? original
            let r = text.compress(input, question: question, ratio: options.targetRatio, options: options)
            let originalTokens = deduped[i] == nil ? r.originalTokens : text.count(original)
            result.originalTokens += originalTokens
            var techniques = r.techniques
            if deduped[i] != nil { techniques.insert(.dedup) }
            result.techniques.formUnion(techniques)
            if !techniques.isEmpty && r.bytes != original {
                result.edits.append((i, r.bytes))
                result.compressedTokens += r.tokens
            } else {
                // Sent as it was: nothing saved on this message, whatever the compressor's count.
                result.compressedTokens += originalTokens
            }
            if !r.techniques.intersection([.selection, .pruning]).isEmpty {
                weighted += r.quality * Double(originalTokens)
                lossyTokens += originalTokens
            }
        }
        if options.minPromptTokens > 0 {
            var promptTokens = result.originalTokens
            for i in messages.indices where !eligibleSet.contains(i) {
                if let t = texts[i] { promptTokens += text.count(t) }
            }
            if promptTokens < options.minPromptTokens { return Self.belowMinimum() }
        }
        result.quality = lossyTokens > 0 ? weighted / Double(lossyTokens) : 1
        if result.quality < options.minQuality {
            result.applied = false
            result.edits = []
        }
        return result
    }

    static func belowMinimum() -> PromptCompression {
        var r = PromptCompression()
        r.skipped = "below min_prompt_tokens"
        return r
    }

    static func trim(_ t: [UInt8], _ r: Range<Int>) -> Range<Int> {
        var a = r.lowerBound
        var b = r.upperBound
        while a < b && (t[a] == 0x20 || t[a] == 0x09 || t[a] == 0x0A || t[a] == 0x0D) { a += 1 }
        while b > a && (t[b - 1] == 0x20 || t[b - 1] == 0x09 || t[b - 1] == 0x0A || t[b - 1] == 0x0D) { b -= 1 }
        return a..<b
    }
}
