// tokbench: single-thread token counting throughput of the Tokenizer module.
//
//   tokbench [--encoding o200k_base|cl100k_base|all] [--rounds N] [--json] [FILE...]
//
// Without files it measures a built-in mixed English + code text (~1 MB) and 1 MB of one repeated
// character ('a', ' ', '\n'). Prints the vocabulary load time, then per text the best-of-N MB/s
// (MB = 10^6 bytes of UTF-8) and the token count. Build with `swift build -c release`.
import Foundation
import Tokenizer

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

var encodings: [Encoding.Name] = Encoding.Name.allCases
var rounds = 5
var json = false
var files: [String] = []
var args = CommandLine.arguments.dropFirst()
while let arg = args.popFirst() {
    switch arg {
    case "--encoding":
        guard let value = args.popFirst() else { fatalError("--encoding needs a value") }
        if value != "all" {
            guard let name = Encoding.Name(rawValue: value) else { fatalError("unknown encoding \(value)") }
            encodings = [name]
        }
    case "--rounds":
        guard let value = args.popFirst(), let n = Int(value), n > 0 else { fatalError("--rounds needs a number") }
        rounds = n
    case "--json":
        json = true
    default:
        files.append(arg)
    }
}

func builtinMixedText(bytes: Int) -> String {
    let english = """
        The quick brown fox jumps over the lazy dog. In 1998, researchers at the university published a study \
        showing that tokenization affects both cost and latency; they didn't expect it'd matter so much. \
        "Prices are quoted per million tokens," she said, "so a 12.5% saving is real money." \
        Meanwhile, the committee's report (pp. 45-67) recommended caching frequently used prompts.\n\n
        """
    let code = """
        func fibonacci(_ n: Int) -> Int {
            guard n > 1 else { return n }
            var (a, b) = (0, 1)
            for _ in 2...n { (a, b) = (b, a + b) }
            return b
        }

        def parse_config(path: str) -> dict[str, Any]:
            with open(path, "r", encoding="utf-8") as f:
                return json.load(f)  # TODO: validate schema

        const total = items.reduce((sum, item) => sum + item.price * item.quantity, 0);
        if (total > 1_000) { console.log(`discount applied: ${total * 0.1}`); }

        """
    var out = ""
    var i = 0
    while out.utf8.count < bytes {
        out += i % 3 == 2 ? code : english
        i += 1
    }
    return out
}

var texts: [(label: String, text: String)] = []
if files.isEmpty {
    texts.append(("mixed English+code (built-in)", builtinMixedText(bytes: 1_000_000)))
    texts.append(("1 MB of 'a'", String(repeating: "a", count: 1_000_000)))
    texts.append(("1 MB of ' '", String(repeating: " ", count: 1_000_000)))
    texts.append(("1 MB of '\\n'", String(repeating: "\n", count: 1_000_000)))
} else {
    for file in files {
        guard let data = FileManager.default.contents(atPath: file) else { fatalError("cannot read \(file)") }
        texts.append((file, String(decoding: data, as: UTF8.self)))
    }
}

for name in encodings {
    let t0 = now()
    let encoding: Encoding
    do { encoding = try Encoding.named(name) } catch { fatalError("\(error)") }
    let loadSeconds = now() - t0
    if json {
        print("{\"encoding\": \"\(name)\", \"load_ms\": \(loadSeconds * 1000)}")
    } else {
        print("\(name): vocabulary load \(String(format: "%.1f", loadSeconds * 1000)) ms (first use, incl. SHA-256)")
    }
    for (label, text) in texts {
        let bytes = text.utf8.count
        var best = Double.infinity
        var tokens = 0
        for _ in 0..<rounds {
            let t = now()
            tokens = encoding.count(text)
            best = min(best, now() - t)
        }
        let mbps = Double(bytes) / 1e6 / best
        if json {
            let escaped = label.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(
                of: "\"", with: "\\\"")
            print(
                "{\"encoding\": \"\(name)\", \"text\": \"\(escaped)\", \"bytes\": \(bytes), \"tokens\": \(tokens), \"seconds\": \(best), \"mb_per_s\": \(mbps)}"
            )
        } else {
            print(
                "  \(label): \(bytes) bytes, \(tokens) tokens, best of \(rounds): \(String(format: "%.2f", best * 1000)) ms = \(String(format: "%.1f", mbps)) MB/s"
            )
        }
    }
}
