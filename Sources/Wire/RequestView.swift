import NIOCore

/// A light, read-once view of an OpenAI request body.
///
/// `parse` validates the whole body as strict JSON and records the byte ranges of the fields the sidecar reads
/// (model, messages, stream, stream_options, tools, user, metadata, and every top-level key). Nothing is decoded
/// that is not asked for; the body itself is kept as is (a `ByteBuffer` is reference counted, not copied).
/// All ranges are offsets from the start of the body.
public struct RequestView: Sendable {
    /// One top-level member of the request object.
    public struct Field: Sendable, Equatable {
        /// The decoded key.
        public var key: String
        /// The whole member, from the key's opening quote to the end of the value.
        public var memberRange: Range<Int>
        /// The value, from its first to its last byte.
        public var valueRange: Range<Int>
        public var kind: JSONKind
    }

    /// One element of `messages`.
    public struct Message: Sendable, Equatable {
        /// The element, `{` to `}`.
        public var range: Range<Int>
        public var role: String?
        public var name: String?
        /// The `content` value (string, array of parts, or null), if present.
        public var contentRange: Range<Int>?
        public var contentKind: JSONKind?
        /// Whether a string content holds escapes (decoding is then slower).
        public var contentEscaped: Bool
        /// For array content: the ranges of the `text` strings of its parts (quotes included).
        public var textPartRanges: [Range<Int>]
        /// Whether the message carries `tool_calls`.
        public var hasToolCalls: Bool
    }

    public let body: ByteBuffer
    public private(set) var fields: [Field] = []
    /// The requested model (the last `model` key wins, as in most JSON readers).
    public private(set) var model: String?
    /// Every `model` string value (duplicated keys included), so a rewrite changes all of them.
    public private(set) var modelValueRanges: [Range<Int>] = []
    public private(set) var stream: Bool = false
    public private(set) var includeUsage: Bool?
    public private(set) var messages: [Message] = []
    public private(set) var toolCount: Int = 0
    public private(set) var user: String?

    /// The value range of a top-level key (last occurrence).
    public func valueRange(of key: String) -> Range<Int>? {
        fields.last(where: { $0.key == key })?.valueRange
    }

    public func field(_ key: String) -> Field? { fields.last(where: { $0.key == key }) }

    /// The raw bytes of `range` as a string (for small values: numbers, literals, nested JSON).
    public func rawString(_ range: Range<Int>) -> String {
        body.getString(at: body.readerIndex + range.lowerBound, length: range.count) ?? ""
    }

    /// The decoded text of a message: its string content, or the concatenated `text` parts of array content.
    public func text(ofMessage index: Int) -> String? {
        let m = messages[index]
        if m.contentKind == .string, let r = m.contentRange {
            return decodeString(r, escaped: m.contentEscaped)
        }
        if m.contentKind == .array, !m.textPartRanges.isEmpty {
            return m.textPartRanges.map { decodeString($0, escaped: true) }.joined(separator: "\n")
        }
        return nil
    }

    /// The text of message `index` as UTF-8 bytes (string content, or the text parts of array content joined by
    /// newlines); nil when it has none. Same text as `text(ofMessage:)`, without a `String` in between.
    public func textBytes(ofMessage index: Int) -> [UInt8]? {
        let m = messages[index]
        if m.contentKind == .string, let r = m.contentRange {
            return withStringContents(r) { JSONString.decodeBytes($0, hasEscapes: m.contentEscaped) }
        }
        return text(ofMessage: index).map { Array($0.utf8) }
    }

    /// Decodes the JSON string at `range` (quotes included).
    public func decodeString(_ range: Range<Int>, escaped: Bool = true) -> String {
        withStringContents(range) { JSONString.decode($0, hasEscapes: escaped) }
    }

    /// Calls `body` with the bytes between the quotes of the JSON string at `range`.
    private func withStringContents<T>(_ range: Range<Int>, _ body: (UnsafeRawBufferPointer) -> T) -> T {
        self.body.withUnsafeReadableBytes { raw in
            body(UnsafeRawBufferPointer(rebasing: raw[(range.lowerBound + 1)..<(range.upperBound - 1)]))
        }
    }

    /// Integer value of a top-level number field, when it is a plain integer.
    public func int(_ key: String) -> Int? {
        guard let f = field(key), f.kind == .number else { return nil }
        return Int(rawString(f.valueRange))
    }

    /// Double value of a top-level number field.
    public func double(_ key: String) -> Double? {
        guard let f = field(key), f.kind == .number else { return nil }
        return Double(rawString(f.valueRange))
    }

    /// Decoded value of a top-level string field.
    public func string(_ key: String) -> String? {
        guard let f = field(key), f.kind == .string else { return nil }
        return decodeString(f.valueRange)
    }

    /// Validates `body` and builds the view. Throws a `JSONSyntaxError` naming the byte offset of the first problem.
    public static func parse(_ body: ByteBuffer) throws(JSONSyntaxError) -> RequestView {
        var view = RequestView(body: body)
        let result: Result<Void, JSONSyntaxError> = body.withUnsafeReadableBytes { raw in
            var s = JSONScanner(raw)
            do throws(JSONSyntaxError) {
                try view.scanTopLevel(&s)
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try result.get()
        return view
    }

    private init(body: ByteBuffer) { self.body = body }

    private mutating func scanTopLevel(_ s: inout JSONScanner) throws(JSONSyntaxError) {
        guard let first = s.peek() else { throw s.error("the request body is empty") }
        guard first == UInt8(ascii: "{") else {
            _ = try s.skipValue()
            s.skipWhitespace()
            if s.index < s.end { throw s.unexpected() }
            throw JSONSyntaxError(offset: 0, reason: "the request body must be a JSON object")
        }
        fields.reserveCapacity(12)  // one allocation for a typical request, not one per doubling
        try s.enter()
        s.index += 1
        if s.peek() == UInt8(ascii: "}") {
            s.index += 1
        } else {
            while true {
                s.skipWhitespace()
                guard s.index < s.end, s.bytes[s.index] == UInt8(ascii: "\"") else { throw s.unexpectedKey() }
                let keyStart = s.index
                let keyEscaped = try s.skipString()
                let keyRange = keyStart..<s.index
                try s.expect(UInt8(ascii: ":"))
                s.skipWhitespace()
                let valueStart = s.index
                let kind: JSONKind
                if !keyEscaped && s.stringEquals(keyRange, "messages") && s.index < s.end
                    && s.bytes[s.index] == UInt8(ascii: "[")
                {
                    messages = []
                    try scanMessages(&s)
                    kind = .array
                } else if !keyEscaped && s.stringEquals(keyRange, "stream_options") && s.index < s.end
                    && s.bytes[s.index] == UInt8(ascii: "{")
                {
                    try scanStreamOptions(&s)
                    kind = .object
                } else {
                    let escapedBefore = s.index
                    kind = try s.skipValue()
                    let valueRange = valueStart..<s.index
                    if !keyEscaped {
                        if s.stringEquals(keyRange, "model") {
                            if kind == .string {
                                modelValueRanges.append(valueRange)
                                model = s.decodeString(valueRange, escaped: hasBackslash(s, escapedBefore, s.index))
                            } else {
                                model = nil
                            }
                        } else if s.stringEquals(keyRange, "stream") {
                            stream = kind == .bool && s.bytes[valueStart] == UInt8(ascii: "t")
                        } else if s.stringEquals(keyRange, "tools") {
                            toolCount = kind == .array ? countElements(s, valueRange) : 0
                        } else if s.stringEquals(keyRange, "user") {
                            user = kind == .string ? s.decodeString(valueRange, escaped: true) : nil
                        }
                    }
                }
                let key = s.decodeString(keyRange, escaped: keyEscaped)
                fields.append(Field(key: key, memberRange: keyStart..<s.index, valueRange: valueStart..<s.index,
                                    kind: kind))
                if try s.endOfContainer(UInt8(ascii: "}")) { break }
            }
        }
        s.depth -= 1
        s.skipWhitespace()
        if s.index < s.end { throw s.error("unexpected data after the JSON object") }
    }

    private func hasBackslash(_ s: JSONScanner, _ from: Int, _ to: Int) -> Bool {
        for i in from..<to where s.bytes[i] == UInt8(ascii: "\\") { return true }
        return false
    }

    private func countElements(_ s: JSONScanner, _ range: Range<Int>) -> Int {
        // Re-scan the (already validated) array to count its elements.
        var t = s
        t.index = range.lowerBound + 1
        t.depth = 0
        if t.peek() == UInt8(ascii: "]") { return 0 }
        var n = 0
        while true {
            _ = try? t.skipValue()
            n += 1
            if (try? t.endOfContainer(UInt8(ascii: "]"))) ?? true { break }
        }
        return n
    }

    private mutating func scanStreamOptions(_ s: inout JSONScanner) throws(JSONSyntaxError) {
        try s.enter()
        s.index += 1
        includeUsage = nil
        if s.peek() == UInt8(ascii: "}") {
            s.index += 1
            s.depth -= 1
            return
        }
        while true {
            s.skipWhitespace()
            guard s.index < s.end, s.bytes[s.index] == UInt8(ascii: "\"") else { throw s.unexpectedKey() }
            let keyStart = s.index
            let keyEscaped = try s.skipString()
            let keyRange = keyStart..<s.index
            try s.expect(UInt8(ascii: ":"))
            s.skipWhitespace()
            let valueStart = s.index
            let kind = try s.skipValue()
            if !keyEscaped && s.stringEquals(keyRange, "include_usage") && kind == .bool {
                includeUsage = s.bytes[valueStart] == UInt8(ascii: "t")
            }
            if try s.endOfContainer(UInt8(ascii: "}")) { break }
        }
        s.depth -= 1
    }

    private mutating func scanMessages(_ s: inout JSONScanner) throws(JSONSyntaxError) {
        try s.enter()
        messages.reserveCapacity(8)
        s.index += 1
        if s.peek() == UInt8(ascii: "]") {
            s.index += 1
            s.depth -= 1
            return
        }
        while true {
            s.skipWhitespace()
            if s.index < s.end && s.bytes[s.index] == UInt8(ascii: "{") {
                messages.append(try scanMessage(&s))
            } else {
                _ = try s.skipValue()
            }
            if try s.endOfContainer(UInt8(ascii: "]")) { break }
        }
        s.depth -= 1
    }

    private func scanMessage(_ s: inout JSONScanner) throws(JSONSyntaxError) -> Message {
        let start = s.index
        var m = Message(range: start..<start, role: nil, name: nil, contentRange: nil, contentKind: nil,
                        contentEscaped: false, textPartRanges: [], hasToolCalls: false)
        try s.enter()
        s.index += 1
        if s.peek() == UInt8(ascii: "}") {
            s.index += 1
        } else {
            while true {
                s.skipWhitespace()
                guard s.index < s.end, s.bytes[s.index] == UInt8(ascii: "\"") else { throw s.unexpectedKey() }
                let keyStart = s.index
                let keyEscaped = try s.skipString()
                let keyRange = keyStart..<s.index
                try s.expect(UInt8(ascii: ":"))
                s.skipWhitespace()
                let valueStart = s.index
                if !keyEscaped && s.stringEquals(keyRange, "content") {
                    if s.index < s.end && s.bytes[s.index] == UInt8(ascii: "\"") {
                        m.contentEscaped = try s.skipString()
                        m.contentKind = .string
                        m.textPartRanges = []
                    } else if s.index < s.end && s.bytes[s.index] == UInt8(ascii: "[") {
                        m.textPartRanges = try scanContentParts(&s)
                        m.contentKind = .array
                    } else {
                        m.contentKind = try s.skipValue()
                        m.textPartRanges = []
                    }
                    m.contentRange = valueStart..<s.index
                } else {
                    let kind = try s.skipValue()
                    let r = valueStart..<s.index
                    if !keyEscaped {
                        if s.stringEquals(keyRange, "role") {
                            m.role = kind == .string ? s.decodeString(r, escaped: true) : nil
                        } else if s.stringEquals(keyRange, "name") {
                            m.name = kind == .string ? s.decodeString(r, escaped: true) : nil
                        } else if s.stringEquals(keyRange, "tool_calls") {
                            m.hasToolCalls = kind == .array
                        }
                    }
                }
                if try s.endOfContainer(UInt8(ascii: "}")) { break }
            }
        }
        s.depth -= 1
        m.range = start..<s.index
        return m
    }

    /// Scans an array of content parts, returning the ranges of their `text` string values.
    private func scanContentParts(_ s: inout JSONScanner) throws(JSONSyntaxError) -> [Range<Int>] {
        var texts: [Range<Int>] = []
        try s.enter()
        s.index += 1
        if s.peek() == UInt8(ascii: "]") {
            s.index += 1
            s.depth -= 1
            return texts
        }
        while true {
            s.skipWhitespace()
            if s.index < s.end && s.bytes[s.index] == UInt8(ascii: "{") {
                try s.enter()
                s.index += 1
                if s.peek() == UInt8(ascii: "}") {
                    s.index += 1
                } else {
                    while true {
                        s.skipWhitespace()
                        guard s.index < s.end, s.bytes[s.index] == UInt8(ascii: "\"") else { throw s.unexpectedKey() }
                        let keyStart = s.index
                        let keyEscaped = try s.skipString()
                        let keyRange = keyStart..<s.index
                        try s.expect(UInt8(ascii: ":"))
                        s.skipWhitespace()
                        let valueStart = s.index
                        let kind = try s.skipValue()
                        if !keyEscaped && kind == .string && s.stringEquals(keyRange, "text") {
                            texts.append(valueStart..<s.index)
                        }
                        if try s.endOfContainer(UInt8(ascii: "}")) { break }
                    }
                }
                s.depth -= 1
            } else {
                _ = try s.skipValue()
            }
            if try s.endOfContainer(UInt8(ascii: "]")) { break }
        }
        s.depth -= 1
        return texts
    }
}
