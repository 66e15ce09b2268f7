import ArgumentParser
import Catalog
import Compression
import Foundation
import Optimizer
import Policy
import Tokenizer

/// `auto-optimizer compress [--ratio R] [--question Q] [--profile NAME [--policy FILE]] [--jsonl] [FILE|-]`
///
/// Compresses a prompt the way the sidecar does for one long context message and prints the result; statistics go
/// to stderr. With `--jsonl` every input line `{"prompt": ..., "question": ...}` (question optional) gives one
/// output line `{"compressed": ..., "original_tokens": N, "compressed_tokens": M, "quality": q, "technique": t}`,
/// in order (`--timing` adds `"micros"`, the in-process wall time of the compression alone, and `"cpu_micros"`, the
/// thread's CPU time for it).
struct CompressCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compress",
        abstract: "Compress a prompt (lossless steps, question-aware selection, pruning) and print it.",
        discussion: """
            --ratio is the fraction of tokens to keep (0.5 keeps half). A profile (--profile) comes from the \
            policy file given with --policy, else from the built-in profiles: default (keep 0.5), aggressive \
            (keep 0.25), lossless (lossless steps only). --ratio and --question override the profile. Token counts \
            are o200k_base unless --encoding says otherwise.
            """
    )

    @Option(name: .long, help: "Fraction of tokens to keep, 0 < R <= 1 (default: the profile's, else 0.5).")
    var ratio: Double?

    @Option(name: .long, help: "The question the prompt must answer (ranks passages and protects its words).")
    var question: String?

    @Option(name: .long, help: "Compression profile name (built-in: default, aggressive, lossless).")
    var profile: String?

    @Option(name: .long, help: "Policy file whose compression_profiles --profile names.")
    var policy: String?

    @Option(name: .long, help: "Encoding for token counts: o200k_base or cl100k_base.")
    var encoding: String = "o200k_base"

    @Flag(name: .long, help: "Input is JSON lines {\"prompt\": ..., \"question\": ...}; print one JSON object per line.")
    var jsonl = false

    @Flag(name: .long, help: "Add the compression time in microseconds (\"micros\") to each JSON line.")
    var timing = false

    @Argument(help: "Input file; '-' or nothing reads standard input.")
    var file: String?

    func validate() throws {
        if let ratio, !(ratio > 0 && ratio <= 1) {
            throw ValidationError("--ratio must be in (0, 1], got \(ratio).")
        }
    }

    func run() throws {
        let enc: Tokenizer.Encoding
        do {
            enc = try Tokenizer.Encoding.named(encoding)
        } catch {
            throw Self.fail("\(error)")
        }
        var options = try resolveOptions()
        if let ratio { options.targetRatio = ratio }
        options.minMessageTokens = 0
        options.minPromptTokens = 0
        let compressor = TextCompressor(encoding: enc)
        let input = try CLIInput.read(file, fail: Self.fail)
        if jsonl {
            var out = [UInt8]()
            do {
                try runJSONLines(input, compressor: compressor, options: options, out: &out)
            } catch {
                FileHandle.standardOutput.write(Data(out))
                throw error
            }
            FileHandle.standardOutput.write(Data(out))
            return
        }
        guard let text = String(validating: input, as: UTF8.self) else { throw Self.fail("input is not valid UTF-8") }
        let start = ContinuousClock.now
        let result = compressor.compress(
            Array(text.utf8), question: question, ratio: options.targetRatio, options: options)
        let elapsed = ContinuousClock.now - start
        var out = result.bytes
        out.append(0x0A)
        FileHandle.standardOutput.write(Data(out))
        let exact = enc.count(result.text)
        let r = result.originalTokens > 0 ? Double(exact) / Double(result.originalTokens) : 1
        Self.printError(
            "original_tokens=\(result.originalTokens) compressed_tokens=\(exact) ratio=\(String(format: "%.3f", r)) "
                + "quality=\(String(format: "%.3f", result.quality)) technique=\(result.techniques.name) "
                + "micros=\(Self.micros(elapsed))")
    }

    private func resolveOptions() throws -> CompressionOptions {
        let name = profile ?? "default"
        if let policy {
            let document: PolicyDocument
            do {
                document = try PolicyDocument.load(path: policy, catalog: nil)
            } catch {
                throw Self.fail("\(error)")
            }
            guard let p = document.compressionProfiles.first(where: { $0.name == name }) else {
                throw Self.fail("no compression profile '\(name)' in \(policy)")
            }
            return p.options
        }
        guard let p = CompressionProfile.builtIn[name] else {
            throw Self.fail(
                "unknown profile '\(name)' (built-in: \(CompressionProfile.builtIn.keys.sorted().joined(separator: ", "))); "
                    + "use --policy FILE for a policy's profiles")
        }
        return p.options
    }

    private struct Line: Decodable {
        var prompt: String
        var question: String?
    }

    private struct Output: Encodable {
        var compressed: String
        var original_tokens: Int
        var compressed_tokens: Int
        var quality: Double
        var technique: String
        var micros: Double?
        var cpu_micros: Double?
    }

    private func runJSONLines(
        _ input: Data, compressor: TextCompressor, options: CompressionOptions, out: inout [UInt8]
    ) throws {
        let decoder = JSONDecoder()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        var warm = !timing
        try CLIInput.forEachLine(input) { lineNumber, line in
            if !warm, let item = try? decoder.decode(Line.self, from: line) {
                // Load the lexicon and vocabulary before the first timed call, as the sidecar does at startup.
                for _ in 0..<3 {
                    _ = compressor.compress(
                        Array(item.prompt.utf8), question: item.question ?? question, ratio: options.targetRatio,
                        options: options)
                }
                warm = true
            }
            let item: Line
            do {
                item = try decoder.decode(Line.self, from: line)
            } catch {
                throw Self.fail("line \(lineNumber): expected a JSON object {\"prompt\": \"...\", \"question\": \"...\"} (\(error))")
            }
            let bytes = Array(item.prompt.utf8)
            let q = item.question ?? question
            let c0 = Self.threadCPUNanos()
            let t0 = ContinuousClock.now
            let result = compressor.compress(bytes, question: q, ratio: options.targetRatio, options: options)
            let elapsed = ContinuousClock.now - t0
            let cpu = Double(Self.threadCPUNanos() - c0) / 1000
            let text = result.text
            let o = Output(
                compressed: text, original_tokens: result.originalTokens,
                compressed_tokens: compressor.encoding.count(text), quality: (result.quality * 1000).rounded() / 1000,
                technique: result.techniques.name, micros: timing ? Self.micros(elapsed) : nil,
                cpu_micros: timing ? (cpu * 10).rounded() / 10 : nil)
            out.append(contentsOf: try encoder.encode(o))
            out.append(0x0A)
            CLIInput.flushIfLarge(&out)
        }
    }

    /// CPU time of the calling thread (immune to other processes sharing the cores).
    static func threadCPUNanos() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    static func micros(_ d: Duration) -> Double {
        let (s, a) = d.components
        return (Double(s) * 1e6 + Double(a) / 1e12).rounded(toPlaces: 1)
    }

    private static func printError(_ message: String) {
        FileHandle.standardError.write(Data((message + "\n").utf8))
    }

    private static func fail(_ message: String) -> ExitCode {
        printError("compress: error: \(message)")
        return ExitCode.failure
    }
}

extension Double {
    fileprivate func rounded(toPlaces p: Int) -> Double {
        let m = Foundation.pow(10, Double(p))
        return (self * m).rounded() / m
    }
}
