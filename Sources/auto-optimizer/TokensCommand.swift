import ArgumentParser
import Foundation
import Tokenizer

/// `auto-optimizer tokens (--encoding NAME | --model M) [--ids] [--jsonl] [FILE|-]`
///
/// Counts the tokens of a text, byte-exact with tiktoken's `encode_ordinary` (special-token strings are plain
/// text). Prints the count, or with `--ids` the space-separated token ids. With `--jsonl` the input is JSON lines
/// `{"text": "..."}` and the output one `{"tokens": N}` (or `{"ids": [...]}`) line per input line, in order.
/// Bad input (invalid UTF-8, a line that is not such an object, an unreadable file) is reported on stderr with
/// a non-zero exit status.
struct TokensCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokens",
        abstract: "Count (or list) the tokens of a text, byte-exact with OpenAI's tiktoken.",
        discussion: """
            Encodings: o200k_base (gpt-4o, gpt-4.1, gpt-5, o-series), cl100k_base (gpt-4, gpt-3.5-turbo, \
            text-embedding-3). With --model, an unknown model is counted with o200k_base and a note saying it \
            is an estimate goes to stderr.
            """
    )

    @Option(name: .long, help: "Encoding name: o200k_base or cl100k_base.")
    var encoding: String?

    @Option(name: .long, help: "Model name (e.g. gpt-4o, openai/gpt-4.1-mini); selects its encoding.")
    var model: String?

    @Flag(name: .long, help: "Print the token ids, space separated, instead of the count.")
    var ids = false

    @Flag(name: .long, help: "Print the UTF-8 byte lengths of the pre-tokenizer's pieces, space separated, instead of the count.")
    var pieces = false

    @Flag(name: .long, help: "Input is JSON lines {\"text\": ...}; print one JSON object per line.")
    var jsonl = false

    @Argument(help: "Input file; '-' or nothing reads standard input.")
    var file: String?

    func validate() throws {
        if (encoding == nil) == (model == nil) {
            throw ValidationError("Give exactly one of --encoding NAME or --model M.")
        }
        if ids && pieces { throw ValidationError("Give at most one of --ids and --pieces.") }
    }

    func run() throws {
        let selected: Tokenizer.Encoding
        do {
            if let encoding {
                selected = try Tokenizer.Encoding.named(encoding)
            } else {
                let model = model ?? ""
                let choice = try Tokenizer.Encoding.forModel(model)
                selected = choice.encoding
                if choice.isEstimate {
                    Self.printError("note: unknown model '\(model)': counting with \(selected.name) (an estimate)")
                }
            }
        } catch {
            throw Self.fail("\(error)")
        }

        let input = try CLIInput.read(file, fail: Self.fail)
        var out = [UInt8]()
        if jsonl {
            do {
                try runJSONLines(input, encoding: selected, out: &out)
            } catch {
                FileHandle.standardOutput.write(Data(out))  // the lines before the bad one
                throw error
            }
        } else {
            guard let text = String(validating: input, as: UTF8.self) else {
                throw Self.fail("input is not valid UTF-8")
            }
            if ids {
                Self.appendIDs(selected.encode(text), separator: " ", to: &out)
            } else if pieces {
                Self.appendIDs(selected.pieces(text).map(\.utf8.count), separator: " ", to: &out)
            } else {
                out.append(contentsOf: String(selected.count(text)).utf8)
            }
            out.append(0x0A)
        }
        FileHandle.standardOutput.write(Data(out))
    }

    private struct Line: Decodable {
        var text: String
    }

    private func runJSONLines(_ input: Data, encoding: Tokenizer.Encoding, out: inout [UInt8]) throws {
        let decoder = JSONDecoder()
        try CLIInput.forEachLine(input) { lineNumber, line in
            let text: String
            do {
                text = try decoder.decode(Line.self, from: line).text
            } catch {
                throw Self.fail("line \(lineNumber): expected a JSON object {\"text\": \"...\"} (\(error))")
            }
            if ids {
                out.append(contentsOf: "{\"ids\": [".utf8)
                Self.appendIDs(encoding.encode(text), separator: ", ", to: &out)
                out.append(contentsOf: "]}\n".utf8)
            } else if pieces {
                out.append(contentsOf: "{\"pieces\": [".utf8)
                Self.appendIDs(encoding.pieces(text).map(\.utf8.count), separator: ", ", to: &out)
                out.append(contentsOf: "]}\n".utf8)
            } else {
                out.append(contentsOf: "{\"tokens\": \(encoding.count(text))}\n".utf8)
            }
            CLIInput.flushIfLarge(&out)
        }
    }

    private static func appendIDs(_ ids: [Int], separator: String, to out: inout [UInt8]) {
        for (i, id) in ids.enumerated() {
            if i > 0 { out.append(contentsOf: separator.utf8) }
            out.append(contentsOf: String(id).utf8)
        }
    }

    private static func printError(_ message: String) {
        FileHandle.standardError.write(Data((message + "\n").utf8))
    }

    /// Reports `message` on stderr as `tokens: error: ...` and returns the exit code to throw.
    private static func fail(_ message: String) -> ExitCode {
        printError("tokens: error: \(message)")
        return ExitCode.failure
    }
}
