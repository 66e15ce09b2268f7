import NIOCore
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
    /// The rule that decided the plan.
    public var rule: String?

    public init() {}
}

/// Plans requests. Today: usage injection for streamed chat and completions, so every streamed request can be
/// accounted for exactly.
public struct Planner: Sendable {
    public init() {}

    /// `endpoint` is `chat.completions`, `completions`, `embeddings`, `responses` or `other`.
    public func plan(endpoint: String, view: RequestView) -> RequestPlan {
        var plan = RequestPlan()
        plan.servedModel = view.model
        if view.stream && view.includeUsage != true && (endpoint == "chat.completions" || endpoint == "completions") {
            Self.injectIncludeUsage(view, into: &plan.patch)
            plan.injectedStreamUsage = true
        }
        return plan
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
