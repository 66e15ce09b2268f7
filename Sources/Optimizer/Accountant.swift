import Foundation
import NIOCore
import Tokenizer
import Wire

/// Prices per model. The `Catalog` provides them.
public protocol PriceBook: Sendable {
    /// Cost of `usage` on `model` in whole pico-dollars (1e-12 USD; cached prompt tokens at the cached price), or
    /// nil for an unknown model.
    func costPicoUSD(model: String, usage: Usage) -> Int64?
}

/// Turns finished exchanges into `RequestRecord`s: prices them (cheap, on the hot path, for response headers),
/// then, on a background thread, counts prompt tokens exactly, estimates usage the upstream did not report, and
/// hands the record to the ledger and the sinks.
public final class Accountant: Sendable {
    /// What the proxy knows when an exchange ends. A class: it crosses from the event loop to the accounting
    /// thread as one reference (a struct of this size was copied on the way, each of its ~40 references retained
    /// and released).
    public final class Draft: Sendable {
        public let record: RequestRecord
        /// The client's request, as read.
        public let original: RequestView?
        /// The body sent upstream when its prompt differs from the client's (nil: same prompt).
        public let sent: ByteBuffer?
        /// Generated text seen in the response (for usage estimates).
        public let completionText: String
        /// Response bytes not yet read by the hot path (read here for usage, ids and text).
        public let response: [ByteBuffer]
        /// Whether `response` is an SSE stream.
        public let responseIsStream: Bool

        public init(record: RequestRecord, original: RequestView?, sent: ByteBuffer?, completionText: String,
                    response: [ByteBuffer] = [], responseIsStream: Bool = false)
        {
            self.record = record
            self.original = original
            self.sent = sent
            self.completionText = completionText
            self.response = response
            self.responseIsStream = responseIsStream
        }
    }

    public let ledger: SavingsLedger
    public let recent: RecentRecords
    private let prices: any PriceBook
    private let sinks: [any RecordSink]
    private let queue: BoundedWorkQueue<Draft>

    /// Records waiting for the accounting worker before new ones are dropped (``ProxyConfiguration``'s default too).
    public static let defaultQueueCapacity = 16_384

    public init(prices: any PriceBook, sinks: [any RecordSink] = [], queueCapacity: Int = defaultQueueCapacity) {
        self.prices = prices
        self.sinks = sinks
        let ledger = SavingsLedger()
        let recent = RecentRecords()
        self.ledger = ledger
        self.recent = recent
        let all: [any RecordSink] = [ledger, recent] + sinks
        let counts = TokenCountCache()  // used by the queue's one worker thread only
        self.queue = BoundedWorkQueue(capacity: queueCapacity, name: "accounting") { draft in
            let record = Accountant.complete(draft, prices: prices, counts: counts)
            for sink in all { sink.record(record) }
        }
    }

    /// Records dropped because the accounting queue was full.
    public var droppedRecords: Int { queue.droppedCount }
    public var processedRecords: Int { queue.processedCount }

    /// Fills the cost fields from `record.usage`: actual cost on the served model; counterfactual cost of the
    /// original prompt (`usage.promptTokens + tokensSaved`) and the same completion on the requested model.
    public func price(_ record: inout RequestRecord) {
        Self.price(&record, prices: prices)
    }

    static func price(_ record: inout RequestRecord, prices: any PriceBook) {
        guard let usage = record.usage else { return }
        let served = record.servedModel ?? record.requestedModel
        let requested = record.requestedModel ?? served
        record.costPicoUSD = served.flatMap { prices.costPicoUSD(model: $0, usage: usage) }
        var original = usage
        original.promptTokens += record.tokensSaved
        record.counterfactualCostPicoUSD = requested.flatMap { prices.costPicoUSD(model: $0, usage: original) }
        if let a = record.costPicoUSD, let c = record.counterfactualCostPicoUSD {
            record.costSavedPicoUSD = c - a
        } else {
            record.costSavedPicoUSD = nil
        }
    }

    /// Non-blocking hand-off; the record is completed and published on the accounting thread.
    public func submit(_ draft: Draft) {
        queue.offer(draft)
    }

    /// Stops after publishing what is queued.
    public func close() { queue.close() }

    /// Exact prompt counts (before and after optimization), usage estimate when missing, prices.
    static func complete(_ draft: Draft, prices: any PriceBook, counts: TokenCountCache? = nil) -> RequestRecord {
        var r = draft.record
        var completionText = draft.completionText
        if !draft.response.isEmpty {
            let facts: ResponseFacts
            if draft.responseIsStream {
                var tap = StreamTap(stripInjectedUsage: false)
                for part in draft.response { _ = tap.observe(part) }
                facts = tap.facts
            } else {
                var whole = ByteBuffer()
                for var part in draft.response { whole.writeBuffer(&part) }
                facts = ResponseFacts.fromBody(whole, textOnlyWithoutUsage: true)
            }
            if r.usage == nil { r.usage = facts.usage }
            if let id = facts.id { r.responseID = id }
            if let m = facts.model { r.responseModel = m }
            if r.finishReasons.isEmpty { r.finishReasons = facts.finishReasons }
            if completionText.isEmpty { completionText = facts.completionText }
        }
        guard let view = draft.original else {
            // Nothing read of the request (a WebSocket session, say): its reported usage is priced as it is.
            if r.usage != nil && r.costPicoUSD == nil { price(&r, prices: prices) }
            return r
        }
        r.parameters = RequestParameters(view)
        let model = r.servedModel ?? r.requestedModel ?? ""
        guard let (encoding, estimate) = try? Encoding.forModel(model) else { return r }
        r.tokenCountIsEstimate = estimate
        let before = PromptCounter.count(view, endpoint: r.endpoint, encoding: encoding, cache: counts)
        r.promptTokensOriginal = before
        if let sent = draft.sent, let sentView = try? RequestView.parse(sent) {
            r.promptTokensOptimized = PromptCounter.count(sentView, endpoint: r.endpoint, encoding: encoding,
                                                          cache: counts)
            if r.compression?.applied == true, let a = r.promptTokensOptimized {
                // The compressor's own figure is a sum over message contents; the exact whole-prompt count wins.
                r.tokensSaved = max(0, before - a)
            }
        } else {
            r.promptTokensOptimized = before
        }
        if r.usage == nil && r.status < 400 && r.status != 0 {
            // The upstream reported nothing (llama.cpp's server when streaming): count it ourselves.
            r.usage = Usage(promptTokens: r.promptTokensOptimized ?? 0,
                            completionTokens: encoding.count(completionText))
            r.usageEstimated = true
        }
        if r.costPicoUSD == nil { price(&r, prices: prices) }
        return r
    }
}

/// Prompt token counting per endpoint, with OpenAI's documented chat formula.
public enum PromptCounter {
    /// `cache` (one thread's) remembers the counts of message contents already seen: chat clients resend the
    /// whole conversation, and the same system prompt, with every turn.
    public static func count(_ view: RequestView, endpoint: String, encoding: Encoding,
                             cache: TokenCountCache? = nil) -> Int
    {
        switch endpoint {
        case "chat.completions":
            // Encoding.countChatTokens, message by message (so each content can come from the cache).
            var n = Encoding.chatReplyPrimingTokens
            for (i, m) in view.messages.enumerated() {
                let content: Int
                if let cache, let range = m.contentRange, range.count >= TokenCountCache.minimumBytes {
                    content = cache.count(view.body, range, encoding) { view.text(ofMessage: i).map(encoding.count) ?? 0 }
                } else {
                    content = view.text(ofMessage: i).map(encoding.count) ?? 0
                }
                n += encoding.chatMessageTokens(role: m.role ?? "", name: m.name, contentTokens: content)
            }
            if let tools = view.field("tools"), tools.kind == .array {
                n += encoding.countToolTokens(toolDefinitions(JSONNode(buffer: view.body, range: tools.valueRange,
                                                                      kind: .array)))
            }
            return n
        case "completions":
            return texts(view, key: "prompt").reduce(0) { $0 + encoding.count($1) }
        case "embeddings":
            return texts(view, key: "input").reduce(0) { $0 + encoding.count($1) }
        case "responses":
            var n = texts(view, key: "instructions").reduce(0) { $0 + encoding.count($1) }
            if let input = view.field("input") {
                let node = JSONNode(buffer: view.body, range: input.valueRange, kind: input.kind)
                if let s = node.string {
                    n += encoding.count(s)
                } else {
                    for item in node.elements {
                        if let c = item["content"]?.string {
                            n += 3 + encoding.count(c)
                        } else {
                            for part in item["content"]?.elements ?? [] {
                                if let t = part["text"]?.string { n += encoding.count(t) }
                            }
                        }
                    }
                }
            }
            return n
        default:
            return 0
        }
    }

    static func texts(_ view: RequestView, key: String) -> [String] {
        guard let f = view.field(key) else { return [] }
        let node = JSONNode(buffer: view.body, range: f.valueRange, kind: f.kind)
        if let s = node.string { return [s] }
        return node.elements.compactMap(\.string)
    }

    static func toolDefinitions(_ tools: JSONNode) -> [ToolDefinition] {
        tools.elements.compactMap { tool in
            guard let f = tool["function"], let name = f["name"]?.string else { return nil }
            var params: [ToolDefinition.Parameter] = []
            if let props = f["parameters"]?["properties"], props.kind == .object {
                for (key, value) in props.members {
                    params.append(ToolDefinition.Parameter(
                        name: key, type: value["type"]?.string ?? "string",
                        description: value["description"]?.string ?? "",
                        enumValues: value["enum"]?.elements.compactMap(\.string) ?? []))
                }
            }
            return ToolDefinition(name: name, description: f["description"]?.string ?? "", parameters: params)
        }
    }
}

/// Token counts of message contents seen recently, keyed by the contents' JSON bytes (a 64-bit hash, their
/// length and the encoding). Not thread-safe: one per thread (the accounting worker). Full: starts over.
public final class TokenCountCache: @unchecked Sendable {
    /// Shorter contents are counted directly (hashing would save little).
    public static let minimumBytes = 64
    private struct Key: Hashable {
        var hash: Int
        var length: Int
        var encoding: ObjectIdentifier
    }
    private var counts: [Key: Int] = [:]
    private let capacity: Int
    public private(set) var hits = 0
    public private(set) var misses = 0

    public init(capacity: Int = 8192) {
        self.capacity = capacity
    }

    /// Seeded per process, so contents cannot be crafted offline to share a key.
    private static let seed = UInt64.random(in: .min ... .max)

    /// The count for the bytes at `range` of `body` (offsets from its reader index), computing it on a miss.
    public func count(_ body: ByteBuffer, _ range: Range<Int>, _ encoding: Encoding, compute: () -> Int) -> Int {
        // Not SipHash: ~7 instructions a byte, a quarter of a passthrough request's accounting for a 1 KB prompt.
        let h = body.withUnsafeReadableBytes { raw in
            ByteHash.hash(UnsafeRawBufferPointer(rebasing: raw[range]), seed: Self.seed)
        }
        let key = Key(hash: Int(truncatingIfNeeded: h), length: range.count, encoding: ObjectIdentifier(encoding))
        if let n = counts[key] {
            hits += 1
            return n
        }
        misses += 1
        let n = compute()
        if counts.count >= capacity { counts.removeAll(keepingCapacity: true) }
        counts[key] = n
        return n
    }
}
