/// What prompt compression did to one request (the record's `compression`; telemetry's `llm.optimization.*`).
public struct CompressionSummary: Sendable, Equatable {
    /// "lossless", "lossless+selection", "lossless+selection+pruning", ...; "none" when nothing changed.
    public var technique: String
    /// Tokens of the touched messages before and after.
    public var originalTokens: Int
    public var compressedTokens: Int
    /// compressed / original (1 when nothing changed).
    public var ratio: Double
    /// 0...1, see `TextCompressor`.
    public var qualityScore: Double
    /// Time spent compressing, on the hot path.
    public var duration: Duration
    /// The compression profile applied.
    public var profile: String
    /// False when the quality guard sent the original prompt (`min_quality`).
    public var applied: Bool

    public init(
        technique: String, originalTokens: Int, compressedTokens: Int, ratio: Double, qualityScore: Double,
        duration: Duration, profile: String = "", applied: Bool = true
    ) {
        self.technique = technique
        self.originalTokens = originalTokens
        self.compressedTokens = compressedTokens
        self.ratio = ratio
        self.qualityScore = qualityScore
        self.duration = duration
        self.profile = profile
        self.applied = applied
    }
}
