import ArgumentParser
import Foundation
import MockUpstream

struct MockUpstreamCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mock-upstream",
        abstract: "Run a deterministic OpenAI-compatible server for tests, demos and benchmarks.",
        discussion: """
            Per-request headers override the flags: x-mock-latency-ms, x-mock-tokens-per-second,
            x-mock-completion-tokens, x-mock-status (answer with that status), x-mock-fault (reset | stall |
            reset-mid-stream). GET /mock/requests lists the last 64 requests received (DELETE clears them).
            """)

    @Option(help: "Address to listen on.")
    var host: String = "127.0.0.1"

    @Option(help: "Port to listen on.")
    var port: Int = 9001

    @Option(help: "Delay before each response head, in milliseconds.")
    var latencyMs: Int = 0

    @Option(help: "Streaming speed in tokens per second (0: as fast as possible).")
    var tokensPerSecond: Double = 0

    @Option(help: "Completion length in tokens (max_tokens caps it).")
    var completionTokens: Int = 16

    @Option(help: "Event loop threads. Default: one per core.")
    var threads: Int?

    @Option(help: "Answer every API request with this HTTP status and an OpenAI error body (like x-mock-status).")
    var status: Int?

    @Option(help: "Fault for every API request: reset | stall | reset-mid-stream (like x-mock-fault).")
    var fault: String?

    func validate() throws {
        guard latencyMs >= 0 else { throw ValidationError("--latency-ms must be >= 0") }
        guard tokensPerSecond >= 0 else { throw ValidationError("--tokens-per-second must be >= 0") }
        guard (0...100_000).contains(completionTokens) else { throw ValidationError("--completion-tokens must be 0...100000") }
        if let status, !(100...599).contains(status) { throw ValidationError("--status must be an HTTP status") }
        if let fault, MockOptions.Fault(rawValue: fault) == nil {
            throw ValidationError("--fault must be reset, stall or reset-mid-stream")
        }
    }

    func run() async throws {
        let logger = makeLogger("mock-upstream")
        var options = MockOptions()
        options.latencyMs = latencyMs
        options.tokensPerSecond = tokensPerSecond
        options.completionTokens = completionTokens
        options.status = status
        options.fault = fault.flatMap(MockOptions.Fault.init(rawValue:))
        let server = try await MockServer.start(host: host, port: port, options: options,
                                                threads: threads ?? ProcessInfo.processInfo.activeProcessorCount)
        logger.info("mock upstream listening", metadata: ["address": "\(server.localAddress.map { "\($0)" } ?? "")"])
        _ = await waitForTermination()
        await server.shutdown()
    }
}
