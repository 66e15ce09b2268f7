// Micro benchmarks of the sidecar's hot path (ordo-one/benchmark, malloc counts from its MallocInterposer trait).
//
// Inputs: the directory in AO_MICRO_INPUTS (default Benchmarks/Micro/.inputs), written by
// `Benchmarks/micro_inputs.py DIR` so that the Swift and tiktoken figures of one suite run use the same texts:
// body-1k.json, body-100k.json (chat requests), rag-8k.json (a ~8k-token retrieval prompt from fixtures/qa),
// mixed.txt (~1 MB English + code, the tokenizer text), sse-1mb.txt (~1 MB of chat.completion.chunk events, one
// upstream read per event). The policy is Benchmarks/policy-full.yaml, the one the end-to-end "full" target runs.
//
// Names carry the unit of work; the suite's report divides by it (per KB, per MB, per 1k tokens).
import Benchmark
import Catalog
import Compression
import Foundation
import Logging
import MockUpstream
import NIOCore
import Optimizer
import Policy
import Proxy
import Tokenizer
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// Benchmarks/ of the repository (this file is Benchmarks/Micro/Benchmarks/HotPath/HotPath.swift).
let benchmarksDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()
let inputsDir = ProcessInfo.processInfo.environment["AO_MICRO_INPUTS"].map { URL(fileURLWithPath: $0) }
    ?? benchmarksDir.appendingPathComponent("Micro/.inputs")

func input(_ name: String) -> [UInt8] {
    let url = inputsDir.appendingPathComponent(name)
    guard let data = try? Data(contentsOf: url) else {
        fatalError("missing \(url.path): run `python3 Benchmarks/micro_inputs.py \(inputsDir.path)` first")
    }
    return [UInt8](data)
}

func buffer(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }

/// The end-to-end "full" policy: model rewrite gpt-4o-mini -> gpt-4.1-nano and the `rag` compression profile.
func fullPolicy(upstream: String) -> CompiledPolicy {
    let template = try! String(contentsOf: benchmarksDir.appendingPathComponent("policy-full.yaml"), encoding: .utf8)
    let catalog = try! ModelCatalog.bundled()
    let document = try! PolicyDocument.parse(yaml: template.replacingOccurrences(of: "__UPSTREAM__", with: upstream),
                                             file: "policy-full.yaml", catalog: catalog)
    return CompiledPolicy(document: document, catalog: catalog)
}

// MARK: - A blocking HTTP/1.1 keep-alive client (no allocations of its own per request beyond the socket calls)

final class RawClient {
    let fd: Int32
    let request: [UInt8]
    var scratch = [UInt8](repeating: 0, count: 1 << 16)

    init(port: Int, path: String, body: [UInt8]) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        precondition(fd >= 0, "socket failed")
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        precondition(rc == 0, "connect to 127.0.0.1:\(port) failed")
        let head = "POST \(path) HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            + "authorization: Bearer sk-bench\r\ncontent-length: \(body.count)\r\n\r\n"
        request = Array(head.utf8) + body
        self.fd = fd
    }

    deinit { close(fd) }

    /// Sends the request and reads one response (content-length or chunked); returns the status code.
    @discardableResult
    func roundTrip() -> Int {
        var sent = 0
        while sent < request.count {
            let n = request.withUnsafeBytes { send(fd, $0.baseAddress! + sent, request.count - sent, 0) }
            precondition(n > 0, "send failed")
            sent += n
        }
        var filled = 0
        var status = 0
        var headerEnd = -1
        var contentLength = -1
        var chunked = false
        while true {
            let n = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + filled, $0.count - filled, 0) }
            precondition(n > 0, "connection closed")
            filled += n
            if headerEnd < 0, let end = Self.find([13, 10, 13, 10], in: scratch, upTo: filled) {
                headerEnd = end + 4
                status = Int(String(decoding: scratch[9..<12], as: UTF8.self)) ?? 0
                let head = String(decoding: scratch[0..<end], as: UTF8.self).lowercased()
                for line in head.split(separator: "\r\n") {
                    if line.hasPrefix("content-length:") {
                        contentLength = Int(line.dropFirst(15).trimmingCharacters(in: .whitespaces)) ?? 0
                    } else if line.hasPrefix("transfer-encoding:") && line.contains("chunked") {
                        chunked = true
                    }
                }
            }
            if headerEnd >= 0 {
                if contentLength >= 0 && filled - headerEnd >= contentLength { return status }
                if chunked && Self.find([48, 13, 10, 13, 10], in: scratch, upTo: filled) != nil { return status }
            }
            precondition(filled < scratch.count, "response larger than the client's buffer")
        }
    }

    static func find(_ needle: [UInt8], in hay: [UInt8], upTo end: Int) -> Int? {
        guard end >= needle.count else { return nil }
        var i = 0
        while i <= end - needle.count {
            var j = 0
            while j < needle.count && hay[i + j] == needle[j] { j += 1 }
            if j == needle.count { return i }
            i += 1
        }
        return nil
    }
}

/// A mock upstream and sidecars (passthrough and full policy) in this process, one event loop each, for the
/// allocation count of one proxied request (the proxied count minus the direct count is the sidecar's share).
actor Servers {
    static let shared = Servers()
    var mock: MockServer?
    var passthrough: ProxyServer?
    var full: ProxyServer?

    func start() async throws -> (mock: Int, passthrough: Int, full: Int) {
        if mock == nil {
            mock = try await MockServer.start(host: "127.0.0.1", port: 0, options: MockOptions(), threads: 1)
            let mockPort = mock!.localAddress!.port!
            var config = ProxyConfiguration()
            config.port = 0
            config.threads = 1
            config.upstream = try UpstreamURL("http://127.0.0.1:\(mockPort)/v1")
            var logger = Logger(label: "micro")
            logger.logLevel = .error
            let catalog = try ModelCatalog.bundled()
            passthrough = try await ProxyServer.start(
                config: config, accountant: Accountant(prices: CatalogPriceBook(catalog: catalog)), logger: logger)
            let budgets = BudgetTracker()
            full = try await ProxyServer.start(
                config: config, policy: fullPolicy(upstream: "http://127.0.0.1:\(mockPort)/v1"),
                accountant: Accountant(prices: CatalogPriceBook(catalog: catalog), sinks: [BudgetSink(budgets: budgets)]),
                budgets: budgets, logger: logger)
        }
        return (mock!.localAddress!.port!, passthrough!.localAddress!.port!, full!.localAddress!.port!)
    }
}

final class Box<T>: @unchecked Sendable { var value: T?; init() {} }

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput],
        warmupIterations: 10,
        maxDuration: .seconds(ProcessInfo.processInfo.environment["AO_MICRO_SECONDS"].flatMap(Int64.init) ?? 2),
        maxIterations: 1_000_000)

    // Wire: read (parse the request view once) and splice (model rewrite into the original bytes).
    for (label, file) in [("1KB", "body-1k.json"), ("100KB", "body-100k.json")] {
        let body = Box<ByteBuffer>()
        let view = Box<RequestView>()
        Benchmark("Wire read \(label)", configuration: .init(setup: { body.value = buffer(input(file)) })) { benchmark in
            for _ in benchmark.scaledIterations { blackHole(try! RequestView.parse(body.value!)) }
        }
        Benchmark("Wire splice \(label)",
                  configuration: .init(setup: { view.value = try RequestView.parse(buffer(input(file))) })) { benchmark in
            for _ in benchmark.scaledIterations { blackHole(view.value!.replacingModel(with: "gpt-4.1-nano")) }
        }
    }

    // Policy planning: the full policy's plan on the 1 KB request (rule match, model rewrite splice; the prompt is
    // below the profile's min_prompt_tokens, so no compression), and the bare CompiledPolicy decision.
    let planView = Box<RequestView>()
    let policy = Box<CompiledPolicy>()
    Benchmark("Policy plan 1KB request (full policy)", configuration: .init(setup: {
        planView.value = try RequestView.parse(buffer(input("body-1k.json")))
        policy.value = fullPolicy(upstream: "http://127.0.0.1:9/v1")
    })) { benchmark in
        let planner = Planner()
        for _ in benchmark.scaledIterations {
            blackHole(planner.plan(endpoint: "chat.completions", view: planView.value!, app: "bench", policy: policy.value!))
        }
    }
    Benchmark("Policy decision (CompiledPolicy.plan)", configuration: .init(setup: {
        policy.value = fullPolicy(upstream: "http://127.0.0.1:9/v1")
    })) { benchmark in
        let request = PolicyRequest(app: "bench", model: "gpt-4o-mini", endpoint: .chatCompletions)
        for _ in benchmark.scaledIterations { blackHole(policy.value!.plan(request)) }
    }

    // Tokenizer: o200k_base count over the ~1 MB mixed text (tiktoken runs on the same file in the same suite run).
    let text = Box<String>()
    Benchmark("Tokenizer o200k count 1MB mixed", configuration: .init(
        metrics: [.wallClock, .cpuTotal, .throughput], warmupIterations: 1,
        setup: { text.value = String(decoding: input("mixed.txt"), as: UTF8.self); _ = Encoding.o200kBase.count("warm") }
    )) { benchmark in
        for _ in benchmark.scaledIterations { blackHole(Encoding.o200kBase.count(text.value!)) }
    }

    // Compression: the rag profile's options on the ~8k-token retrieval prompt (the compressor alone), and the
    // whole plan of the full policy on it (rule, rewrite, compression, splices), as the sidecar runs it.
    let ragView = Box<RequestView>()
    // The same prompt every iteration: "context seen before" finds its analysis in the thread's cache and only
    // ranks it against the question (what the load benchmark's repeated prompt measures); "new context" has the
    // cache off and analyses it anew every time, as a context never seen before.
    for (label, caches) in [("context seen before", true), ("new context: analysis cache off", false)] {
        Benchmark("Compression 8k-token RAG prompt (compressor, \(label))", configuration: .init(
            warmupIterations: 2,
            setup: { ragView.value = try RequestView.parse(buffer(input("rag-8k.json"))); PromptCompressor.warmUp() }
        )) { benchmark in
            let compressor = PromptCompressor(encoding: Encoding.o200kBase, cachesAnalyses: caches)
            let options = CompressionOptions(targetRatio: 0.5, minPromptTokens: 1000, minMessageTokens: 128)
            for _ in benchmark.scaledIterations { blackHole(compressor.compress(ragView.value!, options: options)) }
        }
    }
    Benchmark("Policy plan 8k-token RAG prompt (full policy, compression)", configuration: .init(
        warmupIterations: 2,
        setup: {
            ragView.value = try RequestView.parse(buffer(input("rag-8k.json")))
            policy.value = fullPolicy(upstream: "http://127.0.0.1:9/v1")
            PromptCompressor.warmUp()
        }
    )) { benchmark in
        let planner = Planner()
        for _ in benchmark.scaledIterations {
            let plan = planner.plan(endpoint: "chat.completions", view: ragView.value!, app: "bench", policy: policy.value!)
            blackHole(plan.patch.apply(to: ragView.value!.body))
        }
    }

    // SSE usage tap: ~1 MB of chunk events, one upstream read per event; observing only (the client asked for
    // usage) and stripping the injected usage (it did not).
    let events = Box<[ByteBuffer]>()
    for strip in [false, true] {
        Benchmark("SSE usage tap 1MB (\(strip ? "strip injected usage" : "observe"))", configuration: .init(
            setup: {
                let raw = input("sse-1mb.txt")
                var out: [ByteBuffer] = []
                var start = 0
                var i = 0
                while i + 1 < raw.count {  // split after every blank line
                    if raw[i] == 10 && raw[i + 1] == 10 {
                        out.append(buffer(Array(raw[start...(i + 1)])))
                        start = i + 2
                        i += 1
                    }
                    i += 1
                }
                events.value = out
            }
        )) { benchmark in
            for _ in benchmark.scaledIterations {
                var tap = StreamTap(stripInjectedUsage: strip)
                for e in events.value! { blackHole(tap.observe(e)) }
                blackHole(tap.finish())
                blackHole(tap.facts)
            }
        }
    }

    // Allocations per request, in process: a keep-alive client to the mock directly, through the passthrough
    // sidecar and through the full-policy sidecar (all event loops, the accounting thread and the client counted).
    let clients = Box<[String: RawClient]>()
    for target in ["direct", "passthrough", "full policy"] {
        Benchmark("Request 1KB in-process (\(target))", configuration: .init(
            metrics: [.wallClock, .mallocCountTotal, .throughput], warmupIterations: 200,
            setup: {
                let ports = try await Servers.shared.start()
                let port = target == "direct" ? ports.mock : target == "passthrough" ? ports.passthrough : ports.full
                var c = clients.value ?? [:]
                c[target] = RawClient(port: port, path: "/v1/chat/completions", body: input("body-1k.json"))
                clients.value = c
                precondition(c[target]!.roundTrip() == 200, "\(target) did not answer 200")
            }
        )) { benchmark in
            let client = clients.value![target]!
            for _ in benchmark.scaledIterations { blackHole(client.roundTrip()) }
        }
    }
}
