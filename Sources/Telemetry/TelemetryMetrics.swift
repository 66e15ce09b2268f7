import CoreMetrics
import Foundation
import NIOConcurrencyHelpers
import Optimizer
import Prometheus

/// The sidecar's metrics, recorded from finished `RequestRecord`s on the accounting thread: kept in a Prometheus
/// registry (text on `GET /metrics`) and, when OTLP metrics are on, also sent to swift-otel's metrics factory
/// (exported over OTLP by swift-otel). OpenTelemetry names (dots) are the source; the Prometheus names follow the
/// OpenTelemetry-to-Prometheus convention: dots become underscores, the unit is appended (`_seconds`,
/// `_milliseconds`, `_usd`; `{token}`-style annotations are dropped) and counters end in `_total`.
public final class TelemetryMetrics: Sendable {
    /// gen_ai.client.token.usage buckets from the semantic conventions.
    public static let tokenBuckets: [Double] = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576,
                                                 4194304, 16777216, 67108864]
    /// gen_ai.client.operation.duration buckets (seconds) from the semantic conventions.
    public static let durationBuckets: [Double] = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24,
                                                    20.48, 40.96, 81.92]
    /// gen_ai.client.operation.time_to_first_chunk buckets (seconds) from the semantic conventions.
    public static let firstChunkBuckets: [Double] = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                                      1.0, 2.5, 5.0, 7.5, 10.0]
    /// llm.optimization.duration buckets (milliseconds).
    public static let optimizationMillisBuckets: [Double] = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250,
                                                              500, 1000]
    /// auto_optimizer.added_latency buckets (seconds).
    public static let addedLatencyBuckets: [Double] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                        0.025, 0.05, 0.1]

    /// OpenTelemetry name -> Prometheus name, as documented in the README.
    public static let prometheusNames: [(otel: String, prometheus: String)] = [
        ("llm.optimization.runs", "llm_optimization_runs_total"),
        ("llm.optimization.duration", "llm_optimization_duration_milliseconds"),
        ("llm.optimization.tokens_saved", "llm_optimization_tokens_saved_total"),
        ("llm.optimization.cost_saved", "llm_optimization_cost_saved_usd_total"),
        ("gen_ai.client.token.usage", "gen_ai_client_token_usage"),
        ("gen_ai.client.operation.duration", "gen_ai_client_operation_duration_seconds"),
        ("gen_ai.client.operation.time_to_first_chunk", "gen_ai_client_operation_time_to_first_chunk_seconds"),
        ("auto_optimizer.requests", "auto_optimizer_requests_total"),
        ("auto_optimizer.added_latency", "auto_optimizer_added_latency_seconds"),
        ("auto_optimizer.upstream.errors", "auto_optimizer_upstream_errors_total"),
        ("auto_optimizer.telemetry.dropped", "auto_optimizer_telemetry_dropped_total"),
    ]

    public let registry: PrometheusCollectorRegistry
    private let otel: (any MetricsFactory)?
    private let builder: SpanBuilder
    private let handles = NIOLockedValueBox(Handles())
    /// Telemetry drop counts already added to the counters, by reason (deltas are added at scrape time).
    private let droppedSeen = NIOLockedValueBox<[String: Int]>([:])

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(), otel: (any MetricsFactory)?,
                builder: SpanBuilder)
    {
        self.registry = registry
        self.otel = otel
        self.builder = builder
    }

    /// Records one finished request (on the accounting thread). Metric handles are cached by name and label
    /// values, so the common case is a dictionary lookup per metric, no registry lock or label validation.
    public func record(_ r: RequestRecord) {
        let op = SpanBuilder.operationName(endpoint: r.endpoint)
        let served = r.servedModel ?? r.requestedModel ?? ""
        let failed = r.errorType != nil || r.status >= 400 || r.status == 0
        // llm.optimization.*
        let runStatus: String
        if r.status == 0 || r.status >= 400 {
            runStatus = r.status == 429 || r.errorType == "budget_exceeded" ? "rejected" : "error"
        } else if r.tokensSaved != 0 || (r.requestedModel != nil && r.servedModel != r.requestedModel)
            || (r.compression.map { $0.applied && $0.technique != "none" } ?? false)
        {
            runStatus = "optimized"
        } else {
            runStatus = "unchanged"
        }
        handles.withLockedValue { h in
            h.counter("llm_optimization_runs_total", "llm.optimization.runs", [("status", runStatus)],
                      "Optimization runs (one per proxied request), by outcome", registry, otel).add(Int64(1))

            let optimizationMillis = (r.compression?.duration ?? r.timings.overhead).seconds * 1000
            h.histogram("llm_optimization_duration_milliseconds", "llm.optimization.duration", [],
                        Self.optimizationMillisBuckets,
                        "Time spent optimizing a request (compression when it ran, else the sidecar's own time), ms",
                        registry, otel).record(optimizationMillis)

            if r.tokensSaved > 0 {
                h.counter("llm_optimization_tokens_saved_total", "llm.optimization.tokens_saved",
                          [("gen_ai.request.model", served)], "Prompt tokens saved by optimization", registry, otel)
                    .add(Int64(r.tokensSaved))
            }
            if let p = r.costSavedPicoUSD, p != 0 {
                h.counter("llm_optimization_cost_saved_usd_total", "llm.optimization.cost_saved", [],
                          "Cost saved by optimization, USD", registry, otel, floatingPoint: true)
                    .add(Double(p) / 1e12)
            }

            // gen_ai.client.*
            if let op {
                var genAI: [(String, String)] = [("gen_ai.operation.name", op),
                                                 ("gen_ai.provider.name", builder.provider(r)),
                                                 ("gen_ai.request.model", served)]
                if let m = r.responseModel { genAI.append(("gen_ai.response.model", m)) }
                if let a = r.serverAddress { genAI.append(("server.address", a)) }
                if let u = r.usage, !failed {
                    for (type, n) in [("input", u.promptTokens), ("output", u.completionTokens)] {
                        h.histogram("gen_ai_client_token_usage", "gen_ai.client.token.usage",
                                    genAI + [("gen_ai.token.type", type)], Self.tokenBuckets,
                                    "Tokens used per request, by type", registry, otel).record(Double(n))
                    }
                }
                var durationLabels = genAI
                if failed { durationLabels.append(("error.type", r.errorType ?? "http_\(r.status)")) }
                h.histogram("gen_ai_client_operation_duration_seconds", "gen_ai.client.operation.duration",
                            durationLabels, Self.durationBuckets, "GenAI operation duration as the client sees it, s",
                            registry, otel).record(r.timings.total.seconds)
                if let ttfc = r.timings.timeToFirstChunk, r.stream {
                    h.histogram("gen_ai_client_operation_time_to_first_chunk_seconds",
                                "gen_ai.client.operation.time_to_first_chunk", genAI, Self.firstChunkBuckets,
                                "Time to the first response chunk of streamed requests, s", registry, otel)
                        .record(ttfc.seconds)
                }
            }

            // The proxy's own.
            h.counter("auto_optimizer_requests_total", "auto_optimizer.requests",
                      [("http.response.status_code", String(r.status)), ("endpoint", r.endpoint)],
                      "Proxied requests by HTTP status sent to the client", registry, otel).add(Int64(1))
            h.histogram("auto_optimizer_added_latency_seconds", "auto_optimizer.added_latency", [],
                        Self.addedLatencyBuckets, "Latency the sidecar adds to a request (upstream time excluded), s",
                        registry, otel).record(r.timings.overhead.seconds)
            if let e = r.errorType, e.hasPrefix("upstream") || r.status == 502 || r.status == 504 {
                h.counter("auto_optimizer_upstream_errors_total", "auto_optimizer.upstream.errors", [("error.type", e)],
                          "Upstream failures (unreachable, timeout, reset)", registry, otel).add(Int64(1))
            }
        }
    }

    /// Brings `auto_optimizer_telemetry_dropped_total` up to date with the pipeline's and accountant's counts.
    public func updateDropped(_ totals: [String: Int]) {
        let deltas = droppedSeen.withLockedValue { seen -> [(String, Int)] in
            var out: [(String, Int)] = []
            for (reason, total) in totals where total > seen[reason, default: 0] {
                out.append((reason, total - seen[reason, default: 0]))
                seen[reason] = total
            }
            return out
        }
        // Present with zero even when nothing was dropped.
        _ = counter("auto_optimizer_telemetry_dropped_total", labels: [("reason", "queue_full")],
                                 help: "Telemetry items dropped, by reason")
        for (reason, n) in deltas {
            counter("auto_optimizer_telemetry_dropped_total", labels: [("reason", reason)],
                                 help: "Telemetry items dropped, by reason").increment(by: Int64(n))
            otel.map { CoreMetrics.Counter(label: "auto_optimizer.telemetry.dropped", dimensions: [("reason", reason)], factory: $0)
                .increment(by: Int64(n)) }
        }
    }

    /// A Prometheus counter; `name` is the full name (`..._total`).
    private func counter(_ name: String, labels: [(String, String)], help: String) -> Prometheus.Counter {
        registry.makeCounter(descriptor: Self.descriptor(name, help), labels: labels)
    }

    private func histogram(_ name: String, labels: [(String, String)], buckets: [Double], help: String)
        -> Prometheus.ValueHistogram
    {
        registry.makeValueHistogram(descriptor: Self.descriptor(name, help), labels: labels, buckets: buckets)
    }

    /// The descriptor joins metric name and unit with `_`: split the unit suffix off the full name.
    static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        for unit in ["total", "seconds", "milliseconds"] where name.hasSuffix("_" + unit) {
            return MetricNameDescriptor(metricName: String(name.dropLast(unit.count + 1)), unitName: unit, helpText: help)
        }
        return MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    /// Prometheus label names: dots become underscores.
    /// Cached metric handles: one Prometheus series and (when OTLP metrics are on) one swift-metrics instrument per
    /// metric name and label set.
    struct Handles {
        struct CounterPair {
            var prometheus: Prometheus.Counter
            var otel: CoreMetrics.Counter?
            var otelFloat: CoreMetrics.FloatingPointCounter?

            func add(_ n: Int64) {
                prometheus.increment(by: n)
                otel?.increment(by: n)
            }

            func add(_ x: Double) {
                prometheus.increment(by: x)
                otelFloat?.increment(by: x)
            }
        }

        struct HistogramPair {
            var prometheus: Prometheus.ValueHistogram
            var otel: CoreMetrics.Recorder?

            func record(_ x: Double) {
                prometheus.record(x)
                otel?.record(x)
            }
        }

        var counters: [String: CounterPair] = [:]
        var histograms: [String: HistogramPair] = [:]

        static func key(_ name: String, _ labels: [(String, String)]) -> String {
            var k = name
            for (n, v) in labels {
                k += "\u{1}"
                k += n
                k += "\u{2}"
                k += v
            }
            return k
        }

        mutating func counter(_ name: String, _ otelName: String, _ labels: [(String, String)], _ help: String,
                              _ registry: PrometheusCollectorRegistry, _ otel: (any MetricsFactory)?,
                              floatingPoint: Bool = false) -> CounterPair
        {
            let k = Self.key(name, labels)
            if let c = counters[k] { return c }
            let prom = registry.makeCounter(descriptor: TelemetryMetrics.descriptor(name, help),
                                            labels: TelemetryMetrics.prom(labels))
            let c = CounterPair(
                prometheus: prom,
                otel: floatingPoint ? nil : otel.map { CoreMetrics.Counter(label: otelName, dimensions: labels, factory: $0) },
                otelFloat: floatingPoint
                    ? otel.map { CoreMetrics.FloatingPointCounter(label: otelName, dimensions: labels, factory: $0) } : nil)
            counters[k] = c
            return c
        }

        mutating func histogram(_ name: String, _ otelName: String, _ labels: [(String, String)], _ buckets: [Double],
                                _ help: String, _ registry: PrometheusCollectorRegistry,
                                _ otel: (any MetricsFactory)?) -> HistogramPair
        {
            let k = Self.key(name, labels)
            if let h = histograms[k] { return h }
            let prom = registry.makeValueHistogram(descriptor: TelemetryMetrics.descriptor(name, help),
                                                   labels: TelemetryMetrics.prom(labels), buckets: buckets)
            let h = HistogramPair(prometheus: prom, otel: otel.map {
                CoreMetrics.Recorder(label: otelName, dimensions: labels, aggregate: true, factory: $0)
            })
            histograms[k] = h
            return h
        }
    }

    static func prom(_ labels: [(String, String)]) -> [(String, String)] {
        labels.map { ($0.0.replacingOccurrences(of: ".", with: "_"), $0.1) }
    }
}
