import Foundation
import NIOCore
import Testing
import Tokenizer
import Wire

@testable import Compression

func o200k() throws -> Encoding { try Encoding.named(.o200kBase) }

/// Lossless-only options.
let losslessOnly = CompressionOptions(targetRatio: 1, minMessageTokens: 0, selection: false, pruning: false)

func jsonValue(_ s: String) throws -> NSObject {
    try JSONSerialization.jsonObject(with: Data(s.utf8), options: [.fragmentsAllowed]) as! NSObject
}

@Suite struct LosslessTests {
    @Test func whitespaceRunsTrailingBlanksAndBlankLinesGo() throws {
        let c = TextCompressor(encoding: try o200k())
        let input = "\n\nHello   world,\tthis  is   text.   \n\n\n\n\nSecond    paragraph.  \nThird line\n\n"
        let r = c.compress(input, question: nil, ratio: 1, options: losslessOnly)
        #expect(r.text == "Hello world, this is text.\n\nSecond paragraph.\nThird line")
        #expect(r.techniques.contains(.whitespace))
        #expect(r.tokens < r.originalTokens)
        #expect(r.quality == 1)
    }

    @Test func fencedCodeStaysVerbatim() throws {
        let c = TextCompressor(encoding: try o200k())
        let code = "```python\ndef f(x):\n    return  x   +  1    \n\n\n\n# end\n```"
        let input = "Look   at this:\n\n\n\n" + code + "\n\nDone    now."
        let r = c.compress(input, question: nil, ratio: 1, options: losslessOnly)
        #expect(r.text == "Look at this:\n\n" + code + "\n\nDone now.")
    }

    @Test func untouchedTextIsByteIdenticalAndReportsNoTechnique() throws {
        let c = TextCompressor(encoding: try o200k())
        let input = "Already tidy text.\n\nWith two paragraphs, ünïcödé and emoji 👍🏽."
        let r = c.compress(input, question: nil, ratio: 1, options: losslessOnly)
        #expect(r.text == input)
        #expect(r.techniques.isEmpty)
    }

    @Test func wholeJSONIsMinifiedWithValuesIdentical() throws {
        let c = TextCompressor(encoding: try o200k())
        let json = """
            {
              "results": [
                { "title": "A  title   with spaces", "score": 0.70, "tiny": 1e-5, "big": 12345678901234567890,
                  "escaped": "line\\nbreak \\u00e9 \\"quoted\\"", "nested": [ 1, [ 2, [ 3 ] ], {} ] },
                { "title": "Second", "ok": true, "none": null }
              ]
            }
            """
        let r = c.compress(json, question: nil, ratio: 1, options: losslessOnly)
        #expect(r.techniques.contains(.json))
        #expect(!r.text.contains("\n"))
        #expect(r.text.contains(#""score":0.70"#))  // number spellings kept
        #expect(r.text.contains(#""tiny":1e-5"#))
        #expect(r.text.contains(#""A  title   with spaces""#))  // strings untouched
        #expect(try jsonValue(r.text) == jsonValue(json))
        #expect(r.tokens < r.originalTokens)
    }

    @Test func embeddedAndFencedJSONAreMinifiedProseIsNot() throws {
        let c = TextCompressor(encoding: try o200k())
        let input = """
            The tool returned:
            ```json
            {
              "a": [1, 2,  3],
              "b": "x  y"
            }
            ```
            and then
            [
              {"k": 1}
            ]
            Citations [1] and [2, 3] stay as written { not json }.
            """
        let r = c.compress(input, question: nil, ratio: 1, options: losslessOnly)
        #expect(r.text.contains(#"{"a":[1,2,3],"b":"x  y"}"#))
        #expect(r.text.contains(#"[{"k":1}]"#))
        #expect(r.text.contains("Citations [1] and [2, 3] stay as written { not json }."))
    }

    @Test func jsonMessagesAreNeverPrunedEvenAtLowRatios() throws {
        let c = TextCompressor(encoding: try o200k())
        let items = (0..<40).map { #"{"id": \#($0), "name": "item number \#($0)", "tags": ["alpha", "beta"]}"# }
        let json = "[\n" + items.joined(separator: ",\n") + "\n]"
        let r = c.compress(json, question: "which item is number 7?", ratio: 0.3, options: CompressionOptions(minMessageTokens: 0))
        #expect(try jsonValue(r.text) == jsonValue(json))
        #expect(!r.techniques.contains(.pruning))
        #expect(!r.techniques.contains(.selection))
    }
}
