import Foundation
import NIOCore
import Wire

/// Per-request behaviour of the mock: from flags, overridden by `x-mock-*` request headers.
public struct MockOptions: Sendable, Equatable {
    /// Delay before the response head, in milliseconds (`--latency-ms`, `x-mock-latency-ms`).
    public var latencyMs: Int = 0
    /// Streaming speed; 0 = as fast as possible (`--tokens-per-second`, `x-mock-tokens-per-second`).
    public var tokensPerSecond: Double = 0
    /// Completion length in tokens (`--completion-tokens`, `x-mock-completion-tokens`); `max_tokens` caps it.
    public var completionTokens: Int = 16
    /// Answer with this status and an OpenAI error body (`x-mock-status`).
    public var status: Int?
    /// `reset`, `stall` or `reset-mid-stream` (`x-mock-fault`).
    public var fault: Fault?
    /// Embedding vector length when the request sets no `dimensions`.
    public var embeddingDimensions: Int = 8

    public enum Fault: String, Sendable {
        case reset
        case stall
        case resetMidStream = "reset-mid-stream"
    }

    public init() {}

    /// These options with `x-mock-*` headers applied. Unknown or malformed values are reported, not ignored.
    public func applying(headers: [(String, String)]) throws(MockError) -> MockOptions {
        var o = self
        for (name, value) in headers {
            switch name.lowercased() {
            case "x-mock-latency-ms":
                guard let v = Int(value), v >= 0 else { throw MockError("x-mock-latency-ms must be a whole number >= 0") }
                o.latencyMs = v
            case "x-mock-tokens-per-second":
                guard let v = Double(value), v >= 0 else { throw MockError("x-mock-tokens-per-second must be >= 0") }
                o.tokensPerSecond = v
            case "x-mock-completion-tokens":
                guard let v = Int(value), v >= 0, v <= 100_000 else {
                    throw MockError("x-mock-completion-tokens must be between 0 and 100000")
                }
                o.completionTokens = v
            case "x-mock-status":
                guard let v = Int(value), (100...599).contains(v) else { throw MockError("x-mock-status must be an HTTP status") }
                o.status = v
            case "x-mock-fault":
                guard let f = Fault(rawValue: value.lowercased()) else {
                    throw MockError("x-mock-fault must be reset, stall or reset-mid-stream")
                }
                o.fault = f
            default: continue
            }
        }
        return o
    }
}

public struct MockError: Error, Sendable {
    public var message: String
    init(_ message: String) { self.message = message }
}

/// What the mock answers: a whole JSON body, or a stream of SSE events.
public enum MockResponse: Sendable, Equatable {
    case json(status: Int, body: String, headers: [(String, String)] = [])
    case stream(events: [String])

    public static func == (a: MockResponse, b: MockResponse) -> Bool {
        switch (a, b) {
        case (.json(let s1, let b1, let h1), .json(let s2, let b2, let h2)):
            return s1 == s2 && b1 == b2 && h1.map { "\($0.0):\($0.1)" } == h2.map { "\($0.0):\($0.1)" }
        case (.stream(let e1), .stream(let e2)): return e1 == e2
        default: return false
        }
    }
}

/// Builds the mock's deterministic answers. Pure: the same request and options give the same bytes.
public enum MockResponder {
    static let created = 1_700_000_000
    static let words = [
        "The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".", " A", " mock", " reply",
        " from", " the", " upstream", " for", " tests", " and", " benchmarks", ",", " always", " the", " same", ".",
    ]
    static let modelIDs = [
        "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-5", "gpt-5-mini", "o3", "o4-mini",
        "text-embedding-3-small", "text-embedding-3-large",
    ]

    /// Routes a request. `path` is the part after `/v1` (no query).
    public static func respond(method: String, path: Substring, body: ByteBuffer?, options: MockOptions) -> MockResponse {
        if let status = options.status {
            let type = status == 429 ? "rate_limit_exceeded" : (status >= 500 ? "server_error" : "invalid_request_error")
            var headers: [(String, String)] = []
            if status == 429 { headers.append(("retry-after", "1")) }
            return error(status, "Mock upstream answered \(status) as asked by x-mock-status.", type: type,
                         code: "mock_status_\(status)", headers: headers)
        }
        switch (method, path) {
        case ("GET", "/models"):
            let list = modelIDs.map(modelObject).joined(separator: ",")
            return .json(status: 200, body: #"{"object":"list","data":[\#(list)]}"#)
        case ("GET", _) where path.hasPrefix("/models/"):
            let id = String(path.dropFirst("/models/".count))
            return .json(status: 200, body: modelObject(id))
        case ("POST", "/chat/completions"), ("POST", "/completions"), ("POST", "/embeddings"), ("POST", "/responses"):
            guard let body else { return error(400, "The request body is empty.", code: "invalid_json") }
            let view: RequestView
            do {
                view = try RequestView.parse(body)
            } catch {
                return MockResponder.error(400, "We could not parse the JSON body of your request: \(error)",
                                           code: "invalid_json")
            }
            guard let model = view.model else {
                return error(400, "you must provide a model parameter", param: "model", code: "missing_model")
            }
            // Ids depend on the model and the conversation only, so a request that differs in options (a proxy
            // adding stream_options, say) still gets the same id as the original.
            var idSource = Array(model.utf8)
            if let r = view.valueRange(of: "messages") ?? view.valueRange(of: "input") ?? view.valueRange(of: "prompt") {
                idSource += body.getBytes(at: body.readerIndex + r.lowerBound, length: r.count) ?? []
            }
            let id = fnv1a(idSource)
            switch path {
            case "/chat/completions": return chat(view, model: model, id: id, options: options)
            case "/completions": return completion(view, model: model, id: id, options: options)
            case "/embeddings": return embeddings(view, model: model, options: options)
            default: return responses(view, model: model, id: id, options: options)
            }
        default:
            return error(404, "Invalid URL (\(method) /v1\(path))", code: "unknown_url")
        }
    }

    static func modelObject(_ id: String) -> String {
        #"{"id":\#(JSONString.quoted(id)),"object":"model","created":\#(created),"owned_by":"mock-upstream"}"#
    }

    static func error(_ status: Int, _ message: String, type: String = "invalid_request_error", param: String? = nil,
                      code: String? = nil, headers: [(String, String)] = []) -> MockResponse
    {
        let e = OpenAIError(status: status, message: message, type: type, param: param, code: code)
        return .json(status: status, body: String(decoding: e.jsonBytes, as: UTF8.self), headers: headers)
    }

    /// Deterministic prompt size: about four bytes per token, plus OpenAI's per-message overhead.
    static func promptTokens(_ view: RequestView) -> Int {
        if view.messages.isEmpty {
            let size = view.body.readableBytes
            return max(1, (size + 3) / 4)
        }
        var n = 3
        for m in view.messages.indices {
            n += 3 + ((view.text(ofMessage: m)?.utf8.count ?? 0) + 3) / 4
        }
        return n
    }

    static func completionLength(_ view: RequestView, _ options: MockOptions) -> (count: Int, finish: String) {
        let cap = view.int("max_completion_tokens") ?? view.int("max_tokens") ?? view.int("max_output_tokens")
        if let cap, cap < options.completionTokens { return (max(0, cap), "length") }
        return (options.completionTokens, "stop")
    }

    static func tokens(_ n: Int) -> [String] { (0..<n).map { words[$0 % words.count] } }

    static func usageJSON(prompt: Int, completion: Int) -> String {
        #"{"prompt_tokens":\#(prompt),"completion_tokens":\#(completion),"total_tokens":\#(prompt + completion),"#
            + #""prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"#
            + #""completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"#
            + #""accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#
    }

    // MARK: chat

    static func chat(_ view: RequestView, model: String, id: UInt64, options: MockOptions) -> MockResponse {
        let quotedModel = JSONString.quoted(model)
        let chatID = "\"chatcmpl-mock\(String(id, radix: 16))\""
        let prompt = promptTokens(view)
        if let tool = forcedTool(view) {
            let args = toolArguments(tool.parameters)
            let completion = max(1, (args.utf8.count + 3) / 4)
            let callID = "\"call_mock\(String(id & 0xFFFF_FFFF, radix: 16))\""
            if view.stream {
                let head = #"{"id":\#(chatID),"object":"chat.completion.chunk","created":\#(created),"model":\#(quotedModel),"system_fingerprint":"fp_mock","choices":[{"index":0,"delta":"#
                let usageNull = view.includeUsage == true ? #","usage":null"# : ""
                var events: [String] = []
                events.append(head + #"{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":\#(callID),"type":"function","function":{"name":\#(JSONString.quoted(tool.name)),"arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}]\#(usageNull)}"#)
                for piece in chunked(args, size: 8) {
                    events.append(head + #"{"tool_calls":[{"index":0,"function":{"arguments":\#(JSONString.quoted(piece))}}]},"logprobs":null,"finish_reason":null}]\#(usageNull)}"#)
                }
                events.append(head + #"{},"logprobs":null,"finish_reason":"tool_calls"}]\#(usageNull)}"#)
                if view.includeUsage == true {
                    events.append(#"{"id":\#(chatID),"object":"chat.completion.chunk","created":\#(created),"model":\#(quotedModel),"system_fingerprint":"fp_mock","choices":[],"usage":\#(usageJSON(prompt: prompt, completion: completion))}"#)
                }
                return .stream(events: events)
            }
            let body = #"{"id":\#(chatID),"object":"chat.completion","created":\#(created),"model":\#(quotedModel),"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":\#(callID),"type":"function","function":{"name":\#(JSONString.quoted(tool.name)),"arguments":\#(JSONString.quoted(args))}}],"refusal":null},"logprobs":null,"finish_reason":"tool_calls"}],"usage":\#(usageJSON(prompt: prompt, completion: completion)),"system_fingerprint":"fp_mock"}"#
            return .json(status: 200, body: body)
        }
        let (count, finish) = completionLength(view, options)
        let toks = tokens(count)
        if view.stream {
            let head = #"{"id":\#(chatID),"object":"chat.completion.chunk","created":\#(created),"model":\#(quotedModel),"system_fingerprint":"fp_mock","choices":[{"index":0,"delta":"#
            let usageNull = view.includeUsage == true ? #","usage":null"# : ""
            var events: [String] = []
            events.reserveCapacity(count + 3)
            events.append(head + #"{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]\#(usageNull)}"#)
            for t in toks {
                events.append(head + #"{"content":\#(JSONString.quoted(t))},"logprobs":null,"finish_reason":null}]\#(usageNull)}"#)
            }
            events.append(head + #"{},"logprobs":null,"finish_reason":"\#(finish)"}]\#(usageNull)}"#)
            if view.includeUsage == true {
                events.append(#"{"id":\#(chatID),"object":"chat.completion.chunk","created":\#(created),"model":\#(quotedModel),"system_fingerprint":"fp_mock","choices":[],"usage":\#(usageJSON(prompt: prompt, completion: count))}"#)
            }
            return .stream(events: events)
        }
        let content = JSONString.quoted(toks.joined())
        let body = #"{"id":\#(chatID),"object":"chat.completion","created":\#(created),"model":\#(quotedModel),"choices":[{"index":0,"message":{"role":"assistant","content":\#(content),"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"\#(finish)"}],"usage":\#(usageJSON(prompt: prompt, completion: count)),"service_tier":"default","system_fingerprint":"fp_mock"}"#
        return .json(status: 200, body: body)
    }

    static func chunked(_ s: String, size: Int) -> [String] {
        var out: [String] = []
        var current = ""
        for ch in s {
            current.append(ch)
            if current.count == size {
                out.append(current)
                current = ""
            }
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    struct Tool {
        var name: String
        var parameters: [String: Any]?
    }

    /// The tool the request forces: `tool_choice` naming a function, or `"required"` (first tool).
    static func forcedTool(_ view: RequestView) -> Tool? {
        guard view.toolCount > 0, let choice = view.field("tool_choice"), let toolsRange = view.valueRange(of: "tools")
        else { return nil }
        guard let tools = jsonObject(view, toolsRange) as? [[String: Any]] else { return nil }
        func tool(named name: String?) -> Tool? {
            for t in tools {
                guard let f = t["function"] as? [String: Any], let n = f["name"] as? String else { continue }
                if name == nil || name == n { return Tool(name: n, parameters: f["parameters"] as? [String: Any]) }
            }
            return nil
        }
        switch choice.kind {
        case .string:
            return view.decodeString(choice.valueRange) == "required" ? tool(named: nil) : nil
        case .object:
            guard let obj = jsonObject(view, choice.valueRange) as? [String: Any] else { return nil }
            let f = obj["function"] as? [String: Any]
            return tool(named: (f?["name"] as? String) ?? (obj["name"] as? String))
        default:
            return nil
        }
    }

    static func jsonObject(_ view: RequestView, _ range: Range<Int>) -> Any? {
        let bytes = view.body.getBytes(at: view.body.readerIndex + range.lowerBound, length: range.count) ?? []
        return try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
    }

    /// Arguments satisfying the schema's required properties with fixed placeholder values, keys sorted.
    static func toolArguments(_ schema: [String: Any]?) -> String {
        guard let props = schema?["properties"] as? [String: Any] else { return "{}" }
        let required = (schema?["required"] as? [String]) ?? Array(props.keys)
        var parts: [String] = []
        for key in required.sorted() {
            let prop = props[key] as? [String: Any] ?? [:]
            let value: String
            if let e = prop["enum"] as? [Any], let first = e.first {
                value = literal(first)
            } else {
                switch prop["type"] as? String {
                case "integer": value = "1"
                case "number": value = "1.5"
                case "boolean": value = "true"
                case "array": value = "[]"
                case "object": value = "{}"
                default: value = JSONString.quoted("mock")
                }
            }
            parts.append("\(JSONString.quoted(key)):\(value)")
        }
        return "{" + parts.joined(separator: ",") + "}"
    }

    static func literal(_ v: Any) -> String {
        if let s = v as? String { return JSONString.quoted(s) }
        if let n = v as? NSNumber { return "\(n)" }
        return "null"
    }

    // MARK: completions, embeddings, responses

    static func completion(_ view: RequestView, model: String, id: UInt64, options: MockOptions) -> MockResponse {
        let quotedModel = JSONString.quoted(model)
        let cid = "\"cmpl-mock\(String(id, radix: 16))\""
        let prompt = promptTokens(view)
        let (count, finish) = completionLength(view, options)
        let toks = tokens(count)
        if view.stream {
            var events = toks.map { t in
                #"{"id":\#(cid),"object":"text_completion","created":\#(created),"model":\#(quotedModel),"choices":[{"text":\#(JSONString.quoted(t)),"index":0,"logprobs":null,"finish_reason":null}]}"#
            }
            events.append(#"{"id":\#(cid),"object":"text_completion","created":\#(created),"model":\#(quotedModel),"choices":[{"text":"","index":0,"logprobs":null,"finish_reason":"\#(finish)"}]}"#)
            if view.includeUsage == true {
                events.append(#"{"id":\#(cid),"object":"text_completion","created":\#(created),"model":\#(quotedModel),"choices":[],"usage":\#(usageJSON(prompt: prompt, completion: count))}"#)
            }
            return .stream(events: events)
        }
        let body = #"{"id":\#(cid),"object":"text_completion","created":\#(created),"model":\#(quotedModel),"choices":[{"text":\#(JSONString.quoted(toks.joined())),"index":0,"logprobs":null,"finish_reason":"\#(finish)"}],"usage":\#(usageJSON(prompt: prompt, completion: count))}"#
        return .json(status: 200, body: body)
    }

    static func embeddings(_ view: RequestView, model: String, options: MockOptions) -> MockResponse {
        guard let inputRange = view.valueRange(of: "input"), let input = jsonObject(view, inputRange) else {
            return error(400, "'input' is a required property", param: "input", code: "missing_input")
        }
        var items: [String] = []
        if let s = input as? String {
            items = [s]
        } else if let a = input as? [Any] {
            if a.allSatisfy({ $0 is String }) {
                items = a.map { $0 as! String }
            } else if a.allSatisfy({ $0 is NSNumber }) {
                items = [a.map { "\($0)" }.joined(separator: " ")]
            } else {
                items = a.map { "\($0)" }
            }
        } else {
            return error(400, "'input' must be a string or an array", param: "input", code: "invalid_input")
        }
        if items.isEmpty { return error(400, "'input' must not be empty", param: "input", code: "invalid_input") }
        let dims = view.int("dimensions") ?? options.embeddingDimensions
        guard dims > 0 && dims <= 8192 else {
            return error(400, "'dimensions' must be between 1 and 8192", param: "dimensions", code: "invalid_dimensions")
        }
        let base64 = view.string("encoding_format") == "base64"
        var data: [String] = []
        var promptTokens = 0
        for (i, text) in items.enumerated() {
            promptTokens += max(1, (text.utf8.count + 3) / 4)
            let seed = fnv1a(Array(text.utf8))
            // Values k/1024 are exact in float32 and print the same everywhere.
            let vector: [Float] = (0..<dims).map { d in
                Float(Int((seed >> UInt64((d * 7) % 56)) & 0x7FF) - 1024) / 1024
            }
            let value: String
            if base64 {
                var bytes = [UInt8]()
                bytes.reserveCapacity(dims * 4)
                for f in vector { withUnsafeBytes(of: f.bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
                value = "\"" + Data(bytes).base64EncodedString() + "\""
            } else {
                value = "[" + vector.map { "\($0)" }.joined(separator: ",") + "]"
            }
            data.append(#"{"object":"embedding","index":\#(i),"embedding":\#(value)}"#)
        }
        let body = #"{"object":"list","data":[\#(data.joined(separator: ","))],"model":\#(JSONString.quoted(model)),"usage":{"prompt_tokens":\#(promptTokens),"total_tokens":\#(promptTokens)}}"#
        return .json(status: 200, body: body)
    }

    static func responses(_ view: RequestView, model: String, id: UInt64, options: MockOptions) -> MockResponse {
        if view.stream {
            return error(400, "The mock upstream does not stream /v1/responses.", param: "stream", code: "unsupported")
        }
        var promptTokens = 1
        if let r = view.valueRange(of: "input") { promptTokens = max(1, (r.count + 3) / 4) }
        let (count, finish) = completionLength(view, options)
        let text = JSONString.quoted(tokens(count).joined())
        let hex = String(id, radix: 16)
        let status = finish == "length" ? "incomplete" : "completed"
        let incomplete = finish == "length" ? #"{"reason":"max_output_tokens"}"# : "null"
        let body = #"{"id":"resp_mock\#(hex)","object":"response","created_at":\#(created),"status":"\#(status)","error":null,"incomplete_details":\#(incomplete),"instructions":null,"max_output_tokens":null,"model":\#(JSONString.quoted(model)),"output":[{"type":"message","id":"msg_mock\#(hex)","status":"completed","role":"assistant","content":[{"type":"output_text","text":\#(text),"annotations":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":\#(promptTokens),"input_tokens_details":{"cached_tokens":0},"output_tokens":\#(count),"output_tokens_details":{"reasoning_tokens":0},"total_tokens":\#(promptTokens + count)},"user":null,"metadata":{}}"#
        return .json(status: 200, body: body)
    }

    /// FNV-1a, 64 bit: stable ids from request bytes.
    public static func fnv1a(_ bytes: some Sequence<UInt8>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        return h
    }
}
