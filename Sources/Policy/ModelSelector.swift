import Catalog
import Foundation

/// The `select` action (the design's ModelSelector): picks the catalog model that best serves an objective under
/// constraints, with a human-readable rationale.
///
/// Built once per rule when the policy is compiled: the catalog is filtered by the request-independent constraints
/// (features, context window, providers, model globs) and sorted by the objective. Per request, only what depends on
/// the request is checked, walking that sorted list: the request's own needs (tools, JSON mode), its prompt fitting
/// the context window (prompt + `expected_output_tokens`), and the estimated cost per request. No allocation.
///
/// Catalog entries with no features at all (embedding models) are never selected.
///
/// **Scores.** The catalog has prices, context windows and features, but no measured latency or quality, so two
/// documented proxies derive from it (replace them with measured p95 latency and eval scores when those exist):
/// - *cost*: the estimated request cost, prompt tokens x input price + expected output tokens x output price; with
///   the prompt size unknown, the blended price `(3 x input + output) / 4` per 1M tokens (a 3:1 input:output mix).
/// - *latency* (lower is faster): `log2(blended price + 0.01) + (reasoning ? 3 : 0)`. Price tracks model size, and
///   size tracks time per token; reasoning models think before the first visible token.
/// - *quality* (higher is better): `log2(output price + 0.01) + (reasoning ? 1.5 : 0) + log2(context window / 128k)`.
///   Output price tracks the model tier; the context term demotes legacy models (gpt-4, 8k) that are expensive but
///   older. Ties break by lower blended price, then id.
public final class ModelSelector: Sendable {
    /// Trivially copyable (no references): the per-request walk copies no strings.
    struct Candidate: Sendable {
        let contextWindow: Int
        let tools: Bool
        let jsonMode: Bool
        /// Pico-dollars (1e-12 USD) per token.
        let inputPico: Int64
        let outputPico: Int64
        let blendedPer1M: Double
        let latencyScore: Double
        let qualityScore: Double
    }

    public let config: SelectConfig
    /// Candidates satisfying the static constraints, best first for the objective; `ids[i]`, `providers[i]` name
    /// `candidates[i]`.
    let candidates: [Candidate]
    let ids: [String]
    let providers: [String]
    let maxCostPico: Int64?

    public init(config: SelectConfig, catalog: ModelCatalog) {
        self.config = config
        let entries = Self.candidates(for: config, catalog: catalog)
        var list = entries.map { ($0, Self.candidate($0)) }
        switch config.optimizeFor {
        case .cost:
            list.sort { ($0.1.blendedPer1M, $0.0.id) < ($1.1.blendedPer1M, $1.0.id) }
        case .latency:
            list.sort {
                ($0.1.latencyScore, $0.1.blendedPer1M, $0.0.id) < ($1.1.latencyScore, $1.1.blendedPer1M, $1.0.id)
            }
        case .quality:
            list.sort {
                $0.1.qualityScore != $1.1.qualityScore
                    ? $0.1.qualityScore > $1.1.qualityScore
                    : ($0.1.blendedPer1M, $0.0.id) < ($1.1.blendedPer1M, $1.0.id)
            }
        }
        self.candidates = list.map(\.1)
        self.ids = list.map(\.0.id)
        self.providers = list.map(\.0.provider)
        self.maxCostPico = config.maxCostPerRequestUSD.flatMap(Self.pico)
    }

    /// The ids of the models considered, best first (for `check-config` and tests).
    public var rankedModels: [String] { ids }

    /// Catalog entries that satisfy the request-independent constraints of `config`.
    public static func candidates(for config: SelectConfig, catalog: ModelCatalog) -> [ModelEntry] {
        catalog.entries.values.filter { e in
            let f = e.features
            guard f.tools || f.jsonMode || f.vision || f.streaming || f.reasoning else { return false }
            for feature in config.features {
                switch feature {
                case .tools: if !f.tools { return false }
                case .jsonMode: if !f.jsonMode { return false }
                case .vision: if !f.vision { return false }
                case .streaming: if !f.streaming { return false }
                case .reasoning: if !f.reasoning { return false }
                }
            }
            if let min = config.minContextWindow, e.contextWindow < min { return false }
            let provider = e.provider.lowercased()
            if config.excludeProviders.contains(provider) { return false }
            if !config.providers.isEmpty && !config.providers.contains(provider) { return false }
            if !config.models.isEmpty && !config.models.contains(where: { $0.matches(e.id) }) { return false }
            if let max = config.maxCostPerRequestUSD.flatMap(pico), let price = pico(e.pricing.output) {
                // Even an empty prompt cannot fit: the expected output alone is too expensive.
                if Int64(config.expectedOutputTokens) * (price / 1_000_000) > max { return false }
            }
            return true
        }.sorted { $0.id < $1.id }
    }

    static func pico(_ usd: Decimal) -> Int64? {
        let scaled = usd * Decimal(sign: .plus, exponent: 12, significand: 1)
        let n = NSDecimalNumber(decimal: scaled)
        guard scaled < Decimal(Int64.max) else { return nil }
        return n.int64Value
    }

    static func candidate(_ e: ModelEntry) -> Candidate {
        let input = NSDecimalNumber(decimal: e.pricing.input).doubleValue
        let output = NSDecimalNumber(decimal: e.pricing.output).doubleValue
        let blended = (3 * input + output) / 4
        let reasoning = e.features.reasoning
        return Candidate(
            contextWindow: e.contextWindow, tools: e.features.tools,
            jsonMode: e.features.jsonMode,
            inputPico: (pico(e.pricing.input) ?? Int64.max / 4) / 1_000_000,
            outputPico: (pico(e.pricing.output) ?? Int64.max / 4) / 1_000_000,
            blendedPer1M: blended,
            latencyScore: log2(blended + 0.01) + (reasoning ? 3 : 0),
            qualityScore: log2(output + 0.01) + (reasoning ? 1.5 : 0) + log2(Double(max(e.contextWindow, 1)) / 128_000))
    }

    /// The model for one request, or nil when no candidate satisfies the request (the requested model is then
    /// served unchanged and the rationale says why).
    public func select(promptTokens: Int?, needsTools: Bool, needsJSONMode: Bool) -> ModelSelection {
        let output = Int64(config.expectedOutputTokens)
        var best = -1
        var bestCost = Int64.max
        var feasible = 0
        candidates.withUnsafeBufferPointer { candidates in
        for i in candidates.indices {
            let c = candidates[i]
            if needsTools && !c.tools { continue }
            if needsJSONMode && !c.jsonMode { continue }
            var cost: Int64 = -1
            if let p = promptTokens {
                if Int64(p) + output > Int64(c.contextWindow) { continue }
                cost = Int64(p) &* c.inputPico &+ output &* c.outputPico
                if let maxCostPico, cost > maxCostPico { continue }
            }
            feasible += 1
            if config.optimizeFor == .cost && cost >= 0 {
                // Exact per-request cost when the prompt size is known; the sorted order breaks ties.
                if cost < bestCost {
                    bestCost = cost
                    best = i
                }
            } else if best < 0 {
                best = i
                bestCost = cost
                if config.optimizeFor != .cost || promptTokens == nil { break }
            }
        }
        }
        return ModelSelection(
            selector: self, index: best, estimatedCostPico: best >= 0 && bestCost >= 0 ? bestCost : nil,
            promptTokens: promptTokens, needsTools: needsTools, needsJSONMode: needsJSONMode,
            feasibleCount: promptTokens == nil || config.optimizeFor == .cost ? feasible : nil)
    }
}

/// The outcome of a ``ModelSelector`` for one request. Cheap to make: the rationale is built only when read.
public struct ModelSelection: Sendable {
    let selector: ModelSelector
    let index: Int
    /// Estimated cost of the request on the selected model, pico-dollars; nil when the prompt size is unknown.
    public let estimatedCostPico: Int64?
    public let promptTokens: Int?
    let needsTools: Bool
    let needsJSONMode: Bool
    let feasibleCount: Int?

    /// The selected model id; nil when no catalog model satisfies the constraints and this request.
    public var model: String? { index >= 0 ? selector.ids[index] : nil }
    public var objective: SelectionObjective { selector.config.optimizeFor }

    /// Estimated cost in USD (exact decimal of the pico-dollar estimate).
    public var estimatedCostUSD: Decimal? {
        estimatedCostPico.map { Decimal(sign: .plus, exponent: -12, significand: Decimal($0)) }
    }

    /// Why this model: the objective, the constraints it satisfies, its score, and the runner-up.
    public var rationale: String {
        let config = selector.config
        var constraints: [String] = []
        let features = config.features.map(\.rawValue).sorted()
        if !features.isEmpty { constraints.append("features \(features.joined(separator: ", "))") }
        if needsTools && !config.features.contains(.tools) { constraints.append("tools (the request has tools)") }
        if needsJSONMode && !config.features.contains(.jsonMode) {
            constraints.append("json_mode (the request asks for JSON)")
        }
        if let m = config.minContextWindow { constraints.append("context window >= \(m)") }
        if let p = promptTokens {
            constraints.append("fits \(p) prompt + \(config.expectedOutputTokens) output tokens")
        }
        if let c = config.maxCostPerRequestUSD {
            constraints.append(
                promptTokens == nil
                    ? "max $\(c) per request (not checked: prompt size unknown)" : "max $\(c) per request")
        }
        if !config.excludeProviders.isEmpty {
            constraints.append("excluding providers \(config.excludeProviders.sorted().joined(separator: ", "))")
        }
        if !config.providers.isEmpty {
            constraints.append("providers \(config.providers.sorted().joined(separator: ", "))")
        }
        if !config.models.isEmpty { constraints.append("models \(config.models.map(\.pattern).joined(separator: ", "))") }
        let under = constraints.isEmpty ? "" : " satisfying \(constraints.joined(separator: "; "))"
        guard index >= 0 else {
            return "select(\(config.optimizeFor.rawValue)): no catalog model\(under); the requested model is served"
        }
        let c = selector.candidates[index]
        let id = selector.ids[index]
        var text: String
        switch config.optimizeFor {
        case .cost:
            text = "\(id): cheapest"
        case .latency:
            text = "\(id): fastest by the price/reasoning latency proxy (score \(Self.fmt(c.latencyScore)))"
        case .quality:
            text = "\(id): best by the price/reasoning/context quality proxy (score \(Self.fmt(c.qualityScore)))"
        }
        if let n = feasibleCount { text += " of \(n) candidate\(n == 1 ? "" : "s")" }
        text += under
        text += "; \(selector.providers[index]), context \(c.contextWindow)"
        if let cost = estimatedCostUSD {
            text += ", est. $\(ModelCatalog.formatUSD(cost)) per request"
        } else {
            text += ", blended $\(Self.fmt(c.blendedPer1M)) per 1M tokens"
        }
        if let next = selector.candidates.indices.first(where: { $0 != index && isFeasible($0) }) {
            text += "; next: \(selector.ids[next])"
        }
        return text
    }

    private func isFeasible(_ i: Int) -> Bool {
        let c = selector.candidates[i]
        if needsTools && !c.tools { return false }
        if needsJSONMode && !c.jsonMode { return false }
        if let p = promptTokens {
            let out = Int64(selector.config.expectedOutputTokens)
            if Int64(p) + out > Int64(c.contextWindow) { return false }
            if let max = selector.maxCostPico, Int64(p) &* c.inputPico &+ out &* c.outputPico > max { return false }
        }
        return true
    }

    static func fmt(_ x: Double) -> String { String(format: "%.2f", x) }
}
