import Foundation

/// Prices of one model in USD per 1M tokens, exact (parsed from decimal strings such as "2.50").
public struct ModelPricing: Sendable, Hashable {
    /// Uncached input (prompt) tokens.
    public var input: Decimal { didSet { units = Self.units(input, cachedInput, output) } }
    /// Cached input tokens; nil when the provider has no cache discount (cached tokens then bill at `input`).
    public var cachedInput: Decimal? { didSet { units = Self.units(input, cachedInput, output) } }
    /// Output (completion, including reasoning) tokens.
    public var output: Decimal { didSet { units = Self.units(input, cachedInput, output) } }
    /// The same prices as whole pico-dollars (1e-12 USD) per token, when they are exact that way (at most six
    /// decimals per 1M tokens, as every real price list has): cost is then integer arithmetic, still exact.
    var units: (input: Int64, cached: Int64, output: Int64)?

    public init(input: Decimal, cachedInput: Decimal?, output: Decimal) {
        self.input = input
        self.cachedInput = cachedInput
        self.output = output
        self.units = Self.units(input, cachedInput, output)
    }

    static func units(_ input: Decimal, _ cached: Decimal?, _ output: Decimal) -> (Int64, Int64, Int64)? {
        func exact(_ d: Decimal) -> Int64? {
            let scaled = d * Decimal(1_000_000)
            var rounded = Decimal()
            var s = scaled
            NSDecimalRound(&rounded, &s, 0, .plain)
            guard rounded == scaled, rounded >= 0, rounded < Decimal(1_000_000_000_000) else { return nil }
            return Int64(truncating: NSDecimalNumber(decimal: rounded))
        }
        guard let i = exact(input), let c = exact(cached ?? input), let o = exact(output) else { return nil }
        return (i, c, o)
    }

    public static func == (a: ModelPricing, b: ModelPricing) -> Bool {
        a.input == b.input && a.cachedInput == b.cachedInput && a.output == b.output
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(input)
        hasher.combine(cachedInput)
        hasher.combine(output)
    }
}

/// What a model supports, as far as the optimizer cares.
public struct ModelFeatures: Sendable, Hashable, Codable {
    public var tools: Bool
    public var jsonMode: Bool
    public var vision: Bool
    public var streaming: Bool
    public var reasoning: Bool

    public init(tools: Bool, jsonMode: Bool, vision: Bool, streaming: Bool, reasoning: Bool) {
        self.tools = tools
        self.jsonMode = jsonMode
        self.vision = vision
        self.streaming = streaming
        self.reasoning = reasoning
    }

    enum CodingKeys: String, CodingKey {
        case tools, vision, streaming, reasoning
        case jsonMode = "json_mode"
    }
}

/// Where a price was read, and when.
public struct PriceSource: Sendable, Hashable, Codable {
    public var url: String
    /// ISO date (YYYY-MM-DD) the price was read.
    public var date: String

    public init(url: String, date: String) {
        self.url = url
        self.date = date
    }
}

/// One model of the catalog (one element of `models` in models.json).
public struct ModelEntry: Sendable, Hashable {
    /// The model id as sent in requests ("gpt-4o", "meta-llama/Llama-3.3-70B-Instruct-Turbo").
    public var id: String
    /// "openai", "groq", "together", "deepseek", "mistral", "local"...
    public var provider: String
    /// The tiktoken encoding to count with ("o200k_base" or "cl100k_base").
    public var encoding: String
    /// True when the model's real tokenizer is not `encoding` (counts are estimates).
    public var encodingIsEstimate: Bool
    public var contextWindow: Int
    public var maxOutputTokens: Int
    public var pricing: ModelPricing
    public var features: ModelFeatures
    public var priceSource: PriceSource
    /// Caveats, e.g. an unverified price.
    public var note: String?

    public init(
        id: String, provider: String, encoding: String, encodingIsEstimate: Bool = false, contextWindow: Int,
        maxOutputTokens: Int, pricing: ModelPricing, features: ModelFeatures, priceSource: PriceSource,
        note: String? = nil
    ) {
        self.id = id
        self.provider = provider
        self.encoding = encoding
        self.encodingIsEstimate = encodingIsEstimate
        self.contextWindow = contextWindow
        self.maxOutputTokens = maxOutputTokens
        self.pricing = pricing
        self.features = features
        self.priceSource = priceSource
        self.note = note
    }
}

extension ModelEntry: Decodable {
    enum CodingKeys: String, CodingKey {
        case id, provider, encoding, features, note
        case encodingIsEstimate = "encoding_is_estimate"
        case contextWindow = "context_window"
        case maxOutputTokens = "max_output_tokens"
        case prices = "price_per_1m_tokens_usd"
        case priceSource = "price_source"
    }

    enum PriceKeys: String, CodingKey {
        case input, output
        case cachedInput = "cached_input"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        provider = try c.decode(String.self, forKey: .provider)
        encoding = try c.decode(String.self, forKey: .encoding)
        encodingIsEstimate = try c.decodeIfPresent(Bool.self, forKey: .encodingIsEstimate) ?? false
        contextWindow = try c.decode(Int.self, forKey: .contextWindow)
        maxOutputTokens = try c.decode(Int.self, forKey: .maxOutputTokens)
        features = try c.decode(ModelFeatures.self, forKey: .features)
        priceSource = try c.decode(PriceSource.self, forKey: .priceSource)
        note = try c.decodeIfPresent(String.self, forKey: .note)
        let p = try c.nestedContainer(keyedBy: PriceKeys.self, forKey: .prices)
        func price(_ key: PriceKeys) throws -> Decimal? {
            guard let text = try p.decodeIfPresent(String.self, forKey: key) else { return nil }
            guard let value = ModelCatalog.parsePrice(text) else {
                throw DecodingError.dataCorruptedError(
                    forKey: key, in: p,
                    debugDescription: "'\(text)' is not a non-negative decimal string such as \"2.50\""
                )
            }
            return value
        }
        guard let input = try price(.input), let output = try price(.output) else {
            throw DecodingError.dataCorruptedError(
                forKey: .prices, in: c, debugDescription: "input and output prices are required")
        }
        pricing = ModelPricing(input: input, cachedInput: try price(.cachedInput), output: output)
        guard !id.isEmpty, contextWindow >= 0, maxOutputTokens >= 0 else {
            throw DecodingError.dataCorruptedError(
                forKey: .id, in: c, debugDescription: "empty id or negative token limit")
        }
    }
}
