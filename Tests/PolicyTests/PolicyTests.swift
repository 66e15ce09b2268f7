import Catalog
import Foundation
import Testing

@testable import Policy

let exampleYAML = """
    version: 1
    upstreams:
      primary: { url: "https://api.openai.com/v1" }      # api key: passed through from the client, or from an env var / file
      backup:  { url: "http://127.0.0.1:9002/v1" }
    defaults:
      upstream: primary
      fallback: [backup]          # on connect failure, timeout, 429 or 5xx, before any byte reached the client
    rules:                        # first matching rule wins; what it does not set comes from defaults
      - name: support-bot-cheaper
        match: { app: support-bot, model: "gpt-4o" }     # app: the x-app-id request header, or the sidecar's app id
        set_model: gpt-4o-mini
      - name: batch-to-backup
        match: { app: batch, model: "gpt-4*" }            # model globs
        upstream: backup
    """

func catalog() throws -> ModelCatalog { try ModelCatalog.bundled() }

func compile(_ yaml: String, catalog: ModelCatalog? = nil) throws -> CompiledPolicy {
    let c = try catalog ?? ModelCatalog.bundled()
    return CompiledPolicy(document: try PolicyDocument.parse(yaml: yaml, file: "t.yaml", catalog: c), catalog: c)
}

/// The diagnostics of an invalid document.
func diagnostics(_ yaml: String) -> [PolicyDiagnostic] {
    do {
        _ = try PolicyDocument.parse(yaml: yaml, file: "bad.yaml", catalog: try? ModelCatalog.bundled())
        return []
    } catch {
        return error.diagnostics
    }
}

func entry(_ id: String, provider: String = "openai", context: Int = 128_000, input: String, output: String,
           tools: Bool = true, json: Bool = true, vision: Bool = false, streaming: Bool = true, reasoning: Bool = false) -> ModelEntry {
    ModelEntry(
        id: id, provider: provider, encoding: "o200k_base", contextWindow: context, maxOutputTokens: 4096,
        pricing: ModelPricing(input: Decimal(string: input)!, cachedInput: nil, output: Decimal(string: output)!),
        features: ModelFeatures(tools: tools, jsonMode: json, vision: vision, streaming: streaming, reasoning: reasoning),
        priceSource: PriceSource(url: "test", date: "2026-01-01"))
}

@Suite struct ExampleTests {
    @Test func exampleIsAcceptedAndBehavesAsCommented() throws {
        let policy = try compile(exampleYAML)
        #expect(policy.document.upstreams.map(\.name) == ["primary", "backup"])
        #expect(policy.document.upstreams.allSatisfy { $0.apiKey == .passthrough })
        #expect(policy.document.warnings.isEmpty)

        let support = policy.plan(PolicyRequest(app: "support-bot", model: "gpt-4o"))
        #expect(support.ruleName == "support-bot-cheaper")
        #expect(support.servedModel == "gpt-4o-mini")
        #expect(support.upstream == "primary")
        #expect(support.fallback == ["backup"])  // inherited from defaults
        #expect(support.modelChanged)

        // "gpt-4o" is exact, not a prefix.
        let other = policy.plan(PolicyRequest(app: "support-bot", model: "gpt-4o-mini"))
        #expect(other.ruleName == nil)
        #expect(other.servedModel == "gpt-4o-mini")

        let batch = policy.plan(PolicyRequest(app: "batch", model: "gpt-4.1-mini"))
        #expect(batch.ruleName == "batch-to-backup")
        #expect(batch.servedModel == "gpt-4.1-mini")
        #expect(batch.upstream == "backup")
        #expect(batch.fallback == [])  // the default fallback minus its own upstream

        let noRule = policy.plan(PolicyRequest(app: "batch", model: "o3"))
        #expect(noRule.ruleName == nil)
        #expect(noRule.upstream == "primary")
        #expect(noRule.ruleHeaderValue == "default")
        #expect(noRule.retry.maxAttempts == 2)  // one per upstream of the chain
    }

    @Test func fixturesValidate() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../fixtures/policies")
        let c = try catalog()
        for name in ["example.yaml", "full.yaml", "budgets.yaml"] {
            _ = try CompiledPolicy(path: dir.appendingPathComponent(name).path, catalog: c)
        }
        #expect(throws: PolicyError.self) {
            try CompiledPolicy(path: dir.appendingPathComponent("invalid.yaml").path, catalog: c)
        }
    }

    @Test func builtInIsPassthrough() {
        let policy = CompiledPolicy.builtIn(upstreamURL: "http://127.0.0.1:9/v1")
        let d = policy.plan(PolicyRequest(app: "x", model: "gpt-4o"))
        #expect(d.ruleName == nil && d.servedModel == "gpt-4o" && d.upstream == "default" && d.fallback.isEmpty)
        #expect(d.retry.maxAttempts == 1)
        #expect(policy.upstreams["default"]?.url == "http://127.0.0.1:9/v1")
        #expect(!policy.needsPromptTokens)
    }
}

let matchingPolicy = """
    version: 1
    upstreams: { a: "https://a.example/v1", b: "https://b.example/v1" }
    defaults: { upstream: a }
    rules:
      - { name: by-app, match: { app: alpha } }
      - { name: by-app-glob, match: { app: "team-*" } }
      - { name: by-app-list, match: { app: [x1, "y?"] } }
      - { name: by-model, match: { model: "o[13]*" } }
      - { name: by-endpoint, match: { endpoint: embeddings } }
      - { name: by-endpoints, match: { endpoint: [responses, completions] } }
      - { name: small-prompt, match: { prompt_tokens: { max: 10 } } }
      - { name: big-prompt, match: { prompt_tokens: { min: 1000, max: 2000 } } }
      - { name: tools, match: { tools: true } }
      - { name: json, match: { json_mode: true } }
      - { name: meta, match: { metadata: { tier: "gold*", region: eu } } }
      - { name: combo, match: { app: combo, model: "gpt-*", tools: false } , upstream: b }
    """

@Suite struct MatchingTests {
    struct Case: Sendable, CustomStringConvertible {
        var request: PolicyRequest
        var rule: String?
        var description: String { "\(request.app)/\(request.model) -> \(rule ?? "nil")" }
    }

    static let cases: [Case] = [
        Case(request: PolicyRequest(app: "alpha", model: "gpt-4o"), rule: "by-app"),
        Case(request: PolicyRequest(app: "alphabet", model: "gpt-4o"), rule: nil),
        Case(request: PolicyRequest(app: "team-red", model: "gpt-4o"), rule: "by-app-glob"),
        Case(request: PolicyRequest(app: "team-", model: "gpt-4o"), rule: "by-app-glob"),
        Case(request: PolicyRequest(app: "x1", model: "gpt-4o"), rule: "by-app-list"),
        Case(request: PolicyRequest(app: "yz", model: "gpt-4o"), rule: "by-app-list"),
        Case(request: PolicyRequest(app: "yzz", model: "gpt-4o"), rule: nil),
        Case(request: PolicyRequest(app: "q", model: "o1-preview"), rule: "by-model"),
        Case(request: PolicyRequest(app: "q", model: "o3"), rule: "by-model"),
        Case(request: PolicyRequest(app: "q", model: "o4-mini"), rule: nil),
        Case(request: PolicyRequest(app: "q", model: "m", endpoint: .embeddings), rule: "by-endpoint"),
        Case(request: PolicyRequest(app: "q", model: "m", endpoint: .responses), rule: "by-endpoints"),
        Case(request: PolicyRequest(app: "q", model: "m", endpoint: .completions), rule: "by-endpoints"),
        Case(request: PolicyRequest(app: "q", model: "m", endpoint: .other), rule: nil),
        Case(request: PolicyRequest(app: "q", model: "m", promptTokens: 10), rule: "small-prompt"),
        Case(request: PolicyRequest(app: "q", model: "m", promptTokens: 11), rule: nil),
        Case(request: PolicyRequest(app: "q", model: "m", promptTokens: 1000), rule: "big-prompt"),
        Case(request: PolicyRequest(app: "q", model: "m", promptTokens: 2000), rule: "big-prompt"),
        Case(request: PolicyRequest(app: "q", model: "m", promptTokens: 2001), rule: nil),
        Case(request: PolicyRequest(app: "q", model: "m", promptTokens: nil), rule: nil),
        Case(request: PolicyRequest(app: "q", model: "m", hasTools: true), rule: "tools"),
        Case(request: PolicyRequest(app: "q", model: "m", jsonMode: true), rule: "json"),
        Case(request: PolicyRequest(app: "q", model: "m", hasTools: true, jsonMode: true), rule: "tools"),
        Case(request: PolicyRequest(app: "q", model: "m", metadata: ["tier": "gold-1", "region": "eu"]), rule: "meta"),
        Case(request: PolicyRequest(app: "q", model: "m", metadata: ["tier": "gold-1", "region": "us"]), rule: nil),
        Case(request: PolicyRequest(app: "q", model: "m", metadata: ["tier": "gold-1"]), rule: nil),
        Case(request: PolicyRequest(app: "combo", model: "gpt-4o"), rule: "combo"),
        Case(request: PolicyRequest(app: "combo", model: "gpt-4o", hasTools: true), rule: "tools"),
        Case(request: PolicyRequest(app: "combo", model: "claude"), rule: nil),
    ]

    @Test(arguments: cases)
    func matches(_ c: Case) throws {
        let policy = try compile(matchingPolicy)
        #expect(policy.plan(c.request).ruleName == c.rule)
    }

    @Test func firstMatchWinsAndDefaultsInherit() throws {
        let policy = try compile(
            """
            version: 1
            upstreams: { a: "https://a.example/v1", b: "https://b.example/v1", c: "https://c.example/v1" }
            defaults: { upstream: a, fallback: [b, c], retry: { max_attempts: 5, backoff: { initial: 50ms, max: 1s } } }
            rules:
              - { name: first, match: { model: "gpt-*" }, set_model: gpt-4o-mini }
              - { name: second, match: { model: "gpt-4o" }, set_model: gpt-4.1, upstream: c }
              - { name: own-chain, match: { model: "o3" }, upstream: b, fallback: [a], retry: { max_attempts: 1 } }
            """)
        let d = policy.plan(PolicyRequest(app: "x", model: "gpt-4o"))
        #expect(d.ruleName == "first")
        #expect(d.servedModel == "gpt-4o-mini")
        #expect(d.upstream == "a" && d.fallback == ["b", "c"])
        #expect(d.retry == RetrySettings(maxAttempts: 5, initialBackoff: .milliseconds(50), maxBackoff: .seconds(1)))
        #expect(d.upstream(forAttempt: 1) == "a" && d.upstream(forAttempt: 2) == "b")
        #expect(d.upstream(forAttempt: 3) == "c" && d.upstream(forAttempt: 5) == "c")
        #expect(d.retry.delay(beforeAttempt: 1) == .zero)
        #expect(d.retry.delay(beforeAttempt: 2) == .milliseconds(50))
        #expect(d.retry.delay(beforeAttempt: 4) == .milliseconds(200))
        #expect(d.retry.delay(beforeAttempt: 10) == .seconds(1))
        let o = policy.plan(PolicyRequest(app: "x", model: "o3"))
        #expect(o.upstream == "b" && o.fallback == ["a"] && o.retry.maxAttempts == 1 && o.servedModel == "o3")
    }

    @Test func globs() throws {
        let table: [(String, String, Bool)] = [
            ("gpt-4*", "gpt-4o", true), ("gpt-4*", "gpt-4", true), ("gpt-4*", "gpt-3.5", false),
            ("*-mini", "o4-mini", true), ("*-mini", "mini", false), ("*4o*", "gpt-4o-mini", true),
            ("gpt-*-mini", "gpt-4o-mini", true), ("gpt-*-mini", "gpt-mini", false),
            ("o[1-3]", "o2", true), ("o[!1-3]", "o2", false), ("o[!1-3]", "o4", true),
            ("a?c*d", "abcxxd", true), ("a?c*d", "acd", false), ("*a*b*", "xxaxxbxx", true), ("*a*b*", "ba", false),
            ("a\\*", "a*", true), ("a\\*", "ab", false), ("*", "", true), ("", "", true), ("", "x", false),
        ]
        for (pattern, text, expected) in table {
            #expect(try Glob(pattern).matches(text) == expected, "\(pattern) ~ \(text)")
        }
        #expect(throws: Glob.SyntaxError.self) { try Glob("a[") }
        #expect(throws: Glob.SyntaxError.self) { try Glob("a[]") }
        #expect(throws: Glob.SyntaxError.self) { try Glob("a\\") }
        #expect(throws: Glob.SyntaxError.self) { try Glob("[z-a]") }
    }

    @Test func durations() {
        #expect(PolicyDuration.parse("10s") == .seconds(10))
        #expect(PolicyDuration.parse("500ms") == .milliseconds(500))
        #expect(PolicyDuration.parse("2m") == .seconds(120))
        #expect(PolicyDuration.parse("1h") == .seconds(3600))
        #expect(PolicyDuration.parse("1.5s") == .milliseconds(1500))
        for bad in ["10", "s", "10 s", "-1s", "1.s", "10d", "ms"] { #expect(PolicyDuration.parse(bad) == nil, "\(bad)") }
    }
}
