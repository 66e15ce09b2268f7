import Foundation
import NIOCore
import Testing
import Tokenizer
import Wire
import Catalog
import Policy

@testable import Optimizer

/// Prices in USD per 1M tokens: input, cached input, output.
struct FixedPrices: PriceBook {
    var table: [String: (Decimal, Decimal, Decimal)] = [
        "gpt-4o": (Decimal(string: "2.50")!, Decimal(string: "1.25")!, Decimal(string: "10.00")!),
        "gpt-4o-mini": (Decimal(string: "0.15")!, Decimal(string: "0.075")!, Decimal(string: "0.60")!),
    ]

    func costPicoUSD(model: String, usage: Usage) -> Int64? {
        guard let (i, c, o) = table[model] else { return nil }
        let uncached = Decimal(usage.promptTokens - usage.cachedTokens)
        return USD.toPico((uncached * i + Decimal(usage.cachedTokens) * c + Decimal(usage.completionTokens) * o)
                          / 1_000_000)
    }
}

final class CollectingSink: RecordSink, @unchecked Sendable {
    private let lock = NSLock()
    private var items: [RequestRecord] = []
    func record(_ r: RequestRecord) {
        lock.lock()
        items.append(r)
        lock.unlock()
    }
    var records: [RequestRecord] {
        lock.lock()
        defer { lock.unlock() }
        return items
    }
}

@Suite("Planner: stream usage injection")
struct PlannerTests {
    func plan(_ body: String, endpoint: String = "chat.completions") throws -> (RequestPlan, String) {
        let view = try RequestView.parse(ByteBuffer(string: body))
        let p = Planner().plan(endpoint: endpoint, view: view)
        return (p, String(buffer: p.patch.apply(to: view.body)))
    }

    @Test func injectsWhenStreamingWithoutUsage() throws {
        let (p, out) = try plan(#"{"model":"m","stream":true,"messages":[]}"#)
        #expect(p.injectedStreamUsage)
        #expect(out == #"{"stream_options":{"include_usage":true},"model":"m","stream":true,"messages":[]}"#)
    }

    @Test func keepsOtherStreamOptions() throws {
        let (p, out) = try plan(#"{"model":"m","stream":true,"stream_options":{"include_obfuscation":false}}"#)
        #expect(p.injectedStreamUsage)
        #expect(out == #"{"model":"m","stream":true,"stream_options":{"include_usage":true,"include_obfuscation":false}}"#)
        let (_, flipped) = try plan(#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#)
        #expect(flipped == #"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#)
        let (_, empty) = try plan(#"{"model":"m","stream":true,"stream_options":{ }}"#)
        #expect(empty == #"{"model":"m","stream":true,"stream_options":{"include_usage":true }}"#)
    }

    @Test func leavesBodyAloneOtherwise() throws {
        for body in [#"{"model":"m","stream":false}"#, #"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
                     #"{"model":"m"}"#] {
            let (p, out) = try plan(body)
            #expect(!p.injectedStreamUsage)
            #expect(p.patch.isEmpty)
            #expect(out == body)
        }
        let (p, _) = try plan(#"{"model":"m","stream":true}"#, endpoint: "embeddings")
        #expect(!p.injectedStreamUsage)
    }
}

@Suite("Accounting: exact costs and records")
struct AccountingTests {
    @Test func costArithmeticIsExact() {
        var r = RequestRecord(requestID: "r", application: "a", endpoint: "chat.completions")
        r.requestedModel = "gpt-4o"
        r.servedModel = "gpt-4o-mini"
        r.usage = Usage(promptTokens: 1000, completionTokens: 200, cachedTokens: 400)
        r.tokensSaved = 300
        Accountant.price(&r, prices: FixedPrices())
        // served: (600 * 0.15 + 400 * 0.075 + 200 * 0.60) / 1e6 = (90 + 30 + 120) / 1e6 = 0.00024
        #expect(r.costUSD == Decimal(string: "0.00024"))
        // counterfactual on gpt-4o with 1300 prompt tokens (400 cached):
        // (900 * 2.50 + 400 * 1.25 + 200 * 10) / 1e6 = (2250 + 500 + 2000) / 1e6 = 0.00475
        #expect(r.counterfactualCostUSD == Decimal(string: "0.00475"))
        #expect(r.costSavedUSD == Decimal(string: "0.00451"))
        #expect(USD.format(Decimal(string: "0.0000000014")!) == "0.000000001")
        #expect(USD.format(Decimal(string: "0.0000000015")!) == "0.000000002")
    }

    @Test func unknownModelHasNoCost() {
        var r = RequestRecord(requestID: "r", application: "a", endpoint: "chat.completions")
        r.requestedModel = "mystery"
        r.usage = Usage(promptTokens: 1, completionTokens: 1)
        Accountant.price(&r, prices: FixedPrices())
        #expect(r.costUSD == nil)
        #expect(r.costSavedUSD == nil)
    }

    @Test func cachedContentCountsEqualDirectCounts() throws {
        let enc = Encoding.o200kBase
        let cache = TokenCountCache(capacity: 4)
        let system = String(repeating: "You answer questions about the attached report, briefly. ", count: 3)
        var direct: [Int] = []
        var cached: [Int] = []
        for turn in 0..<6 {
            // A conversation that grows by one turn each time, resent whole (a name, escapes, array content too).
            var messages = [#"{"role":"system","content":"\#(system)"}"#]
            for t in 0...turn {
                messages.append(#"{"role":"user","name":"u\#(t)","content":"Question \#(t): what does section \#(t) say about \"costs\"\n in 2024? Please be specific and quote it."}"#)
                messages.append(#"{"role":"assistant","content":[{"type":"text","text":"Section \#(t) says costs fell by \#(t * 7)% year over year, mostly thanks to cheaper storage."}]}"#)
            }
            let view = try RequestView.parse(ByteBuffer(string: #"{"model":"gpt-4o","messages":[\#(messages.joined(separator: ","))]}"#))
            direct.append(PromptCounter.count(view, endpoint: "chat.completions", encoding: enc))
            cached.append(PromptCounter.count(view, endpoint: "chat.completions", encoding: enc, cache: cache))
            // The formula of Encoding.countChatTokens on the decoded messages.
            let decoded = view.messages.indices.map {
                ChatMessage(role: view.messages[$0].role ?? "", content: view.text(ofMessage: $0) ?? "",
                            name: view.messages[$0].name)
            }
            #expect(direct.last == enc.countChatTokens(decoded))
        }
        #expect(cached == direct)
        #expect(cache.hits > 0 && cache.misses > 0)  // repeats were served from the cache; capacity 4 forced resets
    }

    @Test func backgroundCompletionCountsPromptAndEstimatesMissingUsage() throws {
        let sink = CollectingSink()
        let accountant = Accountant(prices: FixedPrices(), sinks: [sink])
        let view = try RequestView.parse(ByteBuffer(string:
            #"{"model":"gpt-4o","stream":true,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hello there, how are you?"}]}"#))
        var r = RequestRecord(requestID: "r1", application: "app", endpoint: "chat.completions")
        r.requestedModel = "gpt-4o"
        r.servedModel = "gpt-4o"
        r.status = 200
        accountant.submit(.init(record: r, original: view, sent: nil, completionText: "I am fine, thanks."))
        accountant.close()
        for _ in 0..<200 where sink.records.isEmpty { Thread.sleep(forTimeInterval: 0.01) }
        let out = try #require(sink.records.first)
        let enc = Encoding.o200kBase
        let expectedPrompt = enc.countChatTokens([
            ChatMessage(role: "system", content: "You are terse."),
            ChatMessage(role: "user", content: "Hello there, how are you?"),
        ])
        #expect(out.promptTokensOriginal == expectedPrompt)
        #expect(out.promptTokensOptimized == expectedPrompt)
        #expect(out.usageEstimated)
        #expect(out.usage == Usage(promptTokens: expectedPrompt, completionTokens: enc.count("I am fine, thanks.")))
        #expect(out.costUSD != nil)
        #expect(out.costSavedUSD == 0)
        #expect(accountant.ledger.totals.requests == 1)
    }

    @Test func recordsDroppedByAFullQueueAreReported() throws {
        // A queue of 4 behind a slow sink: most of 200 quick submissions are dropped, and the report says how many.
        final class SlowSink: RecordSink, @unchecked Sendable {
            func record(_ r: RequestRecord) { Thread.sleep(forTimeInterval: 0.002) }
        }
        let accountant = Accountant(prices: FixedPrices(), sinks: [SlowSink()], queueCapacity: 4)
        for i in 0..<200 {
            var r = RequestRecord(requestID: "r\(i)", application: "app", endpoint: "chat.completions")
            r.status = 200
            accountant.submit(.init(record: r, original: nil, sent: nil, completionText: ""))
        }
        accountant.close()
        for _ in 0..<500 where accountant.processedRecords + accountant.droppedRecords < 200 {
            Thread.sleep(forTimeInterval: 0.01)
        }
        #expect(accountant.droppedRecords > 0)
        #expect(accountant.processedRecords + accountant.droppedRecords == 200)
        let report = try #require(
            JSONSerialization.jsonObject(with: Data(accountant.ledger.json(droppedRecords: accountant.droppedRecords).utf8))
                as? [String: Any])
        #expect(report["records_dropped"] as? Int == accountant.droppedRecords)
        let total = try #require(report["total"] as? [String: Any])
        #expect(total["requests"] as? Int == accountant.processedRecords)
    }

    @Test func ledgerGroupsByApplicationAndModel() {
        let ledger = SavingsLedger()
        for (app, model, saved) in [("a", "gpt-4o", 10), ("a", "gpt-4o-mini", 5), ("b", "gpt-4o", 1)] {
            var r = RequestRecord(requestID: "x", application: app, endpoint: "chat.completions")
            r.servedModel = model
            r.status = 200
            r.tokensSaved = saved
            r.costUSD = Decimal(string: "0.001")
            r.costSavedUSD = Decimal(string: "0.0005")
            ledger.record(r)
        }
        #expect(ledger.totals.requests == 3)
        #expect(ledger.totals.tokensSaved == 16)
        #expect(ledger.totals.costSavedUSD == Decimal(string: "0.0015"))
        let json = ledger.json()
        #expect(json.contains(#""by_application":{"a":{"requests":2"#))
        #expect(json.contains(#""gpt-4o-mini":{"requests":1"#))
    }
}

@Suite("Planner: compression")
struct PlannerCompressionTests {
    @Test func compressionRuleSplicesCompressedMessagesAndRecordsTheSummary() throws {
        let yaml = """
            version: 1
            upstreams: { main: { url: "http://127.0.0.1:9/v1" } }
            defaults: { compression: { target_ratio: 0.3, min_prompt_tokens: 0, min_message_tokens: 0, min_quality: 0 } }
            """
        let policy = CompiledPolicy(document: try PolicyDocument.parse(yaml: yaml, file: "t.yaml", catalog: nil),
                                    catalog: ModelCatalog(entries: []))
        let docs = (1...12).map { i in
            "Document [\(i)](Title: Topic \(i)) " + (i == 7
                ? "The first Nobel Prize in Physics was awarded in 1901 to Wilhelm Conrad Röntgen of Germany."
                : "This passage talks about subject number \(i), its history, its geography and its many customs.")
        }.joined(separator: "\\n")
        let body = #"{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"\#(docs)"},{"role":"user","content":"who won the first nobel prize in physics"}],"temperature":0.70}"#
        let view = try RequestView.parse(ByteBuffer(string: body))
        let plan = Planner().plan(endpoint: "chat.completions", view: view, policy: policy)
        let summary = try #require(plan.compression)
        #expect(summary.applied)
        #expect(summary.technique.contains("selection"))
        #expect(summary.ratio < 0.5)
        #expect(plan.promptChanged)
        #expect(plan.tokensSaved > 0)
        let sent = String(buffer: plan.patch.apply(to: view.body))
        #expect(sent.contains("Röntgen"))
        #expect(sent.hasPrefix(#"{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},"#))
        #expect(sent.hasSuffix(#"{"role":"user","content":"who won the first nobel prize in physics"}],"temperature":0.70}"#))
        #expect(!sent.contains("subject number 3"))
    }
}
