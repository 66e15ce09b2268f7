import ArgumentParser
import Foundation
import Catalog
import NIOCore
import Optimizer
import Compression
import Policy
import Proxy
import Telemetry

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the sidecar: listen for OpenAI API calls and forward them to the upstream.")

    @Option(help: "Address to listen on (env AUTO_OPTIMIZER_HOST). Default 127.0.0.1.")
    var host: String?

    @Option(help: "Port to listen on (env AUTO_OPTIMIZER_PORT). Default 8080.")
    var port: Int?

    @Option(help: "Upstream base URL with its version prefix (env AUTO_OPTIMIZER_UPSTREAM). Default https://api.openai.com/v1.")
    var upstream: String?

    @Option(help: "Policy file (YAML; env AUTO_OPTIMIZER_CONFIG). Reloaded when it changes and on SIGHUP. Without one, a built-in passthrough policy to --upstream applies.")
    var config: String?

    @Option(help: "Largest accepted request body in bytes (env AUTO_OPTIMIZER_MAX_BODY_BYTES). Default 33554432 (32 MiB).")
    var maxBodyBytes: Int?

    @Option(help: "PEM file of extra certificate authorities to trust for https upstreams, besides the system store (env AUTO_OPTIMIZER_UPSTREAM_CA_FILE).")
    var upstreamCAFile: String?

    @Option(help: "Seconds to wait for the upstream's next byte (env AUTO_OPTIMIZER_UPSTREAM_TIMEOUT). Default 600.")
    var upstreamTimeout: Double?

    @Option(help: "Seconds to wait for a connection to the upstream (env AUTO_OPTIMIZER_CONNECT_TIMEOUT). Default 10.")
    var connectTimeout: Double?

    @Option(help: "Seconds in-flight requests may run after SIGTERM/SIGINT (env AUTO_OPTIMIZER_DRAIN_TIMEOUT). Default 30.")
    var drainTimeout: Double?

    @Option(help: "Event loop threads (env AUTO_OPTIMIZER_THREADS). Default: one per core.")
    var threads: Int?

    @Option(help: "Model catalog file (JSON) extending or overriding the built-in one (env AUTO_OPTIMIZER_CATALOG).")
    var catalog: String?

    @Option(help: "Telemetry: auto (OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT or a signal endpoint is set, else none), otlp, stdout (spans as JSON lines) or off (env AUTO_OPTIMIZER_TELEMETRY). Default auto.")
    var telemetry: String?

    @Option(help: "Port for Prometheus text on GET /metrics, on --host (env AUTO_OPTIMIZER_METRICS_PORT); 0 turns it off. Default 9090.")
    var metricsPort: Int?

    @Option(help: "Directory where spans wait (LZ4-compressed) while the collector is down; kept across restarts (env AUTO_OPTIMIZER_TELEMETRY_SPOOL). Default: none (memory only).")
    var telemetrySpool: String?

    func run() async throws {
        let env = ProcessInfo.processInfo.environment
        let logger = makeLogger("auto-optimizer", environment: env)
        var config: ProxyConfiguration
        do {
            config = try makeConfiguration(environment: env)
        } catch {
            throw ValidationError("\(error)")
        }
        let models: ModelCatalog
        do {
            models = try ModelCatalog.load(userFile: (catalog ?? env["AUTO_OPTIMIZER_CATALOG"]).map {
                URL(fileURLWithPath: $0)
            })
        } catch {
            throw ValidationError("\(error)")
        }
        let policyPath = self.config ?? env["AUTO_OPTIMIZER_CONFIG"]
        var policy: CompiledPolicy?
        if let policyPath {
            do {
                policy = try CompiledPolicy(path: policyPath, catalog: models)
            } catch {
                FileHandle.standardError.write(Data("\(error)\n".utf8))
                throw ExitCode(1)
            }
            for warning in policy!.document.warnings { logger.warning("\(warning)") }
            if policy!.compresses { Thread.detachNewThread { PromptCompressor.warmUp() } }
        }
        let telemetry = try await makeTelemetry(environment: env, host: config.host, catalog: models, logger: logger)
        config.traceContext = telemetry.wantsTraceContext
        let budgets = BudgetTracker()
        let accountant = Accountant(prices: CatalogPriceBook(catalog: models),
                                    sinks: [BudgetSink(budgets: budgets)] + (telemetry.isActive ? [telemetry] : []),
                                    queueCapacity: config.accountingQueueCapacity)
        telemetry.addDropSource { ["queue_full": accountant.droppedRecords] }
        let telemetryTask = Task { _ = try? await telemetry.run() }
        let server: ProxyServer
        do {
            server = try await ProxyServer.start(config: config, policy: policy, accountant: accountant,
                                                 budgets: budgets, logger: logger)
        } catch {
            logger.critical("\(error)")
            throw ExitCode(1)
        }
        let address = server.localAddress.map { "\($0)" } ?? "\(config.host):\(config.port)"
        logger.info("auto-optimizer listening", metadata: ["address": "\(address)", "upstream": "\(config.upstream)"])
        let reloader = policyPath.map { PolicyReloader(path: $0, catalog: models, server: server, logger: logger) }
        reloader?.start()
        let sig = await waitForTermination()
        reloader?.stop()
        logger.info("signal \(sig): draining (up to \(config.drainTimeout.nanoseconds / 1_000_000_000) s)")
        await server.shutdown()
        await stopTelemetry(telemetry, task: telemetryTask, accountant: accountant)
        logger.info("stopped")
    }

    /// Flags win over environment variables, which win over defaults.
    func makeConfiguration(environment env: [String: String]) throws -> ProxyConfiguration {
        var c = ProxyConfiguration()
        c.host = host ?? env["AUTO_OPTIMIZER_HOST"] ?? c.host
        if let app = env["AUTO_OPTIMIZER_APP_ID"], !app.isEmpty { c.applicationID = app }
        if let p = try port ?? env["AUTO_OPTIMIZER_PORT"].map({ try int($0, "AUTO_OPTIMIZER_PORT") }) {
            guard (0...65535).contains(p) else {
                throw ProxyError(code: .invalidConfiguration, message: "port \(p) is out of range")
            }
            c.port = p
        }
        if let u = upstream ?? env["AUTO_OPTIMIZER_UPSTREAM"] { c.upstream = try UpstreamURL(u) }
        if let b = try maxBodyBytes ?? env["AUTO_OPTIMIZER_MAX_BODY_BYTES"].map({ try int($0, "AUTO_OPTIMIZER_MAX_BODY_BYTES") }) {
            guard b > 0 else { throw ProxyError(code: .invalidConfiguration, message: "max body bytes must be > 0") }
            c.maxBodyBytes = b
        }
        if let t = try upstreamTimeout ?? env["AUTO_OPTIMIZER_UPSTREAM_TIMEOUT"].map({ try seconds($0, "AUTO_OPTIMIZER_UPSTREAM_TIMEOUT") }) {
            c.upstreamReadTimeout = try amount(t, "upstream timeout")
        }
        if let t = try connectTimeout ?? env["AUTO_OPTIMIZER_CONNECT_TIMEOUT"].map({ try seconds($0, "AUTO_OPTIMIZER_CONNECT_TIMEOUT") }) {
            c.upstreamConnectTimeout = try amount(t, "connect timeout")
        }
        if let t = try drainTimeout ?? env["AUTO_OPTIMIZER_DRAIN_TIMEOUT"].map({ try seconds($0, "AUTO_OPTIMIZER_DRAIN_TIMEOUT") }) {
            c.drainTimeout = try amount(t, "drain timeout")
        }
        if let ca = upstreamCAFile ?? env["AUTO_OPTIMIZER_UPSTREAM_CA_FILE"], !ca.isEmpty {
            guard FileManager.default.isReadableFile(atPath: ca) else {
                throw ProxyError(code: .invalidConfiguration, message: "upstream CA file '\(ca)' cannot be read")
            }
            c.upstreamCAFile = ca
        }
        if let n = try threads ?? env["AUTO_OPTIMIZER_THREADS"].map({ try int($0, "AUTO_OPTIMIZER_THREADS") }) {
            guard n > 0 && n <= 256 else { throw ProxyError(code: .invalidConfiguration, message: "threads must be 1...256") }
            c.threads = n
        }
        if let n = try env["AUTO_OPTIMIZER_ACCOUNTING_QUEUE"].map({ try int($0, "AUTO_OPTIMIZER_ACCOUNTING_QUEUE") }) {
            guard n >= 64 && n <= 1 << 20 else {
                throw ProxyError(code: .invalidConfiguration, message: "AUTO_OPTIMIZER_ACCOUNTING_QUEUE must be 64...1048576")
            }
            c.accountingQueueCapacity = n
        }
        return c
    }

    private func int(_ s: String, _ name: String) throws -> Int {
        guard let v = Int(s) else { throw ProxyError(code: .invalidConfiguration, message: "\(name)='\(s)' is not a whole number") }
        return v
    }

    private func seconds(_ s: String, _ name: String) throws -> Double {
        guard let v = Double(s) else { throw ProxyError(code: .invalidConfiguration, message: "\(name)='\(s)' is not a number") }
        return v
    }

    private func amount(_ seconds: Double, _ what: String) throws -> TimeAmount {
        guard seconds > 0 && seconds < 1e6 else {
            throw ProxyError(code: .invalidConfiguration, message: "\(what) must be a positive number of seconds")
        }
        return .nanoseconds(Int64(seconds * 1e9))
    }
}
