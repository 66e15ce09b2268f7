/// Character classes of the pre-tokenizer, one bit each, precomputed per Unicode scalar.
///
/// `\s` in tiktoken's regex engine (fancy-regex over Rust's regex crate) is the Unicode `White_Space`
/// property, which is what `Unicode.Scalar.Properties.isWhitespace` reports; `\p{L}`, `\p{N}` and `\p{M}`
/// are general categories.
enum ScalarClass {
    /// `\s` (Unicode White_Space).
    static let whitespace: UInt8 = 1 << 0
    /// Lu, Lt.
    static let upperTitle: UInt8 = 1 << 1
    /// Ll.
    static let lower: UInt8 = 1 << 2
    /// Lm, Lo.
    static let otherLetter: UInt8 = 1 << 3
    /// Mn, Mc, Me.
    static let mark: UInt8 = 1 << 4
    /// Nd, Nl, No.
    static let number: UInt8 = 1 << 5
    /// `\r` or `\n`.
    static let crlf: UInt8 = 1 << 6

    /// `\p{L}`.
    static let letter: UInt8 = upperTitle | lower | otherLetter
    /// o200k's `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`.
    static let o200kUpper: UInt8 = upperTitle | otherLetter | mark
    /// o200k's `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`.
    static let o200kLower: UInt8 = lower | otherLetter | mark
    /// Excluded from `[^\r\n\p{L}\p{N}]` (the optional one-character prefix of a word).
    static let notPrefix: UInt8 = letter | number | crlf
    /// Excluded from `[^\s\p{L}\p{N}]` (punctuation, symbols, marks, controls...).
    static let notPunct: UInt8 = whitespace | letter | number

    /// The Unicode version of tiktoken's character tables (the Rust regex crate's, Unicode 16.0 in tiktoken
    /// 0.14). Scalars assigned later (the Swift runtime may know a newer Unicode) are treated as unassigned,
    /// which the regex classes put in `[^\s\p{L}\p{N}]`.
    static let referenceUnicodeVersion = (major: 16, minor: 0)

    /// Never inlined: `Unicode.Scalar.Properties` and `Unicode.GeneralCategory` are resilient types, and a scanner
    /// this is inlined into pays their metadata lookups and stack allocations on every call, not only for the rare
    /// scalar above ``ScalarClassTable/tableLimit``.
    @inline(never)
    static func compute(_ value: UInt32) -> UInt8 {
        guard let scalar = Unicode.Scalar(value) else { return 0 }
        let props = scalar.properties
        if let age = props.age,
            age.major > referenceUnicodeVersion.major
                || (age.major == referenceUnicodeVersion.major && age.minor > referenceUnicodeVersion.minor)
        {
            return 0
        }
        var cls: UInt8 = props.isWhitespace ? whitespace : 0
        if value == 0x0A || value == 0x0D { cls |= crlf }
        switch props.generalCategory {
        case .uppercaseLetter, .titlecaseLetter: cls |= upperTitle
        case .lowercaseLetter: cls |= lower
        case .modifierLetter, .otherLetter: cls |= otherLetter
        case .nonspacingMark, .spacingMark, .enclosingMark: cls |= mark
        case .decimalNumber, .letterNumber, .otherNumber: cls |= number
        default: break
        }
        return cls
    }
}

/// Class of every scalar below U+30000 (the BMP and the two supplementary planes with letters: CJK extensions,
/// historic scripts), built once on first use (~200 KB); scalars above are classified on the fly.
final class ScalarClassTable: @unchecked Sendable {
    static let tableLimit: UInt32 = 0x30000
    static let shared = ScalarClassTable()

    /// Immutable after `init`; never freed (lives as long as the process).
    let classes: UnsafeMutablePointer<UInt8>

    private init() {
        let count = Int(Self.tableLimit)
        classes = .allocate(capacity: count)
        for value in 0..<UInt32(count) {
            classes[Int(value)] = ScalarClass.compute(value)
        }
    }
}
