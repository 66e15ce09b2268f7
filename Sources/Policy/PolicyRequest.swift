/// What the policy looks at in a request. Build it from the request view; only the fields rules use matter.
public struct PolicyRequest: Sendable {
    /// The `x-app-id` request header, or the sidecar's app id (`AUTO_OPTIMIZER_APP_ID`).
    public var app: String
    /// The requested `model`.
    public var model: String
    public var endpoint: PolicyEndpoint
    /// Prompt size in tokens. Only rules with `prompt_tokens` and `select` rules consult it: count it only when
    /// ``CompiledPolicy/needsPromptTokens`` is true. A `prompt_tokens` condition does not match when nil.
    public var promptTokens: Int?
    /// The request defines tools (or functions).
    public var hasTools: Bool
    /// `response_format.type` is `json_object` or `json_schema`.
    public var jsonMode: Bool
    /// Metadata for `match.metadata` (the request's `metadata` object, or headers the executable maps in).
    public var metadata: [String: String]

    public init(
        app: String, model: String, endpoint: PolicyEndpoint = .chatCompletions, promptTokens: Int? = nil,
        hasTools: Bool = false, jsonMode: Bool = false, metadata: [String: String] = [:]
    ) {
        self.app = app
        self.model = model
        self.endpoint = endpoint
        self.promptTokens = promptTokens
        self.hasTools = hasTools
        self.jsonMode = jsonMode
        self.metadata = metadata
    }
}

/// An OpenAI-style 429 answer for a request rejected by a budget.
public struct BudgetRejection: Sendable, Hashable {
    public var status: Int { 429 }
    public var message: String
    /// OpenAI's type for quota errors.
    public var type: String { "insufficient_quota" }
    public var code: String { "budget_exceeded" }
    /// Seconds after which the window may have room again (for `retry-after`): 60 for an hourly budget (the next
    /// minute bucket leaves the window), 3600 for a daily one.
    public var retryAfterSeconds: Int

    /// `{"error":{"message":...,"type":"insufficient_quota","param":null,"code":"budget_exceeded"}}`.
    public var jsonBody: String {
        var escaped = ""
        for scalar in message.unicodeScalars {
            switch scalar {
            case "\"": escaped += "\\\""
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            case "\r": escaped += "\\r"
            case "\t": escaped += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    escaped += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    escaped.unicodeScalars.append(scalar)
                }
            }
        }
        return "{\"error\":{\"message\":\"\(escaped)\",\"type\":\"\(type)\",\"param\":null,\"code\":\"\(code)\"}}"
    }
}

/// What a budget did to a request.
public enum BudgetOutcome: Sendable, Hashable {
    case none
    /// A budget was exceeded and its action served `to` instead of `from`.
    case downgraded(from: String, to: String)
    /// A budget was exceeded and its action rejects the request.
    case reject(BudgetRejection)
}

/// The plan for one request.
public struct PolicyDecision: Sendable {
    /// The rule that matched; nil when none did (the defaults apply).
    public var ruleName: String?
    public var requestedModel: String
    /// The model to send upstream: `set_model`, the `select` result, a budget downgrade, or the requested model.
    public var servedModel: String
    /// The upstream to try first.
    public var upstream: String
    /// Upstreams to try next, in order (connect failure, timeout, 429, 5xx before any byte reached the client).
    public var fallback: [String]
    public var retry: RetrySettings
    public var budget: BudgetOutcome
    /// The `select` outcome when the rule selects; its ``ModelSelection/rationale`` explains the choice.
    public var selection: ModelSelection?
    /// The compression profile to apply (the rule's, else the defaults'); nil: none.
    public var compression: CompressionProfile? = nil

    /// True when the served model differs from the requested one.
    public var modelChanged: Bool { servedModel != requestedModel }

    /// True when a budget rejects the request.
    public var isRejected: Bool {
        if case .reject = budget { return true }
        return false
    }

    /// The upstream for attempt `n` (1-based): the upstream, then the fallbacks in order, the last one repeated.
    public func upstream(forAttempt n: Int) -> String {
        if n <= 1 || fallback.isEmpty { return upstream }
        return fallback[min(n - 2, fallback.count - 1)]
    }

    /// `x-auto-optimizer-rule` header value: the rule name, or "default".
    public var ruleHeaderValue: String { ruleName ?? "default" }
}
