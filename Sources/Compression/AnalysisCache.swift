#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension TextCompressor {
    /// The last texts a thread compressed, with their ``Analysis`` (pieces, token counts, protection, sentences and
    /// passages: everything but the question's ranking), found again by their exact bytes, ratio and options. A
    /// context that comes again (the same document asked about again, a conversation's earlier turns, which every
    /// turn sends anew, a retrieval result served for a popular query) is then only ranked against its question and
    /// emitted: in the sidecar, on an ~8k-token retrieval prompt, CPU per request fell from ~1,400 to ~600 us. A hit
    /// gives the same result as compressing anew; only the time changes.
    ///
    /// Bounded by ``budget`` bytes per thread (per encoding and lexicon), least recently used out first; texts
    /// shorter than ``minBytes`` are not kept (they are quick to analyse).
    final class AnalysisCache {
        private struct Entry {
            var text: [UInt8]
            var ratio: Double
            var options: CompressionOptions
            var analysis: Analysis
            var size: Int
            var used: UInt64
        }

        /// Bytes a thread's cache may hold (per encoding and lexicon): env `AUTO_OPTIMIZER_ANALYSIS_CACHE_BYTES`,
        /// 0 turns it off. Default 4 MiB: the suite's ~8k-token context counts ~430 KB (the text twice: as the key and
        /// as the bytes the pieces point into).
        static let budget: Int = {
            guard let v = getenv("AUTO_OPTIMIZER_ANALYSIS_CACHE_BYTES") else { return 4 << 20 }
            return max(0, Int(String(cString: v)) ?? (4 << 20))
        }()

        /// Texts shorter than this are analysed every time.
        static let minBytes = 2048

        private var entries: [Entry] = []
        private var held = 0
        private var clock: UInt64 = 0
        let budget: Int

        init(budget: Int = AnalysisCache.budget) {
            self.budget = budget
        }

        /// Entries held (for tests).
        var count: Int { entries.count }

        func lookup(_ text: [UInt8], ratio: Double, options: CompressionOptions) -> Analysis? {
            for i in entries.indices where entries[i].text.count == text.count && entries[i].ratio == ratio {
                let same = entries[i].text.withUnsafeBytes { a in
                    text.withUnsafeBytes { b in a.count == 0 || memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0 }
                }
                guard same, entries[i].options == options else { continue }
                clock &+= 1
                entries[i].used = clock
                return entries[i].analysis
            }
            return nil
        }

        func store(_ text: [UInt8], ratio: Double, options: CompressionOptions, _ analysis: Analysis) {
            var size = text.count + 256
            switch analysis {
            case .done(let r): size += r.bytes.count
            case .lossy(let input): size += input.size
            }
            guard size <= budget / 2 else { return }
            while held + size > budget, let oldest = entries.indices.min(by: { entries[$0].used < entries[$1].used }) {
                held -= entries[oldest].size
                entries.remove(at: oldest)
            }
            clock &+= 1
            entries.append(
                Entry(text: text, ratio: ratio, options: options, analysis: analysis, size: size, used: clock))
            held += size
        }
    }
}
