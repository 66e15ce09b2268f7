/// What prompt compression did to one request (issue 5). Defined here with the same shape the compression work
/// uses, so the telemetry sink can report `llm.optimization.compression_ratio`, `.quality_score`, `.technique` and
/// a compression child span.
public struct CompressionSummary: Sendable, Equatable {
    public var technique: String
    public var originalTokens: Int
    public var compressedTokens: Int
    /// compressed / original.
    public var ratio: Double
    public var qualityScore: Double
    public var duration: Duration

    public init(technique: String, originalTokens: Int, compressedTokens: Int, ratio: Double, qualityScore: Double,
                duration: Duration)
    {
        self.technique = technique
        self.originalTokens = originalTokens
        self.compressedTokens = compressedTokens
        self.ratio = ratio
        self.qualityScore = qualityScore
        self.duration = duration
    }
}
