/// One finding of policy validation, located in the policy file.
public struct PolicyDiagnostic: Sendable, Hashable, CustomStringConvertible {
    public enum Severity: String, Sendable, Hashable {
        /// The file is refused.
        case error
        /// The file is accepted; the finding is worth a look (an unknown model name, say).
        case warning
    }

    public var severity: Severity
    /// The file name as given to the parser ("policy.yaml", "<string>").
    public var file: String
    /// 1-based line; 0 when the finding has no position (an unreadable file).
    public var line: Int
    /// 1-based column (Unicode scalars, as libyaml counts); 0 when unknown.
    public var column: Int
    public var message: String

    public init(severity: Severity, file: String, line: Int, column: Int, message: String) {
        self.severity = severity
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }

    /// `file:line:col: error: message`, the compiler's shape (editors jump to it).
    public var description: String {
        "\(file):\(line):\(column): \(severity.rawValue): \(message)"
    }
}

/// The Policy module's one error type: an opaque code, a human message, the diagnostics of an invalid document
/// and an optional cause.
public struct PolicyError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        /// The policy file could not be read.
        public static let unreadable = Code(raw: "policy_unreadable")
        /// The document is not YAML (syntax error, duplicate key).
        public static let syntax = Code(raw: "policy_syntax")
        /// The document is YAML but not a valid policy: see ``PolicyError/diagnostics``.
        public static let invalid = Code(raw: "policy_invalid")
        public var description: String { raw }
    }

    public var code: Code
    public var message: String
    /// Every error (and warning) found, in document order. Never empty for ``Code/invalid`` and ``Code/syntax``.
    public var diagnostics: [PolicyDiagnostic]
    public var cause: (any Error)?

    public init(code: Code, message: String, diagnostics: [PolicyDiagnostic] = [], cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.diagnostics = diagnostics
        self.cause = cause
    }

    /// The diagnostics of severity error.
    public var errors: [PolicyDiagnostic] { diagnostics.filter { $0.severity == .error } }

    /// Short and bounded: safe as a metric label.
    public var shortDescription: String { code.raw }

    /// The message, then one diagnostic per line.
    public var description: String {
        var text = message
        if let cause, diagnostics.isEmpty { text += " (\(cause))" }
        for d in diagnostics { text += "\n" + d.description }
        return text
    }
}
