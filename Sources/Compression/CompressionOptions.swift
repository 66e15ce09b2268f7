/// How hard and where to compress (a policy's compression profile, or the `compress` command's flags).
public struct CompressionOptions: Sendable, Hashable {
    /// Fraction of the touched messages' tokens to keep (0.5 keeps half: 2x). Lossless steps may already get there.
    public var targetRatio: Double
    /// Prompts with fewer tokens than this (all messages) are left alone.
    public var minPromptTokens: Int
    /// Messages with fewer tokens than this are not touched by the lossy steps.
    public var minMessageTokens: Int
    /// Keep sentences that ask something (end in "?") in the context.
    public var preserveQuestions: Bool
    /// Markers of sections that must stay verbatim: a line containing one starts a protected block that runs to
    /// the next blank line (or to the next header line).
    public var preserveSections: [String]
    /// Below this quality score (0...1, see ``TextCompressor``) the original prompt is sent.
    public var minQuality: Double
    /// Roles whose messages may be touched. The system prompt and the last user turn never are.
    public var roles: Set<String>
    /// The steps to run.
    public var lossless: Bool
    public var selection: Bool
    public var pruning: Bool
    /// Lossy steps shorten `Document [i](Title: t)` passage headers to `Document [i](t)` (the label repeats on
    /// every passage). Counted as pruning.
    public var shortenHeaders: Bool

    public init(
        targetRatio: Double = 0.5, minPromptTokens: Int = 0, minMessageTokens: Int = 128,
        preserveQuestions: Bool = true, preserveSections: [String] = [], minQuality: Double = 0,
        roles: Set<String> = ["user", "tool"], lossless: Bool = true, selection: Bool = true, pruning: Bool = true,
        shortenHeaders: Bool = true
    ) {
        self.targetRatio = targetRatio
        self.minPromptTokens = minPromptTokens
        self.minMessageTokens = minMessageTokens
        self.preserveQuestions = preserveQuestions
        self.preserveSections = preserveSections
        self.minQuality = minQuality
        self.roles = roles
        self.lossless = lossless
        self.selection = selection
        self.pruning = pruning
        self.shortenHeaders = shortenHeaders
    }
}

/// Which steps changed a text, reported as the record's `technique` ("lossless+selection+pruning").
public struct CompressionTechniques: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let whitespace = CompressionTechniques(rawValue: 1)
    public static let json = CompressionTechniques(rawValue: 2)
    public static let dedup = CompressionTechniques(rawValue: 4)
    public static let selection = CompressionTechniques(rawValue: 8)
    public static let pruning = CompressionTechniques(rawValue: 16)

    public static let lossless: CompressionTechniques = [.whitespace, .json, .dedup]

    /// "lossless+selection+pruning", "lossless", "none".
    public var name: String {
        var parts: [String] = []
        if !intersection(.lossless).isEmpty { parts.append("lossless") }
        if contains(.selection) { parts.append("selection") }
        if contains(.pruning) { parts.append("pruning") }
        return parts.isEmpty ? "none" : parts.joined(separator: "+")
    }
}
