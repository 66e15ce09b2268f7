import Foundation

/// Telemetry settings: the standard OpenTelemetry SDK environment variables plus the sidecar's own. Built from an
/// injected environment so tests can drive it (`TelemetryConfiguration(environment:)`); flags override fields.
public struct TelemetryConfiguration: Sendable {
    public enum Mode: String, Sendable, CaseIterable {
        /// OTLP export when an endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or a signal-specific one), else off.
        case auto
        /// OTLP export; without an endpoint variable the spec's default (`http://localhost:4318`/`:4317`) is used.
        case otlp
        /// Spans printed to standard output, one JSON object a line; no exporter traffic.
        case stdout
        /// No spans, no OTLP metrics (Prometheus `/metrics` still serves).
        case off
    }

    public enum OTLPProtocol: String, Sendable {
        case grpc
        case httpProtobuf = "http/protobuf"
    }

    /// Flag `--telemetry`, env `AUTO_OPTIMIZER_TELEMETRY`. Default `auto`.
    public var mode: Mode = .auto
    /// `OTEL_SERVICE_NAME` (else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`). Default `llm-auto-optimizer`.
    public var serviceName = "llm-auto-optimizer"
    /// `OTEL_RESOURCE_ATTRIBUTES` (`k=v,k2=v2`, percent-decoded).
    public var resourceAttributes: [(String, String)] = []
    /// Trace export endpoint: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` verbatim, else `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// plus `/v1/traces` for HTTP (as is for gRPC). nil: no endpoint configured.
    public var tracesEndpoint: String?
    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`. Default `http/protobuf`.
    public var tracesProtocol: OTLPProtocol = .httpProtobuf
    /// `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (`k=v,...`).
    public var tracesHeaders: [(String, String)] = []
    /// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` / `OTEL_EXPORTER_OTLP_TIMEOUT` (ms). Default 10 s.
    public var exportTimeout: Duration = .seconds(10)
    /// `OTEL_BSP_SCHEDULE_DELAY` (ms). Default 5000.
    public var scheduleDelay: Duration = .milliseconds(5000)
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`. Default 512.
    public var maxExportBatchSize = 512
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: spans waiting for the next export; beyond it batches are sealed early and go to
    /// the retry backlog. Default 2048.
    public var maxQueueSize = 2048
    /// Whether metrics are exported over OTLP: an endpoint is set and `OTEL_METRICS_EXPORTER` is not `none`.
    public var metricsOTLP = false
    /// Whether spans are exported: `OTEL_TRACES_EXPORTER` is not `none`.
    public var tracesEnabled = true
    /// `OTEL_TRACES_SAMPLER`: `always_off` exports nothing; other values behave as `parentbased_always_on`.
    public var sampleAll = true

    /// Encoded batches kept in memory while the collector is unreachable, in bytes, before they are spilled to the
    /// spool. Env `AUTO_OPTIMIZER_TELEMETRY_MEMORY_BYTES`. Default 4 MiB.
    public var memoryBufferBytes = 4 * 1024 * 1024
    /// Spool directory (LZ4-compressed OTLP batches waiting for the collector; survives restarts). Flag
    /// `--telemetry-spool`, env `AUTO_OPTIMIZER_TELEMETRY_SPOOL`. nil: no spool (memory only).
    public var spoolDirectory: String?
    /// Largest spool size in bytes; the oldest batches are dropped (and counted) beyond it. Env
    /// `AUTO_OPTIMIZER_TELEMETRY_SPOOL_MAX_BYTES`. Default 64 MiB.
    public var spoolMaxBytes = 64 * 1024 * 1024
    /// Longest wait between retries while the collector is down. Env `AUTO_OPTIMIZER_TELEMETRY_RETRY_MAX_MS`.
    /// Default 5 s.
    public var retryMaxDelay: Duration = .seconds(5)
    /// Prometheus text on `GET /metrics`. Flag `--metrics-port` (0: off). Default 9090.
    public var metricsPort = 9090
    /// Address for `/metrics`. Default: the sidecar's `--host`.
    public var metricsHost = "127.0.0.1"

    public init() {}

    /// Reads the standard `OTEL_*` variables and the sidecar's own from `environment`.
    public init(environment env: [String: String]) throws(TelemetryError) {
        func nonEmpty(_ k: String) -> String? {
            guard let v = env[k]?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
            return v
        }
        func millis(_ k: String) throws(TelemetryError) -> Duration? {
            guard let v = nonEmpty(k) else { return nil }
            guard let ms = Int(v), ms >= 0 else {
                throw TelemetryError(code: .invalidConfiguration, message: "\(k)='\(v)' is not a whole number of ms")
            }
            return .milliseconds(ms)
        }
        func int(_ k: String, min: Int = 1) throws(TelemetryError) -> Int? {
            guard let v = nonEmpty(k) else { return nil }
            guard let n = Int(v), n >= min else {
                throw TelemetryError(code: .invalidConfiguration, message: "\(k)='\(v)' must be a whole number >= \(min)")
            }
            return n
        }
        if let m = nonEmpty("AUTO_OPTIMIZER_TELEMETRY") {
            guard let mode = Mode(rawValue: m) else {
                throw TelemetryError(code: .invalidConfiguration,
                                     message: "AUTO_OPTIMIZER_TELEMETRY='\(m)': use auto, otlp, stdout or off")
            }
            self.mode = mode
        }
        resourceAttributes = Self.parsePairs(nonEmpty("OTEL_RESOURCE_ATTRIBUTES") ?? "")
        if let n = resourceAttributes.last(where: { $0.0 == "service.name" })?.1 { serviceName = n }
        if let n = nonEmpty("OTEL_SERVICE_NAME") { serviceName = n }
        resourceAttributes.removeAll { $0.0 == "service.name" }

        let proto = nonEmpty("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") ?? nonEmpty("OTEL_EXPORTER_OTLP_PROTOCOL")
        switch proto {
        case nil, "http/protobuf": tracesProtocol = .httpProtobuf
        case "grpc": tracesProtocol = .grpc
        case let other?:
            throw TelemetryError(code: .invalidConfiguration,
                                 message: "OTEL_EXPORTER_OTLP_PROTOCOL='\(other)': use grpc or http/protobuf")
        }
        if let e = nonEmpty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            tracesEndpoint = e
        } else if let e = nonEmpty("OTEL_EXPORTER_OTLP_ENDPOINT") {
            tracesEndpoint = tracesProtocol == .grpc ? e : Self.appendPath(e, "v1/traces")
        }
        tracesHeaders = Self.parsePairs(nonEmpty("OTEL_EXPORTER_OTLP_HEADERS") ?? "")
            + Self.parsePairs(nonEmpty("OTEL_EXPORTER_OTLP_TRACES_HEADERS") ?? "")
        if let t = try millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") {
            exportTimeout = t
        } else if let t = try millis("OTEL_EXPORTER_OTLP_TIMEOUT") {
            exportTimeout = t
        }
        if let d = try millis("OTEL_BSP_SCHEDULE_DELAY") { scheduleDelay = d }
        if let n = try int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") { maxExportBatchSize = n }
        if let n = try int("OTEL_BSP_MAX_QUEUE_SIZE") { maxQueueSize = n }
        tracesEnabled = nonEmpty("OTEL_TRACES_EXPORTER").map { $0 != "none" } ?? true
        sampleAll = nonEmpty("OTEL_TRACES_SAMPLER") != "always_off"
        let metricsEndpoint = nonEmpty("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") ?? nonEmpty("OTEL_EXPORTER_OTLP_ENDPOINT")
        metricsOTLP = metricsEndpoint != nil && nonEmpty("OTEL_METRICS_EXPORTER").map { $0 != "none" } ?? true
        if let n = try int("AUTO_OPTIMIZER_TELEMETRY_MEMORY_BYTES", min: 0) { memoryBufferBytes = n }
        spoolDirectory = nonEmpty("AUTO_OPTIMIZER_TELEMETRY_SPOOL")
        if let n = try int("AUTO_OPTIMIZER_TELEMETRY_SPOOL_MAX_BYTES", min: 4096) { spoolMaxBytes = n }
        if let d = try millis("AUTO_OPTIMIZER_TELEMETRY_RETRY_MAX_MS") { retryMaxDelay = d }
    }

    /// Whether spans leave the process over OTLP.
    public var exportsSpansOverOTLP: Bool {
        guard tracesEnabled && sampleAll else { return false }
        switch mode {
        case .auto: return tracesEndpoint != nil
        case .otlp: return true
        case .stdout, .off: return false
        }
    }

    /// Whether metrics leave the process over OTLP (swift-otel's exporter).
    public var exportsMetricsOverOTLP: Bool {
        switch mode {
        case .auto: return metricsOTLP
        case .otlp: return true
        case .stdout, .off: return false
        }
    }

    /// The endpoint spans go to (the spec's default when none is set in `otlp` mode).
    public var effectiveTracesEndpoint: String {
        tracesEndpoint ?? (tracesProtocol == .grpc ? "http://localhost:4317" : "http://localhost:4318/v1/traces")
    }

    static func appendPath(_ base: String, _ path: String) -> String {
        base.hasSuffix("/") ? base + path : base + "/" + path
    }

    /// `k=v,k2=v2` with percent-encoded values (W3C baggage-like, as the OTel spec says).
    static func parsePairs(_ s: String) -> [(String, String)] {
        s.split(separator: ",").compactMap { item in
            guard let eq = item.firstIndex(of: "=") else { return nil }
            let k = item[..<eq].trimmingCharacters(in: .whitespaces)
            let v = item[item.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            guard !k.isEmpty else { return nil }
            return (k, v.removingPercentEncoding ?? v)
        }
    }
}

/// The telemetry module's one error type: an opaque code, a human message, an optional cause.
public struct TelemetryError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        public static let invalidConfiguration = Code(raw: "invalid_configuration")
        public static let exportFailed = Code(raw: "export_failed")
        public static let exportRejected = Code(raw: "export_rejected")
        public static let spool = Code(raw: "spool")
        public static let bind = Code(raw: "bind")
        public var description: String { raw }
    }

    public var code: Code
    public var message: String
    public var cause: (any Error)?

    public init(code: Code, message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// Safe as a metric label.
    public var shortDescription: String { code.raw }
    public var description: String { cause.map { "\(message): \($0)" } ?? message }
}
