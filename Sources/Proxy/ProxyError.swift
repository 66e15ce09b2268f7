/// The Proxy module's one error type: an opaque code, a human message and an optional cause.
public struct ProxyError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        public static let invalidConfiguration = Code(raw: "invalid_configuration")
        public static let bindFailed = Code(raw: "bind_failed")
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
