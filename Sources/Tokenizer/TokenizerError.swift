/// The Tokenizer module's one error type: an opaque code, a human message and an optional cause.
public struct TokenizerError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        /// No encoding of that name is known (only `o200k_base` and `cl100k_base` are shipped).
        public static let unknownEncoding = Code(raw: "unknown_encoding")
        /// The vocabulary file could not be read.
        public static let vocabularyUnreadable = Code(raw: "vocabulary_unreadable")
        /// The vocabulary file's SHA-256 is not the official one.
        public static let vocabularyHashMismatch = Code(raw: "vocabulary_hash_mismatch")
        /// The vocabulary file is not in the `.tiktoken` format (base64 token, space, rank per line).
        public static let vocabularyMalformed = Code(raw: "vocabulary_malformed")
        /// A token id that the encoding does not know was given to a decoder.
        public static let unknownTokenID = Code(raw: "unknown_token_id")
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
