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
        // Byte comparisons, ASCII case folded (model ids are ASCII; a non-ASCII byte simply never matches).
        var utf8 = model
        return utf8.withUTF8 { bytes -> ModelEncoding in
            var start = 0
            if let slash = bytes.lastIndex(of: UInt8(ascii: "/")) { start = slash + 1 }
            if bytes.count - start >= 3, lower(bytes[start]) == UInt8(ascii: "f"), lower(bytes[start + 1]) == UInt8(ascii: "t"),
               bytes[start + 2] == UInt8(ascii: ":")
            {
                start += 3
            }
            let n = bytes.count - start
            for entry in modelPrefixBytes where entry.prefix.count <= n {
                var same = true
                for (k, c) in entry.prefix.enumerated() where lower(bytes[start + k]) != c {
                    same = false
                    break
                }
                if same { return ModelEncoding(name: entry.name, isEstimate: false) }
            }
            return ModelEncoding(name: .o200kBase, isEstimate: true)
        }
    }

    private static let modelPrefixBytes: [(prefix: [UInt8], name: Name)] = modelPrefixes.map { (Array($0.prefix.utf8), $0.name) }

    @inline(__always)
    private static func lower(_ c: UInt8) -> UInt8 {
        c &- UInt8(ascii: "A") < 26 ? c | 0x20 : c
    }

    /// The loaded encoding of `model` (see ``encodingName(forModel:)``) and whether it is a guess.
    public static func forModel(_ model: String) throws(TokenizerError) -> (encoding: Encoding, isEstimate: Bool) {
        let selection = encodingName(forModel: model)
        return (try named(selection.name), selection.isEstimate)
    }
}
