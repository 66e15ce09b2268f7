import Compression
import Policy

extension CompressionProfile {
    /// The profile as the compressor's options.
    public var options: CompressionOptions {
        CompressionOptions(
            targetRatio: targetRatio, minPromptTokens: minPromptTokens, minMessageTokens: minMessageTokens,
            preserveQuestions: preserveQuestions, preserveSections: preserveSections, minQuality: minQuality,
            roles: Set(roles), lossless: lossless, selection: selection, pruning: pruning,
            shortenHeaders: shortenHeaders)
    }
}
