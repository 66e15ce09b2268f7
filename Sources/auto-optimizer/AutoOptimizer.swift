import ArgumentParser
import CRuntimeTuning
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

    static func main() async {
        tuneRuntime(environment: ProcessInfo.processInfo.environment)
        await main(nil)
    }

    /// Release builds switch off the Swift runtime's dynamic exclusivity checks before any other thread starts.
    /// The package's own modules are compiled without them already (Package.swift); this covers the dependencies'
    /// code too (SwiftNIO's channel pipeline, promises and buffers run ~65 checked accesses per proxied request,
    /// ~6k instructions of swift_beginAccess / swift_endAccess and their thread-local lookups). The static checks of
    /// the compiler stay on, and debug builds (the unit tests) keep the dynamic ones.
    /// `AUTO_OPTIMIZER_EXCLUSIVITY_CHECKS=1` keeps them on in a release build (to hunt an access conflict).
    static func tuneRuntime(environment: [String: String]) {
        #if !DEBUG
        if environment["AUTO_OPTIMIZER_EXCLUSIVITY_CHECKS"] != "1" { ao_disable_dynamic_exclusivity_checks() }
        #endif
    }
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
