import Foundation
import NIOCore
import Testing

@testable import Wire

private func view(_ s: String) throws(JSONSyntaxError) -> RequestView {
    try RequestView.parse(ByteBuffer(string: s))
}

private func string(_ b: ByteBuffer) -> String { String(buffer: b) }

@Suite("RequestView: reading")
struct RequestViewReadTests {
    @Test func readsTheFieldsTheSidecarNeeds() throws {
        let v = try view(#"""
            {"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","name":"ann","content":"Hi"}],
             "stream":true,"stream_options":{"include_usage":false},"tools":[{"type":"function","function":{"name":"f"}},{"type":"function","function":{"name":"g"}}],
             "user":"u-1","metadata":{"team":"a"},"temperature":0.70,"max_tokens":12}
            """#)
        #expect(v.model == "gpt-4o")
        #expect(v.stream)
        #expect(v.includeUsage == false)
        #expect(v.toolCount == 2)
        #expect(v.user == "u-1")
        #expect(v.messages.count == 2)
        #expect(v.messages[0].role == "system")
        #expect(v.messages[1].name == "ann")
        #expect(v.text(ofMessage: 0) == "Be brief.")
        #expect(v.text(ofMessage: 1) == "Hi")
        #expect(v.rawString(v.valueRange(of: "temperature")!) == "0.70")
        #expect(v.int("max_tokens") == 12)
        #expect(v.field("metadata")?.kind == .object)
        #expect(v.fields.map(\.key) == ["model", "messages", "stream", "stream_options", "tools", "user", "metadata",
                                         "temperature", "max_tokens"])
    }

    @Test func decodesEscapesAndSurrogatePairs() throws {
        let v = try view(#"{"model":"gpt-4o\u002dmini","messages":[{"role":"user","content":"caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \n\t"}]}"#)
        #expect(v.model == "gpt-4o-mini")
        #expect(v.text(ofMessage: 0) == "café 😀 \"q\" \\ / \n\t")
    }

    @Test func loneSurrogateBecomesReplacementCharacter() throws {
        let v = try view(#"{"messages":[{"role":"user","content":"a\ud800b"}]}"#)
        #expect(v.text(ofMessage: 0) == "a\u{FFFD}b")
    }

    @Test func arrayContentTextParts() throws {
        let v = try view(#"{"messages":[{"role":"user","content":[{"type":"text","text":"one"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"two"}]}]}"#)
        #expect(v.messages[0].contentKind == .array)
        #expect(v.messages[0].textPartRanges.count == 2)
        #expect(v.text(ofMessage: 0) == "one\ntwo")
    }

    @Test func duplicateKeysLastWinsAndAllModelRangesRecorded() throws {
        let v = try view(#"{"model":"a","stream":true,"model":"b","stream":false}"#)
        #expect(v.model == "b")
        #expect(v.modelValueRanges.count == 2)
        #expect(v.stream == false)
    }

    @Test func bigIntegersAndOddNumbersAreValidAndUntouched() throws {
        let body = #"{"seed":123456789012345678901234567890,"a":-0.0,"b":1e-5,"c":2E+10,"d":[[],[[]],{}]}"#
        let v = try view(body)
        #expect(v.rawString(v.valueRange(of: "seed")!) == "123456789012345678901234567890")
        #expect(v.rawString(v.valueRange(of: "b")!) == "1e-5")
        #expect(v.rawString(v.valueRange(of: "d")!) == "[[],[[]],{}]")
    }

    @Test func whitespaceEverywhere() throws {
        let v = try view(" \n{ \"model\" :\t\"m\" ,\r\n \"messages\" : [ { \"role\" : \"user\" , \"content\" : \"x\" } ] } \n")
        #expect(v.model == "m")
        #expect(v.text(ofMessage: 0) == "x")
    }

    @Test func nonStringModelIsNil() throws {
        #expect(try view(#"{"model":5}"#).model == nil)
        #expect(try view(#"{"model":null}"#).model == nil)
    }

    @Test(arguments: [
        ("", "the request body is empty"),
        ("{", "unexpected end of JSON input"),
        ("{\"a\":1,}", "expected a string key in object"),
        ("{\"a\" 1}", "unexpected character '1'"),
        ("[1,2]", "the request body must be a JSON object"),
        ("{\"a\":01}", "expected ',' or '}' in object"),
        ("{\"a\":1.}", "invalid number: digit expected after '.'"),
        ("{\"a\":-}", "invalid number"),
        ("{\"a\":tru}", "invalid literal"),
        ("{\"a\":\"x\ny\"}", "unescaped control character in string"),
        ("{\"a\":\"\\x\"}", "invalid escape sequence"),
        ("{\"a\":\"\\u12g4\"}", "invalid \\u escape"),
        ("{\"a\":\"abc}", "unterminated string"),
        ("{\"a\":1} x", "unexpected data after the JSON object"),
        ("{\"a\":[1 2]}", "expected ',' or ']' in array"),
        ("{'a':1}", "expected a string key in object"),
        ("{\"a\":NaN}", "unexpected character 'N'"),
    ])
    func rejectsMalformedJSON(input: String, reason: String) {
        #expect(throws: JSONSyntaxError.self) { try view(input) }
        do {
            _ = try view(input)
        } catch {
            #expect(error.reason == reason, "for \(input)")
        }
    }

    @Test func rejectsInvalidUTF8() {
        for bad: [UInt8] in [[0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF5, 0x80, 0x80, 0x80], [0xE2, 0x82], [0x80]] {
            var b = ByteBuffer(string: "{\"a\":\"")
            b.writeBytes(bad)
            b.writeString("\"}")
            #expect(throws: JSONSyntaxError.self) { try RequestView.parse(b) }
        }
    }

    @Test func deepNestingIsRefusedNotCrashed() {
        let deep = "{\"a\":" + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}"
        #expect(throws: JSONSyntaxError.self) { try view(deep) }
    }

    @Test func offsetsPointAtTheProblem() {
        do {
            _ = try view(#"{"model":"x", "messages": [}"#)
            Issue.record("expected an error")
        } catch {
            #expect(error.offset == 27)
        }
    }
}

@Suite("RequestView: splicing")
struct RequestViewSpliceTests {
    static let tricky = #"""
        {  "temperature" : 0.70, "model":"gpt-4o" ,"top_p":1e-5,
          "messages":[{"content":"caf\u00e9 \ud83d\ude00","role":"user"},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]}],
          "x_unknown":{"b":1,"a":[1,2,{"z":"\u0000"}]}, "seed": 123456789012345678901234567890 , "model" : "gpt-4o"}
        """#

    @Test func unchangedBodyIsByteIdentical() throws {
        let v = try view(Self.tricky)
        let patch = BodyPatch()
        #expect(string(patch.apply(to: v.body)) == Self.tricky)
    }

    @Test func modelRewriteChangesOnlyModelValues() throws {
        let v = try view(Self.tricky)
        let out = string(v.replacingModel(with: "gpt-4o-mini"))
        #expect(out == Self.tricky.replacingOccurrences(of: #""gpt-4o""#, with: #""gpt-4o-mini""#))
        #expect(try view(out).model == "gpt-4o-mini")
    }

    @Test func messageContentSpliceKeepsEverythingElse() throws {
        let v = try view(Self.tricky)
        var patch = BodyPatch()
        v.patchMessageContent(0, text: "short \"quoted\"\n", into: &patch)
        let out = string(patch.apply(to: v.body))
        #expect(out == Self.tricky.replacingOccurrences(of: #""caf\u00e9 \ud83d\ude00""#,
                                                          with: #""short \"quoted\"\n""#))
        let again = try view(out)
        #expect(again.text(ofMessage: 0) == "short \"quoted\"\n")
        #expect(again.rawString(again.valueRange(of: "x_unknown")!) == #"{"b":1,"a":[1,2,{"z":"\u0000"}]}"#)
    }

    @Test func modelAndContentTogether() throws {
        let body = #"{"model":"a","messages":[{"role":"user","content":"long text"}],"n":1}"#
        let v = try view(body)
        var patch = BodyPatch()
        v.patchModel("b", into: &patch)
        v.patchMessageContent(0, text: "short", into: &patch)
        #expect(string(patch.apply(to: v.body)) == #"{"model":"b","messages":[{"role":"user","content":"short"}],"n":1}"#)
    }

    @Test func insertsMissingKeys() throws {
        let v = try view(#"{"messages":[{"role":"user"}]}"#)
        var patch = BodyPatch()
        v.patchModel("m", into: &patch)
        v.patchMessageContent(0, text: "hi", into: &patch)
        #expect(string(patch.apply(to: v.body)) == #"{"model":"m","messages":[{"content":"hi","role":"user"}]}"#)
        let empty = try view("{ }")
        var p2 = BodyPatch()
        empty.setTopLevel("stream_options", rawJSON: Array(#"{"include_usage":true}"#.utf8), into: &p2)
        #expect(string(p2.apply(to: empty.body)) == #"{"stream_options":{"include_usage":true} }"#)
    }

    @Test func setTopLevelReplacesExistingValue() throws {
        let v = try view(#"{"stream":true,"stream_options":{"include_usage":false},"x":1}"#)
        var patch = BodyPatch()
        v.setTopLevel("stream_options", rawJSON: Array(#"{"include_usage":true}"#.utf8), into: &patch)
        #expect(string(patch.apply(to: v.body)) == #"{"stream":true,"stream_options":{"include_usage":true},"x":1}"#)
    }

    @Test func viewOfSliceUsesRelativeOffsets() throws {
        var big = ByteBuffer(string: "GARBAGE")
        big.writeString(#"{"model":"x","messages":[]}"#)
        big.moveReaderIndex(forwardBy: 7)
        let v = try RequestView.parse(big)
        #expect(v.model == "x")
        #expect(string(v.replacingModel(with: "yy")) == #"{"model":"yy","messages":[]}"#)
    }
}

@Suite("JSON strings and error bodies")
struct JSONStringTests {
    @Test func escapeRoundTrip() throws {
        let samples = ["plain", "quote \" back \\ slash", "ctl \u{01}\u{1F}\n\r\t", "émoji 👩‍👩‍👧 🇫🇷", ""]
        for s in samples {
            let q = JSONString.quoted(s)
            let v = try view("{\"k\":\(q)}")
            #expect(v.string("k") == s)
        }
    }

    /// The bulk-copying decoder and encoder against the JSON text Foundation writes and reads: random strings mixing
    /// ASCII, every escape, control characters, multi-byte text and astral scalars, at every length up to 300.
    @Test func bulkDecodeAndEncodeAgreeWithFoundation() throws {
        var rng = SeededGenerator(state: 20261129)
        let alphabet: [String] = ["a", "b", " ", "\"", "\\", "/", "\n", "\r", "\t", "\u{08}", "\u{0C}", "\u{01}",
                                  "\u{1F}", "é", "€", "𝄞", "👩‍👩‍👧", "\u{7F}", "\u{FFFD}", "x"]
        for length in 0..<300 {
            let s = (0..<length).map { _ in alphabet.randomElement(using: &rng)! }.joined()
            // Encode: ours parses back (through Foundation) to the same string.
            var ours = [UInt8]()
            JSONString.append(s, to: &ours)
            let back = try JSONSerialization.jsonObject(with: Data(ours), options: .fragmentsAllowed) as? String
            #expect(back == s)
            // Decode: Foundation's escaping (which uses \/ and \uXXXX differently) decodes to the same bytes.
            let theirs = try JSONSerialization.data(withJSONObject: [s], options: [])
            let literal = Array(theirs.dropFirst(2).dropLast(2))  // ["..."] -> inside of the quotes
            let decoded = literal.withUnsafeBytes { JSONString.decodeBytes($0, hasEscapes: true) }
            #expect(decoded == Array(s.utf8))
            #expect(literal.withUnsafeBytes { JSONString.decode($0, hasEscapes: true) } == s)
        }
        // \u escapes, surrogate pairs and lone surrogates.
        let escaped = Array(#"A\u00e9\ud834\udd1e\ud800x\udc00\u0000\/"#.utf8)
        let expected = Array("Aé𝄞\u{FFFD}x\u{FFFD}\u{0}/".utf8)
        #expect(escaped.withUnsafeBytes { JSONString.decodeBytes($0, hasEscapes: true) } == expected)
        #expect(Array("".utf8).withUnsafeBytes { JSONString.decode($0, hasEscapes: true) } == "")
    }

    @Test func contentSpliceFromBytesRepairsInvalidUTF8() throws {
        let v = try view(#"{"messages":[{"role":"user","content":"old"}]}"#)
        var patch = BodyPatch()
        let bytes: [UInt8] = [0x61, 0xC3, 0x22, 0xE2, 0x82, 0xAC]  // "a", a cut-off "é", a quote, "€"
        bytes.withUnsafeBytes { v.patchMessageContent(0, utf8: $0, into: &patch) }
        let out = try view(string(patch.apply(to: v.body)))
        #expect(out.text(ofMessage: 0) == "a\u{FFFD}\"€")
        #expect(out.textBytes(ofMessage: 0) == Array("a\u{FFFD}\"€".utf8))
        #expect(JSONScanner.isValidUTF8(UnsafeRawBufferPointer(start: nil, count: 0)))
        for valid in ["plain ascii only here", "mixed é € 𝄞 text after eight bytes"] {
            #expect(Array(valid.utf8).withUnsafeBytes { JSONScanner.isValidUTF8($0) })
        }
        for invalid: [UInt8] in [[0x80], [0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0xFF], [0xED, 0xA0, 0x80],
                                 [0xC0, 0xAF], [0xF4, 0x90, 0x80, 0x80]]
        {
            #expect(!invalid.withUnsafeBytes { JSONScanner.isValidUTF8($0) })
        }
    }

    @Test func openAIErrorShape() throws {
        let e = OpenAIError(status: 400, message: "bad \"x\"", type: "invalid_request_error", param: nil, code: "c")
        #expect(String(decoding: e.jsonBytes, as: UTF8.self)
                == #"{"error":{"message":"bad \"x\"","type":"invalid_request_error","param":null,"code":"c"}}"#)
    }
}

/// A seeded generator (xorshift64*), so a failing random input can be reproduced.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 2_685_821_657_736_338_717
    }
}

@Suite("JSONNode numbers")
struct JSONNodeNumberTests {
    @Test func integersReadFromBytesLikeIntInit() throws {
        let cases = ["0", "-0", "42", "-17", "9223372036854775807", "-9223372036854775808", "9223372036854775808",
                     "-9223372036854775809", "1.0", "1e3", "12345678901234567890123"]
        for text in cases {
            let node = try JSONNode.parse(ByteBuffer(string: text))
            #expect(node.int == Int(text), "\(text)")
        }
        #expect(try JSONNode.parse(ByteBuffer(string: #""7""#)).int == nil)
    }
}

@Suite("JSONNode walks")
struct JSONNodeWalkTests {
    /// The node read back as Foundation values through `members` / `elements` (numbers by their text).
    static func value(_ n: JSONNode) -> Any {
        switch n.kind {
        case .object:
            var d: [String: Any] = [:]
            for (k, v) in n.members { d[k] = value(v) }  // the last of repeated keys, like JSONSerialization
            return d
        case .array: return n.elements.map(value)
        case .string: return n.string!
        case .number: return Double(n.raw)!
        case .bool: return n.bool!
        case .null: return NSNull()
        }
    }

    /// Walking an already-validated document only looks for string ends and brackets: it must end every value
    /// exactly where the validating scanner does, whatever the strings hold.
    @Test func walksAgreeWithFoundation() throws {
        var docs = [
            #"{"a":"x\"}]{[","b":[1,-2.5e+3,0.1E-2,true,false,null,{}],"c":{"d":[[],[{}]],"e":"\\"},"f":"\\\""}"#,
            #" { "k" : [ "é😀\u00e9\ud83d\ude00" , { "\"q" : "}" } ] , "n" : -0 , "k" : 2 } "#,
            #"{"long":"0123456789abcdef0123456789\"abcdef\\0123456789","s":"12345678","t":"1234567\\","u":""}"#,
        ]
        var rng = SeededGenerator(state: 0x9E37_79B9_7F4A_7C15)
        let alphabet = Array(#"ab"\{}[],:é \"#)
        for _ in 0..<200 {
            // Random strings of awkward characters, as keys and values, nested.
            func str() -> String {
                String((0..<Int.random(in: 0...20, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! })
            }
            var obj: [String: Any] = [:]
            obj[str()] = str()
            obj[str()] = [str(), [str(): str()], 1.5] as [Any]
            obj["z"] = [str(): [[str()]]]
            docs.append(String(decoding: try JSONSerialization.data(withJSONObject: obj), as: UTF8.self))
        }
        for doc in docs {
            let node = try JSONNode.parse(ByteBuffer(string: doc))
            let expected = try JSONSerialization.jsonObject(with: Data(doc.utf8), options: [.fragmentsAllowed])
            #expect(NSDictionary(dictionary: Self.value(node) as! [String: Any])
                .isEqual(to: expected as! [String: Any]), "\(doc)")
        }
    }

    /// Bytes that are not valid JSON (a node made against its contract) end the walk without reading past them.
    @Test func brokenBytesStopTheWalk() {
        for text in [#"{"a":"unterminated"#, #"{"a":[1,2"#, #"{"a":"x\"#, #"["#, #"{"a":tr"#] {
            let b = ByteBuffer(string: text)
            let node = JSONNode(buffer: b, range: 0..<b.readableBytes, kind: text.first == "[" ? .array : .object)
            _ = node.members
            _ = node.elements
        }
    }
}
