/// Which encoding a model uses, and whether that is known or a guess.
public struct ModelEncoding: Sendable, Hashable {
    /// The encoding's name.
    public var name: Encoding.Name
    /// True when the model is not one we know: `o200k_base` is then a best guess and counts are estimates.
    public var isEstimate: Bool

    public init(name: Encoding.Name, isEstimate: Bool) {
        self.name = name
        self.isEstimate = isEstimate
    }

    /// The loaded encoding.
    public func encoding() throws(TokenizerError) -> Encoding { try Encoding.named(name) }
}

extension Encoding {
    /// Model-name prefixes (after stripping any `provider/` prefix and a fine-tune `ft:` prefix, lowercased),
    /// longest first. Matches tiktoken's `encoding_for_model` for these families.
    static let modelPrefixes: [(prefix: String, name: Name)] = [
        ("text-embedding-ada-002", .cl100kBase),
        ("text-embedding-3-", .cl100kBase),
        ("gpt-3.5-turbo", .cl100kBase),
        ("gpt-35-turbo", .cl100kBase),  // Azure spelling
        ("chatgpt-4o", .o200kBase),
        ("gpt-4o", .o200kBase),
        ("gpt-4.1", .o200kBase),
        ("gpt-4.5", .o200kBase),
        ("gpt-oss", .o200kBase),  // o200k_harmony: same ordinary-text tokens as o200k_base
        ("gpt-5", .o200kBase),
        ("gpt-4", .cl100kBase),
        ("o1", .o200kBase),
        ("o3", .o200kBase),
        ("o4", .o200kBase),
    ].sorted { $0.prefix.count > $1.prefix.count }

    /// The encoding of `model`: gpt-4o*, gpt-4.1*, gpt-4.5*, gpt-5*, o1*, o3*, o4* -> o200k_base; gpt-4*,
    /// gpt-3.5-turbo*, text-embedding-3-*, text-embedding-ada-002 -> cl100k_base; anything else -> o200k_base
    /// with `isEstimate`. A provider prefix ("openai/gpt-4o", "azure/gpt-4o") and a fine-tune prefix
    /// ("ft:gpt-4o-mini:org::id") are ignored.
    public static func encodingName(forModel model: String) -> ModelEncoding {
        var id = Substring(model.lowercased())
        if let slash = id.lastIndex(of: "/") { id = id[id.index(after: slash)...] }
        if id.hasPrefix("ft:") { id = id.dropFirst(3) }
        for entry in modelPrefixes where id.hasPrefix(entry.prefix) {
            return ModelEncoding(name: entry.name, isEstimate: false)
        }
        return ModelEncoding(name: .o200kBase, isEstimate: true)
    }

    /// The loaded encoding of `model` (see ``encodingName(forModel:)``) and whether it is a guess.
    public static func forModel(_ model: String) throws(TokenizerError) -> (encoding: Encoding, isEstimate: Bool) {
        let selection = encodingName(forModel: model)
        return (try named(selection.name), selection.isEstimate)
    }
}
