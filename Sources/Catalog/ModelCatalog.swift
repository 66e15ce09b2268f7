import Foundation

/// The Catalog module's one error type: an opaque code, a human message and an optional cause.
public struct CatalogError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        /// A catalog file could not be read.
        public static let unreadable = Code(raw: "catalog_unreadable")
        /// A catalog file is not valid catalog JSON.
        public static let invalid = Code(raw: "catalog_invalid")
        public var description: String { raw }
    }

    public var code: Code
    public var message: String
    public var cause: (any Error)?

    public init(code: Code, message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// Short and bounded: safe as a metric label.
    public var shortDescription: String { code.raw }

    public var description: String {
        if let cause { return "\(message) (\(cause))" }
        return message
    }
}

/// How a model name was resolved to a catalog entry.
public struct CatalogMatch: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// The name (or the name less a `provider/` prefix) is an entry id.
        case exact
        /// The name is an entry id followed by a snapshot suffix ("gpt-4o-2024-08-06" -> "gpt-4o").
        case snapshot
    }

    public var entry: ModelEntry
    public var kind: Kind
}

/// Models with their limits, features and prices: the bundled `models.json`, optionally extended by a user file.
///
/// Immutable and `Sendable`: build one at startup and share it.
///
/// **Lookup** (``lookup(_:)``) is case-insensitive: the exact id first; then, if the name has a `provider/`
/// prefix ("openai/gpt-4o"), the name without it; then the longest id that the name extends by a snapshot suffix:
/// `-` followed only by digits and hyphens ("-2024-08-06", "-0613") or `-latest`. Other suffixes ("-pro",
/// "-preview", "-audio-preview") do not match, so an unknown variant is reported as unknown instead of being
/// priced as its base model.
///
/// **Cost** (``cost(model:inputTokens:cachedInputTokens:outputTokens:)``) is exact `Decimal` arithmetic:
/// `((input - cached) * inputPrice + cached * cachedPrice + output * outputPrice) / 1_000_000` USD, with no
/// intermediate rounding (prices have at most a few decimals, so the result is exact). Round only for display:
/// ``formatUSD(_:)`` rounds half-up to 1e-9 USD.
public struct ModelCatalog: Sendable {
    /// Entries by lowercased id.
    public private(set) var entries: [String: ModelEntry]

    public init(entries: [ModelEntry]) {
        var byID: [String: ModelEntry] = [:]
        for entry in entries { byID[entry.id.lowercased()] = entry }
        self.entries = byID
    }

    /// Parses catalog JSON (`{"models": [...]}`, see models.json).
    public init(json data: Data, source: String = "catalog") throws(CatalogError) {
        struct File: Decodable {
            var models: [ModelEntry]
        }
        do {
            self.init(entries: try JSONDecoder().decode(File.self, from: data).models)
        } catch {
            throw CatalogError(code: .invalid, message: "\(source) is not a valid model catalog", cause: error)
        }
    }

    /// Reads a catalog JSON file.
    public init(contentsOf url: URL) throws(CatalogError) {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw CatalogError(code: .unreadable, message: "cannot read \(url.path)", cause: error)
        }
        try self.init(json: data, source: url.path)
    }

    /// The shipped models.json (this module's resource bundle).
    public static var bundledURL: URL? {
        Bundle.module.url(forResource: "models", withExtension: "json", subdirectory: "Resources")
    }

    /// The shipped catalog.
    public static func bundled() throws(CatalogError) -> ModelCatalog {
        guard let url = bundledURL else {
            throw CatalogError(code: .unreadable, message: "models.json is missing from the Catalog resources")
        }
        return try ModelCatalog(contentsOf: url)
    }

    /// The shipped catalog, with the entries of `userFile` (if given) replacing same-id entries and adding new ones.
    public static func load(userFile: URL? = nil) throws(CatalogError) -> ModelCatalog {
        let base = try bundled()
        guard let userFile else { return base }
        return base.merging(try ModelCatalog(contentsOf: userFile))
    }

    /// This catalog with `other`'s entries replacing same-id (case-insensitive) entries and adding new ones.
    public func merging(_ other: ModelCatalog) -> ModelCatalog {
        var merged = self
        merged.entries.merge(other.entries) { _, new in new }
        return merged
    }

    /// The entry for a model name (see the type's documentation for the rules), or nil.
    public func lookup(_ model: String) -> CatalogMatch? {
        let name = model.lowercased()
        if let entry = entries[name] { return CatalogMatch(entry: entry, kind: .exact) }
        var candidates = [name]
        if let slash = name.firstIndex(of: "/") {
            let bare = String(name[name.index(after: slash)...])
            if let entry = entries[bare] { return CatalogMatch(entry: entry, kind: .exact) }
            candidates.append(bare)
        }
        for candidate in candidates {
            var best: ModelEntry?
            var bestLength = 0
            for (id, entry) in entries where id.count > bestLength && candidate.hasPrefix(id) {
                if Self.isSnapshotSuffix(candidate.dropFirst(id.count)) {
                    best = entry
                    bestLength = id.count
                }
            }
            if let best { return CatalogMatch(entry: best, kind: .snapshot) }
        }
        return nil
    }

    /// The cost in USD of one request, exact; nil if the model is unknown or the counts are invalid (negative, or
    /// more cached than input tokens). `cachedInputTokens` are the part of `inputTokens` served from the prompt
    /// cache (OpenAI's `usage.prompt_tokens_details.cached_tokens`), billed at the cached price when the model
    /// has one, else at the input price.
    public func cost(model: String, inputTokens: Int, cachedInputTokens: Int = 0, outputTokens: Int) -> Decimal? {
        guard let entry = lookup(model)?.entry else { return nil }
        return Self.cost(
            pricing: entry.pricing, inputTokens: inputTokens, cachedInputTokens: cachedInputTokens,
            outputTokens: outputTokens
        )
    }

    /// The same cost in whole pico-dollars (1e-12 USD): exact for every price with at most six decimals per 1M
    /// tokens (otherwise rounded half-up to the pico-dollar). Cheap integer arithmetic, for per-request accounting.
    public func costPicoUSD(model: String, inputTokens: Int, cachedInputTokens: Int = 0, outputTokens: Int) -> Int64? {
        guard let entry = lookup(model)?.entry else { return nil }
        return Self.costPicoUSD(pricing: entry.pricing, inputTokens: inputTokens, cachedInputTokens: cachedInputTokens,
                                outputTokens: outputTokens)
    }

    public static func costPicoUSD(pricing: ModelPricing, inputTokens: Int, cachedInputTokens: Int = 0,
                                   outputTokens: Int) -> Int64?
    {
        guard inputTokens >= 0, outputTokens >= 0, cachedInputTokens >= 0, cachedInputTokens <= inputTokens else {
            return nil
        }
        if let total = integerPico(pricing, inputTokens, cachedInputTokens, outputTokens) { return total }
        guard let usd = cost(pricing: pricing, inputTokens: inputTokens, cachedInputTokens: cachedInputTokens,
                             outputTokens: outputTokens)
        else { return nil }
        var scaled = usd * Decimal(sign: .plus, exponent: 12, significand: 1)
        var rounded = Decimal()
        NSDecimalRound(&rounded, &scaled, 0, .plain)
        guard rounded < Decimal(Int64.max) else { return nil }
        return Int64(truncating: NSDecimalNumber(decimal: rounded))
    }

    /// The cost as integer pico-dollars when the prices are whole pico-dollars per token and nothing overflows.
    private static func integerPico(_ pricing: ModelPricing, _ input: Int, _ cached: Int, _ output: Int) -> Int64? {
        guard let u = pricing.units else { return nil }
        let (a, o1) = Int64(input - cached).multipliedReportingOverflow(by: u.input)
        let (b, o2) = Int64(cached).multipliedReportingOverflow(by: u.cached)
        let (c, o3) = Int64(output).multipliedReportingOverflow(by: u.output)
        let (ab, o4) = a.addingReportingOverflow(b)
        let (total, o5) = ab.addingReportingOverflow(c)
        return o1 || o2 || o3 || o4 || o5 ? nil : total
    }

    /// ``cost(model:inputTokens:cachedInputTokens:outputTokens:)`` for given prices.
    public static func cost(pricing: ModelPricing, inputTokens: Int, cachedInputTokens: Int = 0, outputTokens: Int)
        -> Decimal?
    {
        guard inputTokens >= 0, outputTokens >= 0, cachedInputTokens >= 0, cachedInputTokens <= inputTokens else {
            return nil
        }
        if let total = integerPico(pricing, inputTokens, cachedInputTokens, outputTokens) {
            // Integer pico-dollars: the same exact result without Decimal division.
            return Decimal(sign: .plus, exponent: -12, significand: Decimal(total))
        }
        let uncached = Decimal(inputTokens - cachedInputTokens) * pricing.input
        let cached = Decimal(cachedInputTokens) * (pricing.cachedInput ?? pricing.input)
        let output = Decimal(outputTokens) * pricing.output
        return (uncached + cached + output) / Decimal(1_000_000)
    }

    /// `usd` rounded half-up to 9 decimal places (1e-9 USD), e.g. "0.000012500". For display and logs only.
    public static func formatUSD(_ usd: Decimal) -> String {
        var value = usd
        var rounded = Decimal()
        NSDecimalRound(&rounded, &value, 9, .plain)
        var text = rounded.description
        // Always show 9 decimals.
        if let dot = text.firstIndex(of: ".") {
            let decimals = text.distance(from: dot, to: text.endIndex) - 1
            text += String(repeating: "0", count: max(0, 9 - decimals))
        } else {
            text += ".000000000"
        }
        return text
    }

    /// A price string: digits with at most one '.', e.g. "2.50" or "0.075".
    static func parsePrice(_ text: String) -> Decimal? {
        var dots = 0
        var digits = 0
        for c in text.utf8 {
            if c == UInt8(ascii: ".") {
                dots += 1
            } else if c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") {
                digits += 1
            } else {
                return nil
            }
        }
        guard digits > 0, dots <= 1 else { return nil }
        return Decimal(string: text, locale: Locale(identifier: "en_US_POSIX"))
    }

    /// "-" then only digits and hyphens ("-2024-08-06", "-0613"), or "-latest".
    static func isSnapshotSuffix(_ rest: Substring) -> Bool {
        guard rest.first == "-", rest.count > 1 else { return false }
        if rest == "-latest" { return true }
        return rest.dropFirst().allSatisfy { $0 == "-" || ("0"..."9").contains($0) }
    }
}
