import Catalog
import Foundation
import Testing

@testable import Policy

@Suite struct BudgetTests {
    let yaml = """
        version: 1
        upstreams: { a: "https://a.example/v1" }
        rules:
          - { name: cheaper, match: { app: chatbot, model: "gpt-4.1" }, set_model: gpt-4o }
        budgets:
          - { app: chatbot, usd_per_hour: "5.00", action: downgrade, downgrade_to: gpt-4o-mini }
          - { app: chatbot, usd_per_day: "20.00", action: reject }
        """

    @Test func downgradeThenReject() throws {
        let policy = try compile(yaml)
        let tracker = BudgetTracker()
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        let request = PolicyRequest(app: "chatbot", model: "gpt-4.1")

        #expect(policy.plan(request, budgets: tracker, now: t0).budget == .none)
        tracker.record(app: "chatbot", usd: Decimal(string: "4.99")!, at: t0)
        #expect(policy.plan(request, budgets: tracker, now: t0).servedModel == "gpt-4o")

        tracker.record(app: "chatbot", usd: Decimal(string: "0.01")!, at: t0.addingTimeInterval(30))
        let down = policy.plan(request, budgets: tracker, now: t0.addingTimeInterval(60))
        #expect(down.budget == .downgraded(from: "gpt-4o", to: "gpt-4o-mini"))
        #expect(down.servedModel == "gpt-4o-mini" && down.ruleName == "cheaper")
        // Other apps are not affected.
        #expect(policy.plan(PolicyRequest(app: "other", model: "gpt-4.1"), budgets: tracker, now: t0).budget == .none)

        // An hour later the hourly window is clear again; the day still counts it.
        let later = t0.addingTimeInterval(3600 + 120)
        #expect(policy.plan(request, budgets: tracker, now: later).budget == .none)
        let s = tracker.state(app: "chatbot", at: later)
        #expect(s.spentHour == 0 && s.spentDay == Decimal(5))

        // 15 more over the day: 20 >= 20 -> reject, which wins over the downgrade.
        tracker.record(app: "chatbot", usd: 15, at: later)
        let rejected = policy.plan(request, budgets: tracker, now: later)
        guard case .reject(let rejection) = rejected.budget else {
            Issue.record("expected reject, got \(rejected.budget)")
            return
        }
        #expect(rejected.isRejected)
        #expect(rejection.status == 429 && rejection.retryAfterSeconds == 3600)
        #expect(rejection.message.contains("'chatbot'") && rejection.message.contains("limit $20 per day"))
        let body = try JSONSerialization.jsonObject(with: Data(rejection.jsonBody.utf8)) as? [String: Any]
        let error = body?["error"] as? [String: Any]
        #expect(error?["type"] as? String == "insufficient_quota")
        #expect(error?["code"] as? String == "budget_exceeded")
        #expect(error?["message"] as? String == rejection.message)
        #expect(error?["param"] is NSNull)
    }

    @Test func rollingWindows() {
        let tracker = BudgetTracker()
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)  // a minute boundary? not required
        tracker.record(app: "a", usd: 1, at: t0)
        tracker.record(app: "a", usd: 2, at: t0.addingTimeInterval(30 * 60))
        #expect(tracker.state(app: "a", at: t0.addingTimeInterval(45 * 60)).spentHour == 3)
        #expect(tracker.state(app: "a", at: t0.addingTimeInterval(61 * 60)).spentHour == 2)
        #expect(tracker.state(app: "a", at: t0.addingTimeInterval(23 * 3600)).spentDay == 3)
        #expect(tracker.state(app: "a", at: t0.addingTimeInterval(25 * 3600)).spentDay == 0)
        #expect(tracker.state(app: "nobody", at: t0).spentDay == 0)
    }

    @Test func concurrentRecordsAddUp() async {
        let tracker = BudgetTracker()
        let t = Date(timeIntervalSince1970: 1_800_000_000)
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<8 {
                group.addTask {
                    for _ in 0..<1000 { tracker.record(app: "app-\(i % 3)", usd: Decimal(string: "0.001")!, at: t) }
                }
            }
        }
        let total = (0..<3).map { tracker.state(app: "app-\($0)", at: t).spentHour }.reduce(0, +)
        #expect(total == Decimal(8))
    }
}

@Suite struct SelectTests {
    let models = ModelCatalog(entries: [
        entry("big", input: "5.00", output: "15.00", vision: true),
        entry("mid", input: "0.50", output: "1.50"),
        entry("cheap-no-tools", input: "0.05", output: "0.10", tools: false),
        entry("cheap-small", context: 8_000, input: "0.10", output: "0.20"),
        entry("local", provider: "local", input: "0", output: "0"),
        entry("thinker", input: "2.00", output: "8.00", reasoning: true),
        entry("embed", input: "0.02", output: "0", tools: false, json: false, streaming: false),
    ])

    func policy(_ select: String) throws -> CompiledPolicy {
        try compile(
            """
            version: 1
            upstreams: { a: "https://a.example/v1" }
            rules:
              - name: pick
                select: \(select)
            """, catalog: models)
    }

    @Test func cheapestSatisfyingConstraints() throws {
        let p = try policy(
            "{ optimize_for: cost, constraints: { features: [tools], min_context_window: 16000, exclude_providers: [local] } }")
        let d = p.plan(PolicyRequest(app: "x", model: "gpt-4o", promptTokens: 1000))
        #expect(d.servedModel == "mid")
        let rationale = d.selection?.rationale ?? ""
        #expect(rationale.hasPrefix("mid: cheapest of"))
        #expect(rationale.contains("features tools"))
        #expect(rationale.contains("context window >= 16000"))
        #expect(rationale.contains("excluding providers local"))
        #expect(rationale.contains("est. $0.000884000 per request"))  // 1000 x 0.50 + 256 x 1.50 per 1M
        #expect(rationale.contains("next: thinker"))
        #expect(d.selection?.estimatedCostUSD == Decimal(string: "0.000884"))
        #expect(p.needsPromptTokens)
    }

    @Test func requestNeedsAndSizeNarrowTheChoice() throws {
        let p = try policy("{ optimize_for: cost, constraints: { exclude_providers: [local] } }")
        // Without tools the cheapest chat model wins; with tools it must support them; a big prompt skips 8k.
        #expect(p.plan(PolicyRequest(app: "x", model: "m", promptTokens: 100)).servedModel == "cheap-no-tools")
        #expect(p.plan(PolicyRequest(app: "x", model: "m", promptTokens: 100, hasTools: true)).servedModel == "cheap-small")
        #expect(p.plan(PolicyRequest(app: "x", model: "m", promptTokens: 9_000, hasTools: true)).servedModel == "mid")
        // Embedding models (no features) are never selected.
        #expect(!(p.plan(PolicyRequest(app: "x", model: "m")).selection.map { $0.selector.rankedModels.contains("embed") } ?? true))
    }

    @Test func maxCostPerRequest() throws {
        let p = try policy(
            "{ optimize_for: quality, expected_output_tokens: 100, constraints: { max_cost_per_request_usd: \"0.001\", exclude_providers: [local] } }")
        // 1000 prompt tokens: big costs 0.0065, thinker 0.0028, mid 0.00065 -> mid is the best affordable.
        let d = p.plan(PolicyRequest(app: "x", model: "m", promptTokens: 1000))
        #expect(d.servedModel == "mid")
        #expect(d.selection?.rationale.contains("max $0.001 per request") == true)
        // Nothing fits a huge prompt: the requested model is served, and the rationale says so.
        let none = p.plan(PolicyRequest(app: "x", model: "requested", promptTokens: 10_000_000))
        #expect(none.servedModel == "requested" && none.selection?.model == nil)
        #expect(none.selection?.rationale.contains("no catalog model") == true)
    }

    @Test func latencyAndQualityProxies() throws {
        let q = try policy("{ optimize_for: quality, constraints: { exclude_providers: [local] } }")
        // log2(8 + 0.01) + 1.5 (reasoning) = 4.5 beats log2(15 + 0.01) = 3.9: the documented proxy.
        #expect(q.plan(PolicyRequest(app: "x", model: "m")).servedModel == "thinker")
        let nq = try policy("{ optimize_for: quality, constraints: { models: [big, mid] } }")
        #expect(nq.plan(PolicyRequest(app: "x", model: "m")).servedModel == "big")
        let l = try policy("{ optimize_for: latency, constraints: { features: [tools], exclude_providers: [local] } }")
        #expect(l.plan(PolicyRequest(app: "x", model: "m")).servedModel == "cheap-small")
        let r = try policy("{ optimize_for: quality, constraints: { features: [reasoning] } }")
        #expect(r.plan(PolicyRequest(app: "x", model: "m")).servedModel == "thinker")
    }

    @Test func bundledCatalogSelection() throws {
        let p = try compile(
            """
            version: 1
            upstreams: { a: "https://a.example/v1" }
            rules:
              - select: { optimize_for: cost, constraints: { features: [tools, vision], exclude_providers: [local] } }
            """)
        let d = p.plan(PolicyRequest(app: "x", model: "gpt-4o", promptTokens: 500))
        #expect(d.servedModel == "gpt-5-nano")
        #expect(d.ruleName == "rule-1")
    }
}

@Suite struct ReloadTests {
    func write(_ text: String, to path: String) throws {
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    @Test func refusesABadFileAndKeepsServing() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("policy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("policy.yaml").path
        let c = try ModelCatalog.bundled()
        let store = PolicyStore(initial: .builtIn(upstreamURL: "https://api.openai.com/v1"), catalog: c)
        #expect(store.current.source == "built-in")

        try write(exampleYAML, to: path)
        guard case .success(let good) = store.reload(from: path) else {
            Issue.record("example should load")
            return
        }
        #expect(store.current === good && store.reloadCount == 1 && store.failureCount == 0)

        try write(exampleYAML.replacingOccurrences(of: "upstream: backup", with: "upstream: bakup"), to: path)
        guard case .failure(let error) = store.reload(from: path) else {
            Issue.record("bad file should be refused")
            return
        }
        #expect(error.diagnostics.first?.message.contains("unknown upstream 'bakup'") == true)
        #expect(error.diagnostics.first?.file == path)
        #expect(store.current === good)
        #expect(store.failureCount == 1 && store.lastError != nil)
        #expect(store.current.plan(PolicyRequest(app: "support-bot", model: "gpt-4o")).servedModel == "gpt-4o-mini")

        // A missing file is refused too.
        if case .success = store.reload(from: dir.appendingPathComponent("missing.yaml").path) {
            Issue.record("missing file should be refused")
        }
        #expect(store.failureCount == 2 && store.current === good)

        try write(exampleYAML.replacingOccurrences(of: "gpt-4o-mini", with: "gpt-4.1-nano"), to: path)
        #expect((try? store.reload(from: path).get()) != nil)
        #expect(store.current.plan(PolicyRequest(app: "support-bot", model: "gpt-4o")).servedModel == "gpt-4.1-nano")
        #expect(store.lastError == nil && store.reloadCount == 2)
    }

    @Test func readsDuringReloadsAlwaysSeeAPolicy() async throws {
        let c = try ModelCatalog.bundled()
        let a = try compile(exampleYAML, catalog: c)
        let b = CompiledPolicy.builtIn(upstreamURL: "https://b.example/v1")
        let store = PolicyStore(initial: a, catalog: c)
        await withTaskGroup(of: Int.self) { group in
            group.addTask {
                for i in 0..<2000 { store.replace(with: i % 2 == 0 ? b : a) }
                return 0
            }
            for _ in 0..<2 {
                group.addTask {
                    var seen = 0
                    for _ in 0..<20000 {
                        let d = store.current.plan(PolicyRequest(app: "support-bot", model: "gpt-4o"))
                        if d.servedModel == "gpt-4o-mini" || d.servedModel == "gpt-4o" { seen += 1 }
                    }
                    return seen
                }
            }
            var total = 0
            for await n in group { total += n }
            #expect(total == 40000)
        }
    }
}
