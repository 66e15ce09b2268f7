import Foundation
import Testing

@testable import Catalog

@Suite struct BundledCatalogTests {
    @Test func loadsAndCoversTheRequiredModels() throws {
        let catalog = try ModelCatalog.bundled()
        let required = [
            "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-5", "gpt-5-mini", "gpt-5-nano",
            "o1", "o3", "o3-mini", "o4-mini", "gpt-3.5-turbo", "gpt-4-turbo", "gpt-4", "text-embedding-3-small",
            "text-embedding-3-large", "text-embedding-ada-002", "smollm2",
        ]
        for id in required {
            #expect(catalog.lookup(id)?.kind == .exact, "\(id)")
        }
        for entry in catalog.entries.values {
            #expect(["o200k_base", "cl100k_base"].contains(entry.encoding), "\(entry.id)")
            #expect(entry.priceSource.url.hasPrefix("https://"), "\(entry.id)")
            #expect(entry.priceSource.date.count == 10, "\(entry.id)")
            #expect(entry.contextWindow > 0, "\(entry.id)")
        }
        let smol = try #require(catalog.lookup("smollm2")?.entry)
        #expect(smol.pricing == ModelPricing(input: 0, cachedInput: nil, output: 0))
        #expect(catalog.lookup("gpt-4")?.entry.encoding == "cl100k_base")
        #expect(catalog.lookup("groq/llama-3.3-70b-versatile")?.entry.encodingIsEstimate == true)
    }
}

@Suite struct LookupTests {
    static let catalog = ModelCatalog(entries: [
        entry("gpt-4o", input: "2.50", cached: "1.25", output: "10.00"),
        entry("gpt-4o-mini", input: "0.15", cached: "0.075", output: "0.60"),
        entry("gpt-4", input: "30.00", cached: nil, output: "60.00"),
        entry("o3", input: "2.00", cached: "0.50", output: "8.00"),
        entry("meta-llama/Llama-3.3-70B-Instruct-Turbo", input: "0.88", cached: nil, output: "0.88"),
    ])

    @Test func exactThenProviderPrefixThenSnapshot() throws {
        let c = Self.catalog
        #expect(c.lookup("gpt-4o")?.entry.id == "gpt-4o")
        #expect(c.lookup("GPT-4O")?.kind == .exact)
        #expect(c.lookup("openai/gpt-4o-mini")?.entry.id == "gpt-4o-mini")
        #expect(c.lookup("meta-llama/llama-3.3-70b-instruct-turbo")?.kind == .exact)
        let snapshot = try #require(c.lookup("gpt-4o-2024-08-06"))
        #expect(snapshot.entry.id == "gpt-4o")
        #expect(snapshot.kind == .snapshot)
        #expect(c.lookup("gpt-4o-mini-2024-07-18")?.entry.id == "gpt-4o-mini")  // longest prefix wins
        #expect(c.lookup("gpt-4-0613")?.entry.id == "gpt-4")
        #expect(c.lookup("openai/o3-2025-04-16")?.entry.id == "o3")
        #expect(c.lookup("gpt-4o-latest")?.entry.id == "gpt-4o")
    }

    @Test func variantsAndUnknownsAreNotGuessed() {
        let c = Self.catalog
        #expect(c.lookup("o3-pro") == nil)  // not priced as o3
        #expect(c.lookup("gpt-4-1106-preview") == nil)  // not priced as gpt-4
        #expect(c.lookup("gpt-4oo") == nil)
        #expect(c.lookup("gpt-") == nil)
        #expect(c.lookup("") == nil)
        #expect(c.cost(model: "unknown-model", inputTokens: 1, outputTokens: 1) == nil)
    }

    static func entry(_ id: String, input: String, cached: String?, output: String) -> ModelEntry {
        ModelEntry(
            id: id, provider: "test", encoding: "o200k_base", contextWindow: 128_000, maxOutputTokens: 16_384,
            pricing: ModelPricing(
                input: ModelCatalog.parsePrice(input)!, cachedInput: cached.flatMap(ModelCatalog.parsePrice),
                output: ModelCatalog.parsePrice(output)!
            ),
            features: ModelFeatures(tools: true, jsonMode: true, vision: false, streaming: true, reasoning: false),
            priceSource: PriceSource(url: "https://example.invalid", date: "2026-11-25")
        )
    }
}

@Suite struct CostTests {
    let catalog = LookupTests.catalog

    @Test func handComputedCosts() throws {
        // 1000 * 2.50 / 1e6 + 500 * 10.00 / 1e6 = 0.0025 + 0.005
        #expect(catalog.cost(model: "gpt-4o", inputTokens: 1000, outputTokens: 500) == Decimal(string: "0.0075"))
        // (6000 * 2.50 + 4000 * 1.25 + 1000 * 10.00) / 1e6 = (15000 + 5000 + 10000) / 1e6
        #expect(
            catalog.cost(model: "gpt-4o-2024-08-06", inputTokens: 10_000, cachedInputTokens: 4000, outputTokens: 1000)
                == Decimal(string: "0.03"))
        // (3 * 0.075 + 7 * 0.60) / 1e6 = 4.425 / 1e6, exact
        #expect(
            catalog.cost(model: "gpt-4o-mini", inputTokens: 3, cachedInputTokens: 3, outputTokens: 7)
                == Decimal(string: "0.000004425"))
        // No cached price: cached tokens bill at the input price. (100 * 30 + 10 * 60) / 1e6
        #expect(
            catalog.cost(model: "gpt-4", inputTokens: 100, cachedInputTokens: 50, outputTokens: 10)
                == Decimal(string: "0.0036"))
        // One token of a $0.15/1M price is exactly 1.5e-7 USD (a Double would give 1.4999999999999999e-07).
        #expect(catalog.cost(model: "gpt-4o-mini", inputTokens: 1, outputTokens: 0) == Decimal(string: "0.00000015"))
        // Large volumes stay exact: 123,456,789,012 tokens at $2.50/1M = $308,641.97253
        #expect(
            catalog.cost(model: "gpt-4o", inputTokens: 123_456_789_012, outputTokens: 0)
                == Decimal(string: "308641.97253"))
        #expect(catalog.cost(model: "gpt-4o", inputTokens: 0, outputTokens: 0) == 0)
    }

    @Test func invalidCounts() {
        #expect(catalog.cost(model: "gpt-4o", inputTokens: 10, cachedInputTokens: 11, outputTokens: 0) == nil)
        #expect(catalog.cost(model: "gpt-4o", inputTokens: -1, outputTokens: 0) == nil)
        #expect(catalog.cost(model: "gpt-4o", inputTokens: 1, outputTokens: -1) == nil)
    }

    @Test func bundledPricesGiveTheExpectedCost() throws {
        // gpt-5-nano: (997 * 0.05 + 3 * 0.005 + 7 * 0.40) / 1e6 = (49.85 + 0.015 + 2.8) / 1e6
        let catalog = try ModelCatalog.bundled()
        #expect(
            catalog.cost(model: "gpt-5-nano-2025-08-07", inputTokens: 1000, cachedInputTokens: 3, outputTokens: 7)
                == Decimal(string: "0.000052665"))
        #expect(catalog.cost(model: "smollm2", inputTokens: 5000, outputTokens: 5000) == 0)
    }

    @Test func displayRounding() {
        #expect(ModelCatalog.formatUSD(Decimal(string: "0.0075")!) == "0.007500000")
        #expect(ModelCatalog.formatUSD(Decimal(string: "0.0000000005")!) == "0.000000001")  // half-up
        #expect(ModelCatalog.formatUSD(Decimal(string: "0.00000000049")!) == "0.000000000")
        #expect(ModelCatalog.formatUSD(Decimal(string: "308641.97253")!) == "308641.972530000")
        #expect(ModelCatalog.formatUSD(0) == "0.000000000")
    }

    @Test func priceParsing() {
        #expect(ModelCatalog.parsePrice("2.50") == Decimal(string: "2.5"))
        #expect(ModelCatalog.parsePrice("0") == 0)
        for bad in ["", ".", "-1", "1e3", "2.5.0", "2,50", " 1", "abc"] {
            #expect(ModelCatalog.parsePrice(bad) == nil, "\(bad)")
        }
    }
}

@Suite struct OverrideTests {
    @Test func userFileReplacesAndAdds() throws {
        let json = """
            {"models": [
              {"id": "GPT-4o", "provider": "azure", "encoding": "o200k_base", "context_window": 128000,
               "max_output_tokens": 4096,
               "price_per_1m_tokens_usd": {"input": "5.00", "cached_input": null, "output": "15.00"},
               "features": {"tools": true, "json_mode": true, "vision": true, "streaming": true, "reasoning": false},
               "price_source": {"url": "https://example.invalid/contract", "date": "2026-11-01"}},
              {"id": "my-finetune", "provider": "local", "encoding": "cl100k_base", "context_window": 4096,
               "max_output_tokens": 1024,
               "price_per_1m_tokens_usd": {"input": "0.001", "output": "0.002"},
               "features": {"tools": false, "json_mode": false, "vision": false, "streaming": true, "reasoning": false},
               "price_source": {"url": "https://example.invalid/x", "date": "2026-11-02"}, "note": "ours"}
            ]}
            """
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("catalog-\(UUID().uuidString).json")
        try Data(json.utf8).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }

        let bundled = try ModelCatalog.bundled()
        let merged = try ModelCatalog.load(userFile: url)
        #expect(merged.entries.count == bundled.entries.count + 1)
        let gpt4o = try #require(merged.lookup("gpt-4o")?.entry)
        #expect(gpt4o.provider == "azure")
        #expect(gpt4o.pricing.cachedInput == nil)
        // (1000 * 5.00 + 100 * 15.00) / 1e6; snapshots of the replaced id resolve to the replacement.
        #expect(
            merged.cost(model: "gpt-4o-2024-11-20", inputTokens: 1000, outputTokens: 100) == Decimal(string: "0.0065"))
        #expect(merged.lookup("my-finetune")?.entry.note == "ours")
        #expect(merged.lookup("gpt-4.1")?.entry.pricing == bundled.lookup("gpt-4.1")?.entry.pricing)  // untouched
    }

    @Test func invalidFilesAreRejected() throws {
        let bad = [
            "not json",
            #"{"models": [{"id": "x"}]}"#,
            #"{"models": [{"id": "x", "provider": "p", "encoding": "o200k_base", "context_window": 1, "max_output_tokens": 1, "price_per_1m_tokens_usd": {"input": "1e3", "output": "1"}, "features": {"tools": true, "json_mode": true, "vision": true, "streaming": true, "reasoning": false}, "price_source": {"url": "u", "date": "d"}}]}"#,
        ]
        for text in bad {
            let error = #expect(throws: CatalogError.self) { try ModelCatalog(json: Data(text.utf8)) }
            #expect(error?.code == .invalid)
        }
        let missing = #expect(throws: CatalogError.self) {
            try ModelCatalog.load(userFile: URL(fileURLWithPath: "/nonexistent/models.json"))
        }
        #expect(missing?.code == .unreadable)
    }
}

@Suite struct PicoCostTests {
    @Test func picoCostEqualsDecimalCostForEveryBundledModel() throws {
        let catalog = try ModelCatalog.bundled()
        for (id, _) in catalog.entries {
            for (i, c, o) in [(1_000, 0, 200), (123_457, 99_999, 8_191), (0, 0, 0), (1, 1, 1)] {
                let d = try #require(catalog.cost(model: id, inputTokens: i, cachedInputTokens: c, outputTokens: o))
                let p = try #require(catalog.costPicoUSD(model: id, inputTokens: i, cachedInputTokens: c, outputTokens: o))
                #expect(Decimal(sign: .plus, exponent: -12, significand: Decimal(p)) == d, "\(id)")
            }
        }
    }
}
