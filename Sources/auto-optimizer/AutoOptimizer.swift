import ArgumentParser
import Dispatch
import Foundation
import Logging

@main
struct AutoOptimizer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "auto-optimizer",
        abstract: "LLM Auto-Optimizer: an OpenAI-compatible sidecar proxy that optimizes and accounts for LLM traffic.",
        subcommands: [Serve.self, MockUpstreamCommand.self, TokensCommand.self, CompressCommand.self, CheckConfigCommand.self],
        defaultSubcommand: Serve.self)
}

/// A logger writing to stderr at the level of `AUTO_OPTIMIZER_LOG_LEVEL` (default `info`).
func makeLogger(_ label: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> Logger {
    var logger = Logger(label: label, factory: { StreamLogHandler.standardError(label: $0) })
    logger.logLevel = environment["AUTO_OPTIMIZER_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0.lowercased()) } ?? .info
    return logger
}

/// Waits for SIGTERM or SIGINT, then runs `onSignal` once.
func waitForTermination() async -> Int32 {
    signal(SIGTERM, SIG_IGN)
    signal(SIGINT, SIG_IGN)
    return await withCheckedContinuation { (continuation: CheckedContinuation<Int32, Never>) in
        let queue = DispatchQueue(label: "signals")
        let fired = SignalLatch()
        var sources: [any DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT] {
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler {
                if fired.fire() {
                    continuation.resume(returning: sig)
                }
            }
            source.resume()
            sources.append(source)
        }
        SignalLatch.keep(sources)
    }
}

final class SignalLatch: @unchecked Sendable {
    private var fired = false
    nonisolated(unsafe) private static var kept: [any DispatchSourceSignal] = []
    /// Called on the one signal queue only.
    func fire() -> Bool {
        if fired { return false }
        fired = true
        return true
    }
    static func keep(_ s: [any DispatchSourceSignal]) { kept = s }
}
