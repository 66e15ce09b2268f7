import Testing

@testable import Tokenizer

@Suite struct ModelEncodingTests {
    @Test(arguments: [
        ("gpt-4o", Encoding.Name.o200kBase), ("gpt-4o-mini-2024-07-18", .o200kBase), ("gpt-4.1-nano", .o200kBase),
        ("gpt-5", .o200kBase), ("gpt-5-mini", .o200kBase), ("o1", .o200kBase), ("o3-mini", .o200kBase),
        ("o4-mini", .o200kBase), ("chatgpt-4o-latest", .o200kBase), ("openai/gpt-4.1", .o200kBase),
        ("ft:gpt-4o-mini:acme::abc123", .o200kBase), ("GPT-4O", .o200kBase), ("FT:GPT-4.1:x::y", .o200kBase),
        ("Azure/GPT-35-Turbo", .cl100kBase),
        ("gpt-4", .cl100kBase), ("gpt-4-turbo", .cl100kBase), ("gpt-4-0613", .cl100kBase),
        ("gpt-3.5-turbo", .cl100kBase), ("gpt-3.5-turbo-0125", .cl100kBase), ("azure/gpt-35-turbo", .cl100kBase),
        ("text-embedding-3-small", .cl100kBase), ("text-embedding-3-large", .cl100kBase),
        ("text-embedding-ada-002", .cl100kBase),
    ])
    func knownModels(model: String, expected: Encoding.Name) {
        #expect(Encoding.encodingName(forModel: model) == ModelEncoding(name: expected, isEstimate: false))
    }

    @Test(arguments: ["llama-3.1-8b-instant", "groq/llama-3.3-70b-versatile", "smollm2", "deepseek-chat", "", "ft:",
                      "gpt/", "é-gpt-4o"])
    func unknownModelsAreEstimates(model: String) throws {
        #expect(Encoding.encodingName(forModel: model) == ModelEncoding(name: .o200kBase, isEstimate: true))
        let selection = try Encoding.forModel(model)
        #expect(selection.isEstimate)
        #expect(selection.encoding.name == .o200kBase)
    }
}

@Suite struct ChatCountingTests {
    /// The cookbook's tool example ("How to count tokens with tiktoken", section 7): the cookbook reports 101
    /// prompt tokens for gpt-4o, both by its formula and from the API. Each part was recomputed with the real
    /// tiktoken: messages 33 + tools 68 (o200k_base); 34 + 71 with cl100k_base and the legacy constants.
    static let messages = [
        ChatMessage(
            role: "system", content: "You are a helpful assistant that can answer to questions about the weather."),
        ChatMessage(role: "user", content: "What's the weather like in San Francisco?"),
    ]
    static let tools = [
        ToolDefinition(
            name: "get_current_weather",
            description: "Get the current weather in a given location",
            parameters: [
                .init(name: "location", type: "string", description: "The city and state, e.g. San Francisco, CA"),
                .init(
                    name: "unit", type: "string", description: "The unit of temperature to return",
                    enumValues: ["celsius", "fahrenheit"]
                ),
            ]
        )
    ]

    @Test func cookbookWeatherExample() throws {
        let o200k = try Encoding.named(.o200kBase)
        #expect(o200k.countChatTokens(Self.messages) == 33)
        #expect(o200k.countToolTokens(Self.tools) == 68)
        #expect(o200k.countChatTokens(Self.messages) + o200k.countToolTokens(Self.tools) == 101)
        let cl100k = try Encoding.named(.cl100kBase)
        #expect(cl100k.countChatTokens(Self.messages) + cl100k.countToolTokens(Self.tools, legacyModel: true) == 105)
    }

    @Test func workedExampleWithName() throws {
        // 3 (reply priming) + 3 + tokens("system") 1 + tokens(content) 17
        //                   + 3 + 1 + tokens("New synergies will help drive top-line growth.") 10
        //                       + tokens("example_user") 2 + 1 (name) = 41 (o200k_base; tiktoken gives the same parts).
        let o200k = try Encoding.named(.o200kBase)
        let messages = [
            ChatMessage(
                role: "system",
                content:
                    "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."
            ),
            ChatMessage(
                role: "system", content: "New synergies will help drive top-line growth.", name: "example_user"),
        ]
        #expect(o200k.countChatTokens(messages) == 41)
        #expect(o200k.countChatTokens([]) == 3)
        #expect(o200k.countToolTokens([]) == 0)
    }
}
