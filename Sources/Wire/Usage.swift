import NIOCore

/// Token usage as an upstream reports it.
public struct Usage: Sendable, Equatable {
    public var promptTokens: Int
    public var completionTokens: Int
    /// Prompt tokens served from the provider's cache (a subset of `promptTokens`).
    public var cachedTokens: Int
    /// Reasoning tokens (a subset of `completionTokens`).
    public var reasoningTokens: Int

    public init(promptTokens: Int = 0, completionTokens: Int = 0, cachedTokens: Int = 0, reasoningTokens: Int = 0) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cachedTokens = cachedTokens
        self.reasoningTokens = reasoningTokens
    }

    /// Reads a `usage` object: chat, completions and embeddings (`prompt_tokens`, `completion_tokens`,
    /// `prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens`) or the Responses API
    /// (`input_tokens`, `output_tokens`, `input_tokens_details`, `output_tokens_details`).
    public init?(_ node: JSONNode) {
        guard node.kind == .object else { return nil }
        // One pass over the members (a lookup by key rescans the object each time).
        var prompt: Int?
        var input: Int?
        var completion: Int?
        var output: Int?
        var promptDetails: JSONNode?
        var inputDetails: JSONNode?
        var completionDetails: JSONNode?
        var outputDetails: JSONNode?
        node.forEachMember { key, value in
            if key.is("prompt_tokens") {
                prompt = value.int
            } else if key.is("completion_tokens") {
                completion = value.int
            } else if key.is("prompt_tokens_details") {
                promptDetails = value
            } else if key.is("completion_tokens_details") {
                completionDetails = value
            } else if key.is("input_tokens") {
                input = value.int
            } else if key.is("output_tokens") {
                output = value.int
            } else if key.is("input_tokens_details") {
                inputDetails = value
            } else if key.is("output_tokens_details") {
                outputDetails = value
            }
        }
        if let p = prompt {
            promptTokens = p
            completionTokens = completion ?? 0
            cachedTokens = promptDetails?["cached_tokens"]?.int ?? 0
            reasoningTokens = completionDetails?["reasoning_tokens"]?.int ?? 0
        } else if let p = input {
            promptTokens = p
            completionTokens = output ?? 0
            cachedTokens = inputDetails?["cached_tokens"]?.int ?? 0
            reasoningTokens = outputDetails?["reasoning_tokens"]?.int ?? 0
        } else {
            return nil
        }
    }
}

/// What the sidecar learns from a response body: usage, id, model, finish reasons, and the generated text (so
/// usage can be estimated when the upstream sends none).
public struct ResponseFacts: Sendable, Equatable {
    public var usage: Usage?
    public var id: String?
    public var model: String?
    public var finishReasons: [String] = []
    /// Generated text: content, tool-call names and arguments, completion text.
    public var completionText: String = ""

    public init() {}

    /// Reads a whole (non-streamed) JSON response. Unparseable bodies give empty facts. With
    /// `textOnlyWithoutUsage`, the generated text (which the accounting needs only to count a completion the
    /// upstream did not report usage for) is decoded only when the response has no usage.
    public static func fromBody(_ body: ByteBuffer, textOnlyWithoutUsage: Bool = false) -> ResponseFacts {
        // The walk over the top-level members validates the document as it goes (one pass, not a validation pass
        // and then a walk); a document that turns out invalid gives empty facts, whatever was read before.
        var facts = ResponseFacts()
        let valid = JSONNode.forEachMember(ofDocument: body) { key, value in
            facts.absorb(key, value, streamed: false, text: !textOnlyWithoutUsage)
        }
        guard valid else { return ResponseFacts() }
        if textOnlyWithoutUsage && facts.usage == nil {
            _ = JSONNode.forEachMember(ofDocument: body) { key, value in
                facts.absorb(key, value, streamed: false, facts: false)
            }
        }
        return facts
    }

    /// Adds what one JSON object (a whole response or one stream chunk) says.
    mutating func absorb(_ root: JSONNode, streamed: Bool) {
        // One pass over the top-level members (lookups by key would rescan the object each time).
        root.forEachMember { key, value in absorb(key, value, streamed: streamed) }
    }

    /// Adds what one top-level member says: its `facts` (id, model, usage, finish reasons) and its generated `text`.
    private mutating func absorb(_ key: JSONKey, _ value: JSONNode, streamed: Bool, facts: Bool = true, text: Bool = true) {
        if key.is("choices") {
            absorbChoices(value, streamed: streamed, facts: facts, text: text)
        } else if facts && key.is("id") {
            if id == nil { id = value.string }
        } else if facts && key.is("model") {
            if model == nil { model = value.string }
        } else if facts && key.is("usage") {
            if let usage = Usage(value) { self.usage = usage }
        } else if text && key.is("output") {
            // Responses API: output[].content[].text, and function call arguments.
            value.forEachElement { item in
                item["content"]?.forEachElement { part in
                    if let t = part["text"]?.string { completionText += t }
                }
                if let a = item["arguments"]?.string { completionText += a }
            }
        }
    }

    private mutating func absorbChoices(_ choices: JSONNode, streamed: Bool, facts: Bool, text: Bool) {
        choices.forEachElement { choice in
            choice.forEachMember { key, value in
                if key.is("finish_reason") {
                    if facts, let r = value.string { finishReasons.append(r) }
                } else if !text {
                    return
                } else if key.is("text") {
                    if let t = value.string { completionText += t }
                } else if key.is(streamed ? "delta" : "message") {
                    value.forEachMember { k, v in
                        if k.is("content") || k.is("refusal") {
                            if let c = v.string { completionText += c }
                        } else if k.is("tool_calls") {
                            v.forEachElement { call in
                                if let f = call["function"] {
                                    if let n = f["name"]?.string { completionText += n }
                                    if let a = f["arguments"]?.string { completionText += a }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Watches a streamed (SSE) response as it passes: usage, ids, finish reasons, generated text. When the sidecar
/// asked the upstream for usage the client did not ask for (`stripInjectedUsage`), it also removes what that
/// request added (the final usage chunk and every chunk's `"usage":null`) so the client gets exactly what it would
/// have got.
public struct StreamTap: Sendable {
    public private(set) var facts = ResponseFacts()
    public private(set) var events = 0
    public private(set) var sawDone = false
    public let stripInjectedUsage: Bool
    /// Whether `facts` are gathered (the proxy strips on the event loop and leaves the facts to the accounting
    /// thread, which reads the stream as the upstream sent it).
    public let collectFacts: Bool
    private var framer = SSEFramer()

    public init(stripInjectedUsage: Bool, collectFacts: Bool = true) {
        self.stripInjectedUsage = stripInjectedUsage
        self.collectFacts = collectFacts
    }

    /// Observes one chunk. Returns the bytes to send to the client now: the chunk itself when nothing is
    /// stripped, else the completed events with injected usage removed (possibly empty).
    public mutating func observe(_ chunk: ByteBuffer) -> ByteBuffer {
        let completed = framer.feed(chunk)
        if !stripInjectedUsage {
            for e in completed { inspect(e) }
            return chunk
        }
        var out = ByteBuffer()
        for e in completed {
            guard let json = inspect(e) else {
                var raw = e.raw
                out.writeBuffer(&raw)
                continue
            }
            Self.strip(e, json: json, into: &out)
        }
        return out
    }

    @discardableResult
    private mutating func inspect(_ e: SSEEvent) -> JSONNode? {
        events += 1
        guard let data = e.data else { return nil }
        if data.readableBytes == 6 && data.readableBytesView.elementsEqual("[DONE]".utf8) {
            sawDone = true
            return nil
        }
        guard let json = try? JSONNode.parse(data), json.kind == .object else { return nil }
        if collectFacts { facts.absorb(json, streamed: true) }
        return json
    }

    /// Appends `e` to `out` without what the injected `include_usage` added: the usage-only chunk (usage set,
    /// no choices) is dropped, any other chunk loses its top-level `usage` member (the last one if repeated),
    /// every other byte kept. One pass over the top-level members.
    static func strip(_ e: SSEEvent, json: JSONNode, into out: inout ByteBuffer) {
        var usage: JSONNode?
        var cut: Range<Int>?
        var cutNeedsNext = false
        var choicesEmpty = true
        var previousEnd: Int?
        json.forEachMemberWithOffset { keyStart, key, value in
            if cutNeedsNext {
                // `usage` was the first member: it goes with what separates it from this one.
                cut = cut!.lowerBound..<keyStart
                cutNeedsNext = false
            }
            if key.is("usage") {
                usage = value
                if let previousEnd {
                    cut = previousEnd..<value.range.upperBound  // with the comma before it
                } else {
                    cut = keyStart..<value.range.upperBound
                    cutNeedsNext = true
                }
            } else if key.is("choices") {
                choicesEmpty = value.kind != .array || value.isEmptyContainer
            }
            previousEnd = value.range.upperBound
        }
        guard let usage, let cut else {
            out.writeImmutableBuffer(e.raw)
            return
        }
        if !usage.isNull && choicesEmpty { return }  // the usage-only chunk the client did not ask for
        guard let offset = e.dataOffset else {
            out.writeImmutableBuffer(e.raw)  // data over several lines: cannot be cut in place
            return
        }
        e.raw.withUnsafeReadableBytes { raw in
            out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[0..<(offset + cut.lowerBound)]))
            out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[(offset + cut.upperBound)...]))
        }
    }

    /// Bytes of an unfinished event still held (only when stripping).
    public var heldBytes: Int { stripInjectedUsage ? framer.bufferedBytes : 0 }

    /// At the end of the stream: what is still held (an event without its closing blank line), to be sent as is.
    /// Nothing the upstream sent is lost.
    public mutating func finish() -> ByteBuffer {
        stripInjectedUsage ? framer.drain() : ByteBuffer()
    }
}
