import Foundation
import Catalog

/// The API endpoint of a request, as rules match it (`match.endpoint`).
public enum PolicyEndpoint: String, Sendable, Hashable, CaseIterable {
    case chatCompletions = "chat.completions"
    case completions
    case embeddings
    case responses
    /// Any other path: only rules without an `endpoint` condition match it.
    case other

    /// The endpoint of a request path ("/v1/chat/completions" -> `.chatCompletions`).
    public init(path: String) {
        var p = Substring(path)
        if let q = p.firstIndex(of: "?") { p = p[..<q] }
        while p.hasSuffix("/") { p = p.dropLast() }
        if p.hasSuffix("/chat/completions") {
            self = .chatCompletions
        } else if p.hasSuffix("/completions") {
            self = .completions
        } else if p.hasSuffix("/embeddings") {
            self = .embeddings
        } else if p.hasSuffix("/responses") {
            self = .responses
        } else {
            self = .other
        }
    }
}

/// Where an upstream's API key comes from (YAML `api_key_env` / `api_key_file`).
public enum APIKeySource: Sendable, Hashable {
    /// The client's `Authorization` header passes through (the default).
    case passthrough
    /// `Bearer $NAME`, read from the environment by the executable.
    case environment(String)
    /// `Bearer <file contents, trimmed>`, read by the executable (a mounted Kubernetes secret).
    case file(String)
}

/// One upstream provider endpoint (YAML `upstreams.NAME`).
public struct UpstreamConfig: Sendable, Hashable {
    /// The key under `upstreams`.
    public var name: String
    /// Base URL with the version prefix (`url`), e.g. "https://api.openai.com/v1".
    public var url: String
    public var apiKey: APIKeySource
    /// `connect_timeout`; nil: the executable's `--connect-timeout`.
    public var connectTimeout: Duration?
    /// `read_timeout` (wait for the next byte); nil: the executable's `--upstream-timeout`.
    public var readTimeout: Duration?
    /// `max_connections` per event loop; nil: unlimited (the HTTP client's default).
    public var maxConnections: Int?

    public init(
        name: String, url: String, apiKey: APIKeySource = .passthrough, connectTimeout: Duration? = nil,
        readTimeout: Duration? = nil, maxConnections: Int? = nil
    ) {
        self.name = name
        self.url = url
        self.apiKey = apiKey
        self.connectTimeout = connectTimeout
        self.readTimeout = readTimeout
        self.maxConnections = maxConnections
    }
}

/// The retry budget of one request (YAML `retry: {max_attempts:, backoff: {initial:, max:}}`).
///
/// Attempts go through ``PolicyDecision/upstream`` then ``PolicyDecision/fallback`` in order (see
/// ``PolicyDecision/upstream(forAttempt:)``); the last one is repeated while attempts remain. Only failures before
/// any response byte reached the client are retried: connect failure, timeout, 429, 5xx.
public struct RetrySettings: Sendable, Hashable {
    /// Upstream attempts for one request, the first included (>= 1). Default: one per upstream of the chain.
    public var maxAttempts: Int
    /// Delay before the second attempt; doubled for each later one (`backoff.initial`, default 100ms).
    public var initialBackoff: Duration
    /// Cap of the delay (`backoff.max`, default 2s).
    public var maxBackoff: Duration

    public init(maxAttempts: Int, initialBackoff: Duration = .milliseconds(100), maxBackoff: Duration = .seconds(2)) {
        self.maxAttempts = maxAttempts
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
    }

    /// The delay before attempt `n` (1-based): zero for the first, then `min(initial * 2^(n-2), max)`.
    public func delay(beforeAttempt n: Int) -> Duration {
        guard n >= 2 else { return .zero }
        var d = initialBackoff
        var k = 2
        while k < n && d < maxBackoff {
            d = d * 2
            k += 1
        }
        return min(d, maxBackoff)
    }
}

/// Conditions of a rule (YAML `match`); every condition given must hold, an absent one always holds.
public struct MatchConfig: Sendable, Hashable {
    /// `app`: one glob or a list (any of them).
    public var apps: [Glob] = []
    /// `model`: the requested model, one glob or a list.
    public var models: [Glob] = []
    /// `endpoint`: one or a list.
    public var endpoints: Set<PolicyEndpoint>? = nil
    /// `prompt_tokens: {min:, max:}` (inclusive). A request whose size is unknown does not match.
    public var promptTokensMin: Int? = nil
    public var promptTokensMax: Int? = nil
    /// `tools: true|false`: the request has tool (or function) definitions.
    public var tools: Bool? = nil
    /// `json_mode: true|false`: `response_format` is `json_object` or `json_schema`.
    public var jsonMode: Bool? = nil
    /// `metadata: {key: glob}`: each key present with a matching value.
    public var metadata: [MetadataCondition] = []

    public init() {}
}

/// One `metadata` condition.
public struct MetadataCondition: Sendable, Hashable {
    public var key: String
    public var value: Glob
}

/// What `select` optimizes (YAML `optimize_for`).
public enum SelectionObjective: String, Sendable, Hashable, CaseIterable {
    case cost, latency, quality
}

/// A required model feature (YAML `constraints.features`).
public enum ModelFeature: String, Sendable, Hashable, CaseIterable {
    case tools
    case jsonMode = "json_mode"
    case vision, streaming, reasoning
}

/// The `select` action: pick a model from the catalog (see ``ModelSelector``).
public struct SelectConfig: Sendable, Hashable {
    public var optimizeFor: SelectionObjective
    /// `constraints.min_context_window`.
    public var minContextWindow: Int?
    /// `constraints.features`; the request's own needs (tools, JSON mode) are added per request.
    public var features: Set<ModelFeature>
    /// `constraints.max_cost_per_request_usd`: estimated as prompt tokens at the input price plus
    /// `expected_output_tokens` at the output price.
    public var maxCostPerRequestUSD: Decimal?
    /// `constraints.exclude_providers`.
    public var excludeProviders: Set<String>
    /// `constraints.providers`: when non-empty, only these providers.
    public var providers: Set<String>
    /// `constraints.models`: when non-empty, only models matching one of these globs.
    public var models: [Glob]
    /// `expected_output_tokens` (default 256): the completion size assumed for cost and context estimates.
    public var expectedOutputTokens: Int

    public init(
        optimizeFor: SelectionObjective, minContextWindow: Int? = nil, features: Set<ModelFeature> = [],
        maxCostPerRequestUSD: Decimal? = nil, excludeProviders: Set<String> = [], providers: Set<String> = [],
        models: [Glob] = [], expectedOutputTokens: Int = 256
    ) {
        self.optimizeFor = optimizeFor
        self.minContextWindow = minContextWindow
        self.features = features
        self.maxCostPerRequestUSD = maxCostPerRequestUSD
        self.excludeProviders = excludeProviders
        self.providers = providers
        self.models = models
        self.expectedOutputTokens = expectedOutputTokens
    }
}

/// A prompt compression profile (YAML `compression_profiles.NAME`, or inline under a rule's `compression`).
/// The `Compression` module does the work; the policy only says how much and where.
public struct CompressionProfile: Sendable, Hashable {
    public var name: String
    /// `target_ratio`: fraction of the touched messages' tokens to keep (0.5 keeps half).
    public var targetRatio: Double = 0.5
    /// `min_prompt_tokens`: prompts smaller than this are sent as they are.
    public var minPromptTokens: Int = 1000
    /// `min_message_tokens`: shorter messages are not touched by the lossy steps.
    public var minMessageTokens: Int = 128
    /// `preserve_questions`: keep sentences that ask something.
    public var preserveQuestions: Bool = true
    /// `preserve_sections`: markers of blocks kept verbatim (a line containing one, up to the next blank line).
    public var preserveSections: [String] = []
    /// `min_quality` (0...1): below this quality score the original prompt is sent.
    public var minQuality: Double = 0.5
    /// `roles`: which messages may be touched (user, tool, assistant). Never the system prompt or the last user
    /// turn.
    public var roles: [String] = ["user", "tool"]
    /// `steps`: lossless, selection, pruning.
    public var lossless = true
    public var selection = true
    public var pruning = true
    /// `shorten_headers`: the lossy steps shorten `Document [i](Title: t)` headers to `Document [i](t)`.
    public var shortenHeaders = true

    public init(name: String) { self.name = name }

    /// Profiles every policy (and `auto-optimizer compress`) knows without defining them.
    public static let builtIn: [String: CompressionProfile] = {
        var d = CompressionProfile(name: "default")
        d.targetRatio = 0.5
        var a = CompressionProfile(name: "aggressive")
        a.targetRatio = 0.25
        a.minQuality = 0.4
        var l = CompressionProfile(name: "lossless")
        l.targetRatio = 1
        l.selection = false
        l.pruning = false
        l.minPromptTokens = 0
        return ["default": d, "aggressive": a, "lossless": l]
    }()
}

/// One rule (an element of YAML `rules`).
public struct RuleConfig: Sendable, Hashable {
    /// `name` (default "rule-N", 1-based); reported in `x-auto-optimizer-rule`.
    public var name: String
    public var match: MatchConfig
    /// `set_model`: the model to serve instead of the requested one.
    public var setModel: String?
    /// `select`: choose the model from the catalog. Exclusive with `set_model`.
    public var select: SelectConfig?
    /// `upstream`; nil: the default.
    public var upstream: String?
    /// `fallback`; nil: the default's.
    public var fallback: [String]?
    /// `retry`; nil: the default's.
    public var retry: RetrySettings?
    /// `compression`: a profile name or an inline profile; nil: the default's (`defaults.compression`).
    public var compression: CompressionProfile?
    /// `compression: off`: no compression even when the defaults compress.
    public var compressionOff = false

    public init(
        name: String, match: MatchConfig = MatchConfig(), setModel: String? = nil, select: SelectConfig? = nil,
        upstream: String? = nil, fallback: [String]? = nil, retry: RetrySettings? = nil
    ) {
        self.name = name
        self.match = match
        self.setModel = setModel
        self.select = select
        self.upstream = upstream
        self.fallback = fallback
        self.retry = retry
    }
}

/// YAML `defaults`.
public struct DefaultsConfig: Sendable, Hashable {
    /// `upstream`; may be omitted when there is exactly one upstream.
    public var upstream: String
    /// `fallback`: tried in order on connect failure, timeout, 429 or 5xx, before any byte reached the client.
    public var fallback: [String]
    /// `retry`; default: one attempt per upstream of the chain, backoff 100ms doubling up to 2s.
    public var retry: RetrySettings?
    /// `compression`: the profile for requests no rule gives one (nil: no compression).
    public var compression: CompressionProfile?

    public init(upstream: String, fallback: [String] = [], retry: RetrySettings? = nil) {
        self.upstream = upstream
        self.fallback = fallback
        self.retry = retry
    }
}

/// What a budget does when exceeded (YAML `action`).
public enum BudgetAction: Sendable, Hashable {
    /// Serve `downgrade_to` instead.
    case downgrade(to: String)
    /// Answer 429 with an OpenAI-style error.
    case reject
}

/// One element of YAML `budgets`: spend limits of one application.
///
/// Spend is what ``BudgetTracker`` recorded for the app (actual cost of served requests). Several entries may name
/// the same app (say, downgrade at $5/hour, reject at $50/day): every exceeded entry applies, a reject wins.
public struct BudgetConfig: Sendable, Hashable {
    /// `app`: the exact application id.
    public var app: String
    /// `usd_per_hour`: spend over the rolling last 60 minutes (see ``BudgetTracker``).
    public var usdPerHour: Decimal?
    /// `usd_per_day`: spend over the rolling last 24 hours.
    public var usdPerDay: Decimal?
    public var action: BudgetAction

    public init(app: String, usdPerHour: Decimal? = nil, usdPerDay: Decimal? = nil, action: BudgetAction) {
        self.app = app
        self.usdPerHour = usdPerHour
        self.usdPerDay = usdPerDay
        self.action = action
    }
}

/// A validated policy document (schema version 1). Build one with ``parse(yaml:file:catalog:)`` or
/// ``load(path:catalog:)``, then ``CompiledPolicy/init(document:catalog:)``.
public struct PolicyDocument: Sendable {
    /// `version`: 1.
    public var version: Int
    /// `upstreams`, in file order.
    public var upstreams: [UpstreamConfig]
    public var defaults: DefaultsConfig
    /// `rules`, in file order: the first match wins.
    public var rules: [RuleConfig]
    public var budgets: [BudgetConfig]
    /// `compression_profiles`, in file order.
    public var compressionProfiles: [CompressionProfile] = []
    /// Warnings found while validating (unknown models, say); the document is valid.
    public var warnings: [PolicyDiagnostic]

    public init(
        version: Int = 1, upstreams: [UpstreamConfig], defaults: DefaultsConfig, rules: [RuleConfig] = [],
        budgets: [BudgetConfig] = [], warnings: [PolicyDiagnostic] = []
    ) {
        self.version = version
        self.upstreams = upstreams
        self.defaults = defaults
        self.rules = rules
        self.budgets = budgets
        self.warnings = warnings
    }

    /// The built-in policy when no file is given: one upstream named `default` at `upstreamURL`, client keys passed
    /// through, no rules (passthrough plus accounting), no budgets.
    public static func builtIn(upstreamURL: String) -> PolicyDocument {
        PolicyDocument(
            upstreams: [UpstreamConfig(name: "default", url: upstreamURL)],
            defaults: DefaultsConfig(upstream: "default"))
    }

    /// Reads and validates a policy file.
    public static func load(path: String, catalog: ModelCatalog?) throws(PolicyError) -> PolicyDocument {
        let text: String
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            guard let s = String(data: data, encoding: .utf8) else {
                throw PolicyError(
                    code: .unreadable, message: "\(path) is not UTF-8 text",
                    diagnostics: [.init(severity: .error, file: path, line: 0, column: 0, message: "not UTF-8 text")])
            }
            text = s
        } catch let error as PolicyError {
            throw error
        } catch {
            throw PolicyError(
                code: .unreadable, message: "cannot read policy file \(path)",
                diagnostics: [
                    .init(severity: .error, file: path, line: 0, column: 0, message: "cannot read the file: \(error.localizedDescription)")
                ], cause: error)
        }
        return try parse(yaml: text, file: path, catalog: catalog)
    }
}

