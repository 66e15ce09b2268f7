import Compression
import NIOCore
import Policy
import Tokenizer
import Wire

/// What the sidecar does to one request before it goes upstream. Computed on the hot path from the request view
/// (and, later, the policy snapshot): no I/O, no locks.
public struct RequestPlan: Sendable {
    /// Byte edits to the client's body; empty means the upstream receives it byte for byte.
    public var patch = BodyPatch()
    /// The model the upstream is asked for (the requested one unless a rule rewrites it).
    public var servedModel: String?
    /// The sidecar added `stream_options.include_usage` the client did not ask for; the usage chunk and the
    /// `"usage":null` members it causes must be stripped from the stream.
    public var injectedStreamUsage = false
    /// Prompt tokens removed by optimization (compression); zero when the prompt is unchanged.
    public var tokensSaved = 0
    /// Whether the messages themselves changed (not just the model or stream options): only then is the sent
    /// prompt counted separately.
    public var promptChanged = false
    /// The rule that decided the plan (nil: the policy's defaults).
    public var rule: String?
    /// The policy's decision: upstream, fallback chain, retry settings, budget outcome, model selection.
    public var decision: PolicyDecision?
    /// Set when a budget rejects the request: answer 429 without calling any upstream.
    public var rejection: BudgetRejection?
    /// What prompt compression did, when the policy asked for it.
    public var compression: CompressionSummary?

    public init() {}

    /// Upstream attempts allowed for this request (the first included).
    public var maxAttempts: Int {
        guard let d = decision else { return 1 }
        return max(1, d.retry.maxAttempts)
    }
}

/// Plans requests: the policy's decision (rule, model rewrite, upstream and fallback, budget), applied as byte
/// splices, and usage injection for streamed chat and completions so every streamed request is accounted exactly.
public struct Planner: Sendable {
    public init() {}

    /// Plans a request whose body the sidecar read. `endpoint` is `chat.completions`, `completions`,
    /// `embeddings` or `responses`.
    public func plan(endpoint: String, view: RequestView, app: String = "default", policy: CompiledPolicy? = nil,
                     budgets: BudgetTracker? = nil) -> RequestPlan
    {
        var plan = RequestPlan()
        plan.servedModel = view.model
        if let policy {
            let request = PolicyRequest(
                app: app, model: view.model ?? "", endpoint: PolicyEndpoint(rawValue: endpoint) ?? .other,
                promptTokens: policy.needsPromptTokens ? Self.promptTokens(view, endpoint: endpoint) : nil,
                hasTools: view.toolCount > 0, jsonMode: Self.jsonMode(view), metadata: Self.metadata(view))
            let decision = policy.plan(request, budgets: budgets)
            plan.rule = decision.ruleName
            if case .reject(let rejection) = decision.budget {
                plan.rejection = rejection
                plan.decision = consume decision
                return plan
            }
            if decision.modelChanged && !decision.servedModel.isEmpty {
                view.patchModel(decision.servedModel, into: &plan.patch)
                plan.servedModel = decision.servedModel
            }
            if let profile = decision.compression, endpoint == "chat.completions" {
                compress(view, profile: profile, model: plan.servedModel ?? "", into: &plan)
            }
            plan.decision = consume decision  // moved: a copy retains and releases each of its references
        }
        if view.stream && view.includeUsage != true && (endpoint == "chat.completions" || endpoint == "completions") {
            Self.injectIncludeUsage(view, into: &plan.patch)
            plan.injectedStreamUsage = true
        }
        return plan
    }

    /// Compresses the request's messages per `profile` and splices the new contents into the body.
    func compress(_ view: RequestView, profile: CompressionProfile, model: String, into plan: inout RequestPlan) {
        let started = ContinuousClock.now
        let encoding = (try? Encoding.forModel(model).encoding) ?? (try? Encoding.named(.o200kBase))
        guard let encoding else { return }
        let result = PromptCompressor(encoding: encoding).compress(view, options: profile.options)
        for (index, text) in result.edits {
            text.withUnsafeBytes { view.patchMessageContent(index, utf8: $0, into: &plan.patch) }
        }
        if !result.edits.isEmpty {
            plan.promptChanged = true
            plan.tokensSaved = result.tokensSaved
        }
        let changed = result.applied && !result.edits.isEmpty
        plan.compression = CompressionSummary(
            technique: changed ? result.techniques.name : "none", originalTokens: result.originalTokens,
            compressedTokens: changed ? result.compressedTokens : result.originalTokens,
            ratio: changed && result.originalTokens > 0
                ? Double(result.compressedTokens) / Double(result.originalTokens) : 1,
            qualityScore: result.quality, duration: ContinuousClock.now - started, profile: profile.name,
            applied: result.applied)
    }

    /// Plans a request the sidecar does not read (files, audio, models...): only the policy's upstream choice.
    public func planUnread(path: String, app: String, policy: CompiledPolicy) -> RequestPlan {
        var plan = RequestPlan()
        let decision = policy.plan(PolicyRequest(app: app, model: "", endpoint: PolicyEndpoint(path: path)))
        plan.decision = decision
        plan.rule = decision.ruleName
        return plan
    }

    static func promptTokens(_ view: RequestView, endpoint: String) -> Int? {
        guard let (encoding, _) = try? Encoding.forModel(view.model ?? "") else { return nil }
        return PromptCounter.count(view, endpoint: endpoint, encoding: encoding)
    }

    /// `response_format` asks for JSON (`json_object` or `json_schema`).
    static func jsonMode(_ view: RequestView) -> Bool {
        guard let f = view.field("response_format"), f.kind == .object else { return false }
        let type = JSONNode(buffer: view.body, range: f.valueRange, kind: .object)["type"]?.string
        return type == "json_object" || type == "json_schema"
    }

    /// String members of the request's `metadata` object.
    static func metadata(_ view: RequestView) -> [String: String] {
        guard let f = view.field("metadata"), f.kind == .object else { return [:] }
        var out: [String: String] = [:]
        for (k, v) in JSONNode(buffer: view.body, range: f.valueRange, kind: .object).members {
            if let s = v.string { out[k] = s }
        }
        return out
    }

    /// Sets `stream_options.include_usage` to true, keeping any other stream option the client set.
    static func injectIncludeUsage(_ view: RequestView, into patch: inout BodyPatch) {
        let trueBytes = Array("true".utf8)
        guard let field = view.field("stream_options"), field.kind == .object else {
            view.setTopLevel("stream_options", rawJSON: Array(#"{"include_usage":true}"#.utf8), into: &patch)
            return
        }
        let node = JSONNode(buffer: view.body, range: field.valueRange, kind: .object)
        if let existing = node["include_usage"] {
            patch.replace(existing.range, with: trueBytes)
        } else {
            let isEmpty = node.raw.dropFirst().dropLast().allSatisfy { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\r" }
            let member = Array(#""include_usage":true"#.utf8) + (isEmpty ? [] : [UInt8(ascii: ",")])
            let at = field.valueRange.lowerBound + 1
            patch.replace(at..<at, with: member)
        }
    }
}
