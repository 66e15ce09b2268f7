import Atomics
import Catalog
import Foundation

/// A validated policy compiled for the hot path: immutable, `Sendable`, shared by every request (hold it through a
/// ``PolicyStore``).
///
/// Compilation turns globs into matchers (exact names become string compares), resolves every rule's upstream,
/// fallback and retry against the defaults, builds the `select` rankings, and indexes rules by exact app id: a request
/// only visits the rules that name its app plus the rules that do not name an app by exact id, in file order. The
/// first rule whose conditions all hold wins. ``plan(_:budgets:now:)`` allocates nothing unless a budget rejects.
public final class CompiledPolicy: Sendable, AtomicReference {
    /// A class: the hot path reads rules in place (a struct this size was copied, field by field, per visit).
    final class Rule: Sendable {
        init(
            name: String, apps: [Glob], checkApp: Bool, models: [Glob], endpointMask: UInt8, usesPromptTokens: Bool,
            promptMin: Int, promptMax: Int, tools: Int8, jsonMode: Int8, metadata: [MetadataCondition],
            setModel: String?, selector: ModelSelector?, upstream: String, fallback: [String], retry: RetrySettings,
            compression: CompressionProfile?
        ) {
            self.compression = compression
            self.name = name
            self.apps = apps
            self.checkApp = checkApp
            self.models = models
            self.endpointMask = endpointMask
            self.usesPromptTokens = usesPromptTokens
            self.promptMin = promptMin
            self.promptMax = promptMax
            self.tools = tools
            self.jsonMode = jsonMode
            self.metadata = metadata
            self.setModel = setModel
            self.selector = selector
            self.upstream = upstream
            self.fallback = fallback
            self.retry = retry
        }

        let name: String
        let apps: [Glob]
        /// False when the rule is reached only through the app index (every app pattern is an exact name).
        let checkApp: Bool
        let models: [Glob]
        /// Bit per ``PolicyEndpoint``; 0: any.
        let endpointMask: UInt8
        let usesPromptTokens: Bool
        let promptMin: Int
        let promptMax: Int
        /// -1 any, 0 false, 1 true.
        let tools: Int8
        let jsonMode: Int8
        let metadata: [MetadataCondition]
        let setModel: String?
        let selector: ModelSelector?
        let upstream: String
        let fallback: [String]
        let retry: RetrySettings
        /// The resolved profile (the rule's, else the defaults'; nil for `compression: off`).
        let compression: CompressionProfile?

        @inline(__always)
        func matches(_ r: PolicyRequest) -> Bool {
            if endpointMask != 0 && endpointMask & (1 << r.endpoint.bit) == 0 { return false }
            if tools >= 0 && (tools == 1) != r.hasTools { return false }
            if jsonMode >= 0 && (jsonMode == 1) != r.jsonMode { return false }
            if usesPromptTokens {
                guard let p = r.promptTokens, p >= promptMin, p <= promptMax else { return false }
            }
            if checkApp && !apps.isEmpty && !Self.any(apps, r.app) { return false }
            if !models.isEmpty && !Self.any(models, r.model) { return false }
            if !metadata.isEmpty {
                return metadata.withUnsafeBufferPointer { conditions in
                    for i in conditions.indices {
                        guard let value = r.metadata[conditions[i].key], conditions[i].value.matches(value) else {
                            return false
                        }
                    }
                    return true
                }
            }
            return true
        }

        @inline(__always)
        static func any(_ globs: [Glob], _ text: String) -> Bool {
            // Borrowed through the buffer: iterating with for-in would copy each Glob (a retain per field).
            globs.withUnsafeBufferPointer { buffer in
                for i in buffer.indices where buffer[i].matches(text) { return true }
                return false
            }
        }
    }

    struct Budget: Sendable {
        let config: BudgetConfig
        /// Limits in pico-dollars; Int64.max when not set.
        let hourLimit: Int64
        let dayLimit: Int64
    }

    /// The document this policy was compiled from.
    public let document: PolicyDocument
    /// Where the document came from (a path, or "built-in").
    public let source: String
    /// Upstreams by name.
    public let upstreams: [String: UpstreamConfig]
    let rules: [Rule]
    /// Rule indices to visit for an exact app id (already merged with ``otherRules``, in file order).
    let rulesByApp: [String: [Int]]
    /// Rules that do not name their app by exact ids only: visited for every app.
    let otherRules: [Int]
    let defaultUpstream: String
    let defaultFallback: [String]
    let defaultRetry: RetrySettings
    let defaultCompression: CompressionProfile?
    let budgetsByApp: [String: [Budget]]
    /// True when some rule (or the defaults) compresses.
    public var compresses: Bool { defaultCompression != nil || rules.contains { $0.compression != nil } }
    /// True when some rule matches on `prompt_tokens` or selects a model: the caller should count prompt tokens.
    public let needsPromptTokens: Bool

    /// Compiles a validated document. `catalog` ranks `select` candidates (an empty catalog selects nothing).
    public init(document: PolicyDocument, catalog: ModelCatalog, source: String = "built-in") {
        self.document = document
        self.source = source
        var ups: [String: UpstreamConfig] = [:]
        for u in document.upstreams { ups[u.name] = u }
        self.upstreams = ups
        let defaults = document.defaults
        self.defaultUpstream = defaults.upstream
        self.defaultFallback = defaults.fallback
        self.defaultRetry = Self.resolve(defaults.retry, chainLength: 1 + defaults.fallback.count)
        self.defaultCompression = defaults.compression

        var rules: [Rule] = []
        var needsTokens = false
        var byApp: [String: [Int]] = [:]
        var other: [Int] = []
        for (index, r) in document.rules.enumerated() {
            let m = r.match
            let literalApps = !m.apps.isEmpty && m.apps.allSatisfy(\.isLiteral)
            var mask: UInt8 = 0
            for e in m.endpoints ?? [] { mask |= 1 << e.bit }
            if m.endpoints != nil && mask == 0 { mask = 1 << 7 }  // an empty list matches nothing
            let usesTokens = m.promptTokensMin != nil || m.promptTokensMax != nil
            let selector = r.select.map { ModelSelector(config: $0, catalog: catalog) }
            needsTokens = needsTokens || usesTokens || selector != nil
            let fallback = r.fallback ?? (r.upstream == nil ? defaults.fallback : defaults.fallback.filter { $0 != r.upstream })
            rules.append(
                Rule(
                    name: r.name, apps: m.apps, checkApp: !literalApps, models: m.models, endpointMask: mask,
                    usesPromptTokens: usesTokens, promptMin: m.promptTokensMin ?? 0, promptMax: m.promptTokensMax ?? Int.max,
                    tools: m.tools.map { $0 ? 1 : 0 } ?? -1, jsonMode: m.jsonMode.map { $0 ? 1 : 0 } ?? -1,
                    metadata: m.metadata, setModel: r.setModel, selector: selector,
                    upstream: r.upstream ?? defaults.upstream, fallback: fallback,
                    retry: r.retry.map { Self.resolve($0, chainLength: 1 + fallback.count) }
                        ?? Self.resolve(defaults.retry, chainLength: 1 + fallback.count),
                    compression: r.compressionOff ? nil : (r.compression ?? defaults.compression)))
            if literalApps {
                for app in Set(m.apps.compactMap(\.literal)) { byApp[app, default: []].append(index) }
            } else {
                other.append(index)
            }
        }
        for (app, list) in byApp { byApp[app] = (list + other).sorted() }
        self.rules = rules
        self.rulesByApp = byApp
        self.otherRules = other
        self.needsPromptTokens = needsTokens

        var budgets: [String: [Budget]] = [:]
        for b in document.budgets {
            budgets[b.app, default: []].append(
                Budget(
                    config: b, hourLimit: b.usdPerHour.flatMap(ModelSelector.pico) ?? .max,
                    dayLimit: b.usdPerDay.flatMap(ModelSelector.pico) ?? .max))
        }
        self.budgetsByApp = budgets
    }

    /// Parses, validates and compiles a policy file; throws ``PolicyError`` with every diagnostic.
    public convenience init(path: String, catalog: ModelCatalog) throws(PolicyError) {
        let document = try PolicyDocument.load(path: path, catalog: catalog)
        self.init(document: document, catalog: catalog, source: path)
    }

    /// The built-in policy (no file): one upstream `default` at `upstreamURL`, no rules: passthrough.
    public static func builtIn(upstreamURL: String, catalog: ModelCatalog = ModelCatalog(entries: [])) -> CompiledPolicy {
        CompiledPolicy(document: .builtIn(upstreamURL: upstreamURL), catalog: catalog, source: "built-in")
    }

    /// A retry setting with `max_attempts` left out (0) becomes one attempt per upstream of the chain.
    static func resolve(_ retry: RetrySettings?, chainLength: Int) -> RetrySettings {
        var r = retry ?? RetrySettings(maxAttempts: 0)
        if r.maxAttempts <= 0 { r.maxAttempts = chainLength }
        return r
    }

    /// Plans one request: the first matching rule (else the defaults), the served model, the upstream chain and
    /// retry budget, and (with a `budgets` tracker) the budget outcome for the request's app at `now` (default:
    /// the current time, read only when the app has a budget).
    public func plan(_ request: PolicyRequest, budgets tracker: BudgetTracker? = nil, now: Date? = nil)
        -> PolicyDecision
    {
        var decision = PolicyDecision(
            ruleName: nil, requestedModel: request.model, servedModel: request.model, upstream: defaultUpstream,
            fallback: defaultFallback, retry: defaultRetry, budget: .none, selection: nil,
            compression: defaultCompression)
        if !rules.isEmpty, let index = firstMatch(request) {
            rules.withUnsafeBufferPointer { buffer in apply(buffer[index], request, to: &decision) }
        }
        if let tracker, !budgetsByApp.isEmpty, let budgets = budgetsByApp[request.app] {
            applyBudgets(budgets, tracker: tracker, app: request.app, now: now ?? Date(), to: &decision)
        }
        return decision
    }

    @inline(__always)
    func apply(_ rule: Rule, _ request: PolicyRequest, to decision: inout PolicyDecision) {
            decision.ruleName = rule.name
            decision.upstream = rule.upstream
            decision.fallback = rule.fallback
            decision.retry = rule.retry
            decision.compression = rule.compression
            if let model = rule.setModel {
                decision.servedModel = model
            } else if let selector = rule.selector {
                let selection = selector.select(
                    promptTokens: request.promptTokens, needsTools: request.hasTools, needsJSONMode: request.jsonMode)
                if let model = selection.model { decision.servedModel = model }
                decision.selection = selection
            }
    }

    @inline(__always)
    func firstMatch(_ request: PolicyRequest) -> Int? {
        // Rules are read in place (borrowed through the buffer), never copied: no retain/release per rule.
        rules.withUnsafeBufferPointer { buffer in
            if !rulesByApp.isEmpty, let list = rulesByApp[request.app] {
                for i in list where buffer[i].matches(request) { return i }
                return nil
            }
            for i in otherRules where buffer[i].matches(request) { return i }
            return nil
        }
    }

    func applyBudgets(
        _ budgets: [Budget], tracker: BudgetTracker, app: String, now: Date, to decision: inout PolicyDecision
    ) {
        let spent = tracker.statePico(app: app, at: now)
        var downgrade: String?
        for b in budgets {
            let overHour = spent.hour >= b.hourLimit
            let overDay = spent.day >= b.dayLimit
            guard overHour || overDay else { continue }
            switch b.config.action {
            case .reject:
                let (window, spentPico, limit) =
                    overHour ? ("hour", spent.hour, b.config.usdPerHour!) : ("day", spent.day, b.config.usdPerDay!)
                let spentText = ModelCatalog.formatUSD(Decimal(sign: .plus, exponent: -12, significand: Decimal(spentPico)))
                decision.budget = .reject(
                    BudgetRejection(
                        message: "Budget exceeded for application '\(app)': $\(spentText) spent in the last \(window), "
                            + "limit $\(limit) per \(window). Requests are rejected until spending falls below the limit.",
                        retryAfterSeconds: overHour ? 60 : 3600))
                return
            case .downgrade(let to):
                if downgrade == nil { downgrade = to }
            }
        }
        if let to = downgrade, to != decision.servedModel {
            decision.budget = .downgraded(from: decision.servedModel, to: to)
            decision.servedModel = to
        }
    }

    /// Rule names in file order.
    public var ruleNames: [String] { rules.map(\.name) }
}

extension PolicyEndpoint {
    var bit: UInt8 {
        switch self {
        case .chatCompletions: 0
        case .completions: 1
        case .embeddings: 2
        case .responses: 3
        case .other: 4
        }
    }
}
