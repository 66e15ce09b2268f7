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
        let read = node.buffer.withUnsafeReadableBytes { raw -> Usage? in
            var s = JSONScanner(raw)
            s.index = node.range.lowerBound
            return try? Usage.read(&s)
        }
        guard let read else { return nil }
        self = read
    }

    /// Consumes the value at the scanner (validating it) and reads it as a `usage` object; nil when it is not one.
    /// A repeated member counts as its last occurrence.
    static func read(_ s: inout JSONScanner) throws(JSONSyntaxError) -> Usage? {
        s.skipWhitespace()
        guard s.index < s.end, s.bytes[s.index] == UInt8(ascii: "{") else {
            _ = try s.skipValue()
            return nil
        }
        var prompt: Int?
        var input: Int?
        var completion: Int?
        var output: Int?
        var promptCached: Int?
        var inputCached: Int?
        var completionReasoning: Int?
        var outputReasoning: Int?
        try s.walkObject { key, s throws(JSONSyntaxError) in
            if key.is("prompt_tokens") {
                prompt = try s.readInt()
            } else if key.is("completion_tokens") {
                completion = try s.readInt()
            } else if key.is("prompt_tokens_details") {
                promptCached = try detail(&s, "cached_tokens")
            } else if key.is("completion_tokens_details") {
                completionReasoning = try detail(&s, "reasoning_tokens")
            } else if key.is("input_tokens") {
                input = try s.readInt()
            } else if key.is("output_tokens") {
                output = try s.readInt()
            } else if key.is("input_tokens_details") || key.is("input_token_details") {
                // The Realtime API writes `input_token_details`.
                inputCached = try detail(&s, "cached_tokens")
            } else if key.is("output_tokens_details") {
                outputReasoning = try detail(&s, "reasoning_tokens")
            } else {
                _ = try s.skipValue()
            }
        }
        if let p = prompt {
            return Usage(promptTokens: p, completionTokens: completion ?? 0, cachedTokens: promptCached ?? 0,
                         reasoningTokens: completionReasoning ?? 0)
        } else if let p = input {
            return Usage(promptTokens: p, completionTokens: output ?? 0, cachedTokens: inputCached ?? 0,
                         reasoningTokens: outputReasoning ?? 0)
        }
        return nil
    }

    /// The integer member `name` of the object at the scanner (its last occurrence), consuming the value.
    private static func detail(_ s: inout JSONScanner, _ name: StaticString) throws(JSONSyntaxError) -> Int? {
        var found: Int?
        try s.walkObjectOrSkip { key, s throws(JSONSyntaxError) in
            if key.is(name) { found = try s.readInt() } else { _ = try s.skipValue() }
        }
        return found
    }
}

extension Usage {
    /// The sum of two reports (a session's responses).
    public static func + (a: Usage, b: Usage) -> Usage {
        Usage(promptTokens: a.promptTokens + b.promptTokens, completionTokens: a.completionTokens + b.completionTokens,
              cachedTokens: a.cachedTokens + b.cachedTokens, reasoningTokens: a.reasoningTokens + b.reasoningTokens)
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
        // One validating pass that walks into the members it reads (choices, message, usage) and skips the rest;
        // the generated text is noted by position and decoded at the end, when wanted. A document that turns out
        // invalid gives empty facts, whatever was read before.
        body.withUnsafeReadableBytes { raw in
            var facts = ResponseFacts()
            var texts: [JSONStringRef] = []
            let valid = JSONScanner.walkDocument(raw) { key, s throws(JSONSyntaxError) in
                try facts.read(key, &s, streamed: false, texts: &texts)
            }
            guard valid else { return ResponseFacts() }
            if !textOnlyWithoutUsage || facts.usage == nil { facts.appendTexts(texts, raw) }
            return facts
        }
    }

    /// The usage a WebSocket session's server event reports: the Realtime API's `response.done` and the Responses
    /// API's `response.completed` carry it in `response.usage`. Nil for other events and for text that is not one
    /// JSON object.
    public static func sessionEventUsage(_ event: UnsafeRawBufferPointer) -> Usage? {
        var type: JSONStringRef?
        var usage: Usage?
        let valid = JSONScanner.walkDocument(event) { key, s throws(JSONSyntaxError) in
            if key.is("type") {
                type = try s.readString()
            } else if key.is("response") {
                try s.walkObjectOrSkip { key, s throws(JSONSyntaxError) in
                    if key.is("usage") { usage = try Usage.read(&s) } else { _ = try s.skipValue() }
                }
            } else {
                _ = try s.skipValue()
            }
        }
        guard valid, let type, !type.escaped else { return nil }
        let s = JSONScanner(event)
        guard s.stringEquals(type.range, "response.done") || s.stringEquals(type.range, "response.completed") else {
            return nil
        }
        return usage
    }

    /// Adds what one stream chunk's JSON says, when it is one valid JSON object (else nothing): read in one
    /// validating pass, merged only once the whole chunk proved valid.
    mutating func absorb(chunk: ByteBuffer) {
        chunk.withUnsafeReadableBytes { raw in
            var c = ResponseFacts()
            var texts: [JSONStringRef] = []
            let valid = JSONScanner.walkDocument(raw) { key, s throws(JSONSyntaxError) in
                try c.read(key, &s, streamed: true, texts: &texts)
            }
            guard valid else { return }
            if id == nil { id = c.id }
            if model == nil { model = c.model }
            if let u = c.usage { usage = u }
            finishReasons += c.finishReasons
            appendTexts(texts, raw)
        }
    }

    private mutating func appendTexts(_ texts: [JSONStringRef], _ raw: UnsafeRawBufferPointer) {
        for t in texts { completionText += t.decode(raw) }
    }

    /// Reads one top-level member, consuming its value: id, model, usage and finish reasons into the facts, where
    /// the generated text is (choices' text, message or delta content, refusal, tool-call names and arguments;
    /// Responses API output text and arguments) into `texts`, in order. Repeated members inside a choice's tool
    /// call or an output item count as their last occurrence.
    private mutating func read(_ key: JSONKey, _ s: inout JSONScanner, streamed: Bool, texts: inout [JSONStringRef])
        throws(JSONSyntaxError)
    {
        if key.is("choices") {
            try s.walkArrayOrSkip { s throws(JSONSyntaxError) in
                try s.walkObjectOrSkip { key, s throws(JSONSyntaxError) in
                    if key.is("finish_reason") {
                        if let r = try s.readString() { finishReasons.append(r.decode(s.bytes)) }
                    } else if key.is("text") {
                        if let t = try s.readString() { texts.append(t) }
                    } else if key.is(streamed ? "delta" : "message") {
                        try Self.readMessage(&s, texts: &texts)
                    } else {
                        _ = try s.skipValue()
                    }
                }
            }
        } else if key.is("id") {
            if id == nil { id = try s.readString()?.decode(s.bytes) } else { _ = try s.skipValue() }
        } else if key.is("model") {
            if model == nil { model = try s.readString()?.decode(s.bytes) } else { _ = try s.skipValue() }
        } else if key.is("usage") {
            if let usage = try Usage.read(&s) { self.usage = usage }
        } else if key.is("output") {
            try s.walkArrayOrSkip { s throws(JSONSyntaxError) in
                var content: [JSONStringRef] = []
                var arguments: JSONStringRef?
                try s.walkObjectOrSkip { key, s throws(JSONSyntaxError) in
                    if key.is("content") {
                        content.removeAll()
                        try s.walkArrayOrSkip { s throws(JSONSyntaxError) in
                            var text: JSONStringRef?
                            try s.walkObjectOrSkip { key, s throws(JSONSyntaxError) in
                                if key.is("text") { text = try s.readString() } else { _ = try s.skipValue() }
                            }
                            if let text { content.append(text) }
                        }
                    } else if key.is("arguments") {
                        arguments = try s.readString()
                    } else {
                        _ = try s.skipValue()
                    }
                }
                texts += content
                if let arguments { texts.append(arguments) }
            }
        } else {
            _ = try s.skipValue()
        }
    }

    /// A choice's `message` (or stream `delta`): content, refusal, and each tool call's function name and arguments.
    private static func readMessage(_ s: inout JSONScanner, texts: inout [JSONStringRef]) throws(JSONSyntaxError) {
        try s.walkObjectOrSkip { key, s throws(JSONSyntaxError) in
            if key.is("content") || key.is("refusal") {
                if let c = try s.readString() { texts.append(c) }
            } else if key.is("tool_calls") {
                try s.walkArrayOrSkip { s throws(JSONSyntaxError) in
                    var name: JSONStringRef?
                    var arguments: JSONStringRef?
                    try s.walkObjectOrSkip { key, s throws(JSONSyntaxError) in
                        guard key.is("function") else {
                            _ = try s.skipValue()
                            return
                        }
                        name = nil
                        arguments = nil
                        try s.walkObjectOrSkip { key, s throws(JSONSyntaxError) in
                            if key.is("name") {
                                name = try s.readString()
                            } else if key.is("arguments") {
                                arguments = try s.readString()
                            } else {
                                _ = try s.skipValue()
                            }
                        }
                    }
                    if let name { texts.append(name) }
                    if let arguments { texts.append(arguments) }
                }
            } else {
                _ = try s.skipValue()
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
        if collectFacts { facts.absorb(chunk: data) }
        // Stripping needs the chunk as a node; when only facts are wanted, the pass above was the only one.
        guard stripInjectedUsage, let json = try? JSONNode.parse(data), json.kind == .object else { return nil }
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
