import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import OTel
import Optimizer
import Prometheus
import ServiceLifecycle
import Synchronization

/// The composition root's handle on telemetry: a `RecordSink` that turns finished request records into spans and
/// metrics (on the accounting thread, never the hot path), the span export pipeline, swift-otel's OTLP metrics
/// backend, and the Prometheus endpoint. `run()` runs the background services until `shutdown()`.
public final class Telemetry: RecordSink, Sendable {
    public let config: TelemetryConfiguration
    public let metrics: TelemetryMetrics
    public let pipeline: SpanExportPipeline?
    let builder: SpanBuilder
    let stdout: Bool
    let logger: Logger
    let services: [any Service]
    let childIDs = NIOLockedValueBox(TraceIDGenerator())
    let dropSources = NIOLockedValueBox<[@Sendable () -> [String: Int]]>([])
    let group = NIOLockedValueBox<ServiceGroup?>(nil)
    let metricsServer = NIOLockedValueBox<MetricsServer?>(nil)
    let runFinished = Atomic<Bool>(false)

    /// Whether anything consumes records: spans, OTLP metrics or the Prometheus endpoint. When not, the composition
    /// root leaves the sink out and the accounting thread does no telemetry work at all.
    public var isActive: Bool {
        pipeline != nil || stdout || config.exportsMetricsOverOTLP || metricsServer.withLockedValue { $0 != nil }
    }

    /// Whether the proxy should do W3C trace context (ids in records, `traceparent` upstream).
    public var wantsTraceContext: Bool { pipeline != nil || stdout }

    /// - Parameters:
    ///   - providerName: `gen_ai.provider.name` for a served model (from the catalog).
    ///   - transport: overrides the OTLP transport chosen from the configuration (tests).
    public init(config: TelemetryConfiguration, logger: Logger,
                providerName: @escaping @Sendable (String) -> String? = { _ in nil },
                transport: (any OTLPSpanTransport)? = nil) throws(TelemetryError)
    {
        self.config = config
        self.logger = logger
        self.builder = SpanBuilder(providerName: providerName)
        self.stdout = config.mode == .stdout
        var services: [any Service] = []
        var otelFactory: (any MetricsFactory)?
        if config.exportsMetricsOverOTLP {
            var otelConfig = OTel.Configuration.default
            otelConfig.serviceName = config.serviceName
            otelConfig.traces.enabled = false
            otelConfig.logs.enabled = false
            otelConfig.metrics.enabled = true
            otelConfig.diagnosticLogger = .custom(logger)
            otelConfig.diagnosticLogLevel = .warning
            otelConfig.metrics.valueHistogramBuckets = [
                "gen_ai.client.token.usage": TelemetryMetrics.tokenBuckets,
                "gen_ai.client.operation.duration": TelemetryMetrics.durationBuckets,
                "gen_ai.client.operation.time_to_first_chunk": TelemetryMetrics.firstChunkBuckets,
                "llm.optimization.duration": TelemetryMetrics.optimizationMillisBuckets,
                "auto_optimizer.added_latency": TelemetryMetrics.addedLatencyBuckets,
            ]
            do {
                let backend = try OTel.makeMetricsBackend(configuration: otelConfig)
                otelFactory = backend.factory
                services.append(backend.service)
            } catch {
                throw TelemetryError(code: .invalidConfiguration, message: "OTLP metrics", cause: error)
            }
        }
        self.metrics = TelemetryMetrics(otel: otelFactory, builder: builder)
        if config.exportsSpansOverOTLP {
            let t: any OTLPSpanTransport
            if let transport {
                t = transport
            } else if config.tracesProtocol == .grpc {
                t = try OTLPGRPCSpanTransport(endpoint: config.effectiveTracesEndpoint, headers: config.tracesHeaders,
                                              timeout: config.exportTimeout)
            } else {
                t = OTLPHTTPSpanTransport(endpoint: config.effectiveTracesEndpoint, headers: config.tracesHeaders,
                                          timeout: config.exportTimeout)
            }
            var attrs: [OTLPAttribute] = [
                .init("service.name", .string(config.serviceName)),
                .init("telemetry.sdk.name", .string("llm-auto-optimizer")),
                .init("telemetry.sdk.language", .string("swift")),
                .init("telemetry.sdk.version", .string(TelemetryVersion.current)),
            ]
            for (k, v) in config.resourceAttributes { attrs.append(.init(k, .string(v))) }
            let p = SpanExportPipeline(config: config, resource: OTLPResource(attributes: attrs), transport: t,
                                       logger: logger)
            self.pipeline = p
            services.append(p)
        } else {
            self.pipeline = nil
        }
        self.services = services
    }

    /// Adds drop counts of a queue outside this module (the accounting queue), by reason, to
    /// `auto_optimizer_telemetry_dropped_total`.
    public func addDropSource(_ source: @escaping @Sendable () -> [String: Int]) {
        dropSources.withLockedValue { $0.append(source) }
    }

    // MARK: RecordSink

    public func record(_ record: RequestRecord) {
        metrics.record(record)
        guard pipeline != nil || stdout else { return }
        let spans = childIDs.withLockedValue { builder.spans(for: record, childIDs: &$0) }
        if spans.isEmpty { return }
        if let pipeline {
            pipeline.enqueue(spans)
        } else if stdout {
            var text = ""
            for s in spans { text += SpanJSON.line(s) + "\n" }
            FileHandle.standardOutput.write(Data(text.utf8))
        }
    }

    /// Prometheus text for a scrape (drop counters brought up to date first).
    public func renderMetrics() -> [UInt8] {
        var dropped: [String: Int] = [:]
        for source in dropSources.withLockedValue({ $0 }) {
            for (k, v) in source() { dropped[k, default: 0] += v }
        }
        if let p = pipeline {
            for (k, v) in p.counters.dropped { dropped[k, default: 0] += v }
        }
        metrics.updateDropped(dropped)
        return metrics.registry.emitToBuffer()
    }

    /// Binds the Prometheus endpoint (when `metricsPort` is not 0). Throws when the port cannot be bound.
    public func startMetricsServer() async throws(TelemetryError) -> Int? {
        guard config.metricsPort != 0 else { return nil }
        let server = try await MetricsServer.start(host: config.metricsHost, port: config.metricsPort) {
            [weak self] in self?.renderMetrics() ?? []
        }
        metricsServer.withLockedValue { $0 = server }
        return server.localPort
    }

    /// Runs the exporters until `shutdown()`; on the way out the span pipeline tries a last export and spools
    /// the rest.
    public func run() async throws {
        guard !services.isEmpty else { return }
        let g = ServiceGroup(configuration: .init(services: services.map {
            .init(service: $0, successTerminationBehavior: .ignore, failureTerminationBehavior: .ignore)
        }, logger: logger))
        group.withLockedValue { $0 = g }
        defer { runFinished.store(true, ordering: .releasing) }
        try await g.run()
    }

    /// After `shutdown()`: waits until the span pipeline has exported or spooled what it held (at most the export
    /// timeout plus 2 s), then at most `metricsGrace` for swift-otel's last metrics export (which retries with
    /// backoff while the collector is down). Returns early when everything stopped.
    public func waitForShutdown(metricsGrace: Duration = .seconds(1)) async {
        if services.isEmpty { return }
        let clock = ContinuousClock()
        let spansDeadline = clock.now + config.exportTimeout + .seconds(2)
        while let p = pipeline, !p.finished, clock.now < spansDeadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let deadline = clock.now + metricsGrace
        while !runFinished.load(ordering: .acquiring), clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    public func shutdown() async {
        if let g = group.withLockedValue({ $0 }) { await g.triggerGracefulShutdown() }
        await metricsServer.withLockedValue({ $0 })?.shutdown()
    }
}

/// One span as a JSON line (`--telemetry stdout`).
enum SpanJSON {
    static func line(_ s: OTLPSpan) -> String {
        var parts: [String] = [
            "\"trace_id\":\"\(TraceContext.hex(s.traceIDHigh))\(TraceContext.hex(s.traceIDLow))\"",
            "\"span_id\":\"\(TraceContext.hex(s.spanID))\"",
        ]
        if let p = s.parentSpanID { parts.append("\"parent_span_id\":\"\(TraceContext.hex(p))\"") }
        parts.append("\"name\":\(quote(s.name))")
        parts.append("\"kind\":\"\(s.kind)\"")
        parts.append("\"start_time_unix_nano\":\(s.startTimeUnixNano)")
        parts.append("\"end_time_unix_nano\":\(s.endTimeUnixNano)")
        if s.status != .unset { parts.append("\"status\":\"\(s.status)\"") }
        var attrs: [String] = []
        for a in s.attributes {
            let v: String
            switch a.value {
            case .string(let x): v = quote(x)
            case .bool(let b): v = b ? "true" : "false"
            case .int(let i): v = String(i)
            case .double(let d): v = d.isFinite ? String(d) : "null"
            case .stringArray(let xs): v = "[" + xs.map(quote).joined(separator: ",") + "]"
            }
            attrs.append("\(quote(a.key)):\(v)")
        }
        parts.append("\"attributes\":{" + attrs.joined(separator: ",") + "}")
        return "{" + parts.joined(separator: ",") + "}"
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    out += String(format: "\\u%04x", u.value)
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}
