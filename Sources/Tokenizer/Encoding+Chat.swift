/// One chat message, as far as token counting is concerned.
public struct ChatMessage: Sendable, Hashable {
    public var role: String
    public var content: String
    public var name: String?

    public init(role: String, content: String, name: String? = nil) {
        self.role = role
        self.content = content
        self.name = name
    }
}

/// A function tool definition, as far as token counting is concerned (OpenAI `tools[].function`).
public struct ToolDefinition: Sendable, Hashable {
    public struct Parameter: Sendable, Hashable {
        public var name: String
        /// JSON-schema type ("string", "integer"...).
        public var type: String
        public var description: String
        /// `enum` values, if any.
        public var enumValues: [String]

        public init(name: String, type: String, description: String = "", enumValues: [String] = []) {
            self.name = name
            self.type = type
            self.description = description
            self.enumValues = enumValues
        }
    }

    public var name: String
    public var description: String
    /// The top-level `parameters.properties`, in order.
    public var parameters: [Parameter]

    public init(name: String, description: String = "", parameters: [Parameter] = []) {
        self.name = name
        self.description = description
        self.parameters = parameters
    }
}

extension Encoding {
    /// Prompt tokens of a chat request, by the formula of OpenAI's cookbook "How to count tokens with
    /// tiktoken" (exact for gpt-3.5-turbo-0613 and later, gpt-4, gpt-4o, gpt-4o-mini on plain-text messages):
    /// 3 tokens per message, plus the tokens of its role, content and name, plus 1 if it has a name,
    /// plus 3 for the reply priming (`<|start|>assistant<|message|>`).
    public func countChatTokens(_ messages: [ChatMessage]) -> Int {
        var total = Self.chatReplyPrimingTokens
        for message in messages {
            total += chatMessageTokens(role: message.role, name: message.name, contentTokens: count(message.content))
        }
        return total
    }

    /// The reply priming every chat prompt ends with (`<|start|>assistant<|message|>`).
    public static let chatReplyPrimingTokens = 3

    /// One message of ``countChatTokens(_:)`` whose content was counted elsewhere (e.g. cached).
    public func chatMessageTokens(role: String, name: String?, contentTokens: Int) -> Int {
        var n = 3 + count(role) + contentTokens
        if let name { n += count(name) + 1 }
        return n
    }

    /// An estimate of the prompt tokens that `tools` add to a request, by the cookbook's
    /// `num_tokens_for_tools` (calibrated by OpenAI against the API for gpt-4o/gpt-4o-mini and, with
    /// `legacyModel`, gpt-3.5-turbo/gpt-4):
    ///
    ///     per tool:      funcInit (7; 10 if legacyModel) + tokens("name:description" less one trailing ".")
    ///     if it has parameters: + 3
    ///     per parameter: 3 + tokens("name:type:description" less one trailing ".")
    ///                    and, with an enum: -3 + sum over values of (3 + tokens(value))
    ///     once, if any tools: + 12
    ///
    /// Nested object schemas are not counted beyond their top-level properties, so treat this as an estimate.
    /// Returns 0 for no tools. Add ``countChatTokens(_:)`` for the whole prompt.
    public func countToolTokens(_ tools: [ToolDefinition], legacyModel: Bool = false) -> Int {
        guard !tools.isEmpty else { return 0 }
        let funcInit = legacyModel ? 10 : 7
        let propInit = 3
        let propKey = 3
        let enumInit = -3
        let enumItem = 3
        let funcEnd = 12
        var total = 0
        for tool in tools {
            total += funcInit
            total += count(tool.name + ":" + Self.droppingTrailingPeriod(tool.description))
            if !tool.parameters.isEmpty {
                total += propInit
                for parameter in tool.parameters {
                    total += propKey
                    if !parameter.enumValues.isEmpty {
                        total += enumInit
                        for value in parameter.enumValues { total += enumItem + count(value) }
                    }
                    let line =
                        parameter.name + ":" + parameter.type + ":"
                        + Self.droppingTrailingPeriod(parameter.description)
                    total += count(line)
                }
            }
        }
        return total + funcEnd
    }

    private static func droppingTrailingPeriod(_ s: String) -> String {
        s.hasSuffix(".") ? String(s.dropLast()) : s
    }
}
