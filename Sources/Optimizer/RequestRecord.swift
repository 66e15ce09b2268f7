import Foundation
import Wire

/// Everything the sidecar knows about one proxied request once it is over: what was asked, what was served,
/// tokens, cost, savings and timing. Built by the `Accountant`, handed to sinks (telemetry, events, the ledger).
public struct RequestRecord: Sendable, Equatable {
    public struct Timings: Sendable, Equatable {
        /// From the request head's arrival to the response's last byte.
        public var total: Duration = .zero
        /// From the request head to the first response body byte sent to the client.
        public var timeToFirstChunk: Duration?
        /// From handing the request to the upstream client to its last response byte.
        public var upstream: Duration = .zero
        /// Time spent inside the sidecar, upstream excluded.
        public var overhead: Duration = .zero
        public init() {}
    }

    public var requestID: String
    /// The `x-app-id` request header, else the sidecar's own application id.
    public var application: String
    /// `chat.completions`, `completions`, `embeddings`, `responses`, or `other`.
    public var endpoint: String
    public var requestedModel: String?
    public var servedModel: String?
    /// The model the upstream says it used.
    public var responseModel: String?
    public var responseID: String?
    public var finishReasons: [String] = []
    public var stream: Bool = false
    /// HTTP status sent to the client.
    public var status: Int = 0
    /// Short error kind when the request failed (`upstream_timeout`, `upstream_unreachable`, `http_4xx`, ...).
    public var errorType: String?

    /// Prompt tokens of the request as the client sent it, counted by the sidecar.
    public var promptTokensOriginal: Int?
    /// Prompt tokens of the request as sent upstream, counted by the sidecar.
    public var promptTokensOptimized: Int?
    /// True when the model's encoding is unknown and o200k_base stood in.
    public var tokenCountIsEstimate: Bool = false

    /// Upstream-reported usage, or the sidecar's own count when the upstream sent none (`usageEstimated`).
    public var usage: Usage?
    public var usageEstimated: Bool = false

    /// What the request cost on the served model, in pico-dollars (1e-12 USD, exact for catalog prices).
    public var costPicoUSD: Int64?
    /// What the original prompt would have cost on the originally requested model, in pico-dollars.
    public var counterfactualCostPicoUSD: Int64?
    public var tokensSaved: Int = 0
    /// Counterfactual minus actual cost, in pico-dollars.
    public var costSavedPicoUSD: Int64?

    /// What the request cost on the served model, USD.
    public var costUSD: Decimal? {
        get { costPicoUSD.map(USD.fromPico) }
        set { costPicoUSD = newValue.map(USD.toPico) }
    }
    /// What the original prompt would have cost on the originally requested model, USD.
    public var counterfactualCostUSD: Decimal? {
        get { counterfactualCostPicoUSD.map(USD.fromPico) }
        set { counterfactualCostPicoUSD = newValue.map(USD.toPico) }
    }
    /// Counterfactual minus actual cost, USD.
    public var costSavedUSD: Decimal? {
        get { costSavedPicoUSD.map(USD.fromPico) }
        set { costSavedPicoUSD = newValue.map(USD.toPico) }
    }

    /// What prompt compression did (nil: no compression profile applied).
    public var compression: CompressionSummary?

    public var timings = Timings()
    /// The policy rule that decided the request (nil: the policy's defaults).
    public var rule: String?
    /// The upstream (policy name) that served the request, and how many attempts it took.
    public var upstream: String?
    public var attempts: Int = 1

    // Telemetry (issue 6).
    /// The request's W3C trace context (nil when trace context is off).
    public var trace: TraceContext?
    /// Wall clock at the end of the exchange, nanoseconds since the Unix epoch (span end; start = end - total).
    public var endedAtUnixNano: UInt64 = 0
    /// The upstream host and port the request went to (`server.address`, `server.port`).
    public var serverAddress: String?
    public var serverPort: Int?
    /// max_tokens, temperature, top_p as the client sent them.
    public var parameters = RequestParameters()

    public init(requestID: String, application: String, endpoint: String) {
        self.requestID = requestID
        self.application = application
        self.endpoint = endpoint
    }
}

/// Receives finished records. Must not block: implementations hand work to their own queues.
public protocol RecordSink: Sendable {
    func record(_ record: RequestRecord)
}
