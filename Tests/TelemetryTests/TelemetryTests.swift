import Foundation
import Logging
import Optimizer
import Testing
import Wire

@testable import Telemetry

@Suite struct TraceContextTests {
    @Test func continuesAValidTraceparent() {
        var ids = TraceIDGenerator(seed: 42)
        let t = TraceContext.start(traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                                   tracestate: "vendor=x", ids: &ids)
        #expect(t.traceIDHex == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(t.parentSpanID == 0x00f0_67aa_0ba9_02b7)
        #expect(t.sampled)
        #expect(t.traceState == "vendor=x")
        #expect(t.spanID != 0 && t.spanID != t.parentSpanID)
        #expect(t.upstreamTraceparent == "00-4bf92f3577b34da6a3ce929d0e0e4736-\(TraceContext.hex(t.spanID))-01")
    }

    @Test func startsANewTraceOnInvalidInput() {
        var ids = TraceIDGenerator(seed: 7)
        for bad in [nil, "", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"] as [String?]
        {
            let t = TraceContext.start(traceparent: bad, tracestate: nil, ids: &ids)
            #expect(t.parentSpanID == nil, "\(bad ?? "nil")")
            #expect(t.sampled)
            #expect(t.upstreamTraceparent.count == 55)
        }
    }

    @Test func keepsTheNotSampledFlag() {
        var ids = TraceIDGenerator(seed: 1)
        let t = TraceContext.start(traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                                   tracestate: nil, ids: &ids)
        #expect(!t.sampled)
        #expect(t.upstreamTraceparent.hasSuffix("-00"))
        #expect(SpanBuilder().spans(for: record(trace: t), childIDs: &ids).isEmpty)
    }
}

func record(trace: TraceContext?) -> RequestRecord {
    var r = RequestRecord(requestID: "ao-1", application: "billing", endpoint: "chat.completions")
    r.requestedModel = "gpt-4o"
    r.servedModel = "gpt-4o-mini"
    r.responseModel = "gpt-4o-mini-2024-07-18"
    r.responseID = "chatcmpl-1"
    r.finishReasons = ["stop"]
    r.status = 200
    r.usage = Usage(promptTokens: 120, completionTokens: 30, cachedTokens: 10, reasoningTokens: 2)
    r.promptTokensOriginal = 150
    r.promptTokensOptimized = 120
    r.tokensSaved = 30
    r.costSavedPicoUSD = 1_500_000_000
    r.rule = "cheap"
    r.upstream = "openai"
    r.serverAddress = "127.0.0.1"
    r.serverPort = 8081
    r.parameters = RequestParameters(maxTokens: 64, temperature: 0.2, topP: 0.9)
    r.timings.total = .milliseconds(40)
    r.timings.upstream = .milliseconds(38)
    r.timings.timeToFirstChunk = .milliseconds(20)
    r.endedAtUnixNano = 1_700_000_000_000_000_000
    r.trace = trace
    r.compression = CompressionSummary(technique: "lossless", originalTokens: 150, compressedTokens: 120, ratio: 0.8,
                                       qualityScore: 0.97, duration: .microseconds(300))
    return r
}

@Suite struct SpanBuilderTests {
    @Test func buildsTheClientSpanAndChildren() {
        var ids = TraceIDGenerator(seed: 3)
        let t = TraceContext(traceIDHigh: 1, traceIDLow: 2, spanID: 3, parentSpanID: 4, sampled: true)
        let spans = SpanBuilder(providerName: { _ in "openai" }).spans(for: record(trace: t), childIDs: &ids)
        #expect(spans.count == 3)
        let main = spans[0]
        #expect(main.name == "chat gpt-4o-mini")
        #expect(main.kind == .client)
        #expect(main.spanID == 3 && main.parentSpanID == 4)
        #expect(main.endTimeUnixNano - main.startTimeUnixNano == 40_000_000)
        #expect(main.attribute("gen_ai.operation.name") == .string("chat"))
        #expect(main.attribute("gen_ai.request.model") == .string("gpt-4o-mini"))
        #expect(main.attribute("llm.optimization.original_model") == .string("gpt-4o"))
        #expect(main.attribute("gen_ai.usage.input_tokens") == .int(120))
        #expect(main.attribute("gen_ai.usage.cache_read.input_tokens") == .int(10))
        #expect(main.attribute("gen_ai.request.max_tokens") == .int(64))
        #expect(main.attribute("llm.optimization.tokens_saved") == .int(30))
        #expect(main.attribute("llm.optimization.cost_saved_usd") == .double(0.0015))
        #expect(main.attribute("llm.optimization.technique") == .string("lossless"))
        #expect(main.attribute("gen_ai.response.finish_reasons") == .stringArray(["stop"]))
        #expect(spans[1].name == "compress lossless" && spans[1].parentSpanID == 3)
        #expect(spans[2].name == "upstream openai" && spans[2].parentSpanID == 3)
        #expect(spans[2].endTimeUnixNano - spans[2].startTimeUnixNano == 38_000_000)
    }

    @Test func encodesProtobufWithIdsInBigEndian() {
        var ids = TraceIDGenerator(seed: 3)
        let t = TraceContext(traceIDHigh: 0x0102_0304_0506_0708, traceIDLow: 0x090a_0b0c_0d0e_0f10, spanID: 0xaabb,
                             parentSpanID: nil, sampled: true)
        let spans = SpanBuilder().spans(for: record(trace: t), childIDs: &ids)
        let bytes = OTLPTraceEncoder.exportRequest(resource: OTLPResource(attributes: [.init("service.name", .string("s"))]),
                                                   spans: spans)
        // The trace id appears as 16 big-endian bytes after its field tag (0x0a, length 16).
        let needle: [UInt8] = [0x0a, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
        #expect(contains(bytes, needle))
        #expect(contains(bytes, Array("chat gpt-4o-mini".utf8)))
    }
}

func contains(_ hay: [UInt8], _ needle: [UInt8]) -> Bool {
    guard needle.count <= hay.count else { return false }
    for i in 0...(hay.count - needle.count) where Array(hay[i..<(i + needle.count)]) == needle { return true }
    return false
}

@Suite struct SpoolTests {
    @Test func roundTripsAndSurvivesReopen() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spool-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let s = try SpanSpool(directory: dir, maxBytes: 1 << 20)
            try s.append(SpanBatch(payload: Array(repeating: 7, count: 5000), spanCount: 3))
            try s.append(SpanBatch(payload: Array("second".utf8), spanCount: 1))
            #expect(s.segmentCount == 2)
            #expect(s.totalBytes < 5000)  // compressed
        }
        let s = try SpanSpool(directory: dir, maxBytes: 1 << 20)
        #expect(s.spanCount == 4)
        #expect(s.peek() == SpanBatch(payload: Array(repeating: 7, count: 5000), spanCount: 3))
        s.removeOldest()
        #expect(s.peek() == SpanBatch(payload: Array("second".utf8), spanCount: 1))
        s.removeOldest()
        #expect(s.isEmpty)
    }

    @Test func dropsTheOldestBeyondItsBound() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spool-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let s = try SpanSpool(directory: dir, maxBytes: 4096)
        for i in 0..<20 {
            try s.append(SpanBatch(payload: (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) }, spanCount: 1))
        }
        #expect(s.totalBytes <= 4096)
        #expect(s.droppedSpans + s.spanCount == 20)
        #expect(s.droppedSpans > 0)
    }

    @Test func lz4RoundTrip() {
        let input = Array("hello hello hello hello telemetry".utf8)
        let c = LZ4.compress(input)
        #expect(LZ4.decompress(c, originalSize: input.count) == input)
        #expect(LZ4.decompress(c, originalSize: input.count + 1) == nil)
    }
}

@Suite struct PipelineTests {
    @Test func keepsSpansWhileTheCollectorIsDownAndDeliversThemLater() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spool-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = TelemetryConfiguration()
        config.spoolDirectory = dir
        config.memoryBufferBytes = 0  // everything that fails goes to the spool
        config.maxExportBatchSize = 2
        let transport = InMemorySpanTransport()
        transport.setFailing(true)
        let p = SpanExportPipeline(config: config, resource: OTLPResource(attributes: []), transport: transport,
                                   logger: Logger(label: "test"))
        var ids = TraceIDGenerator(seed: 9)
        for _ in 0..<5 {
            let t = TraceContext.start(traceparent: nil, tracestate: nil, ids: &ids)
            var r = record(trace: t)
            r.serverAddress = nil
            r.compression = nil
            p.enqueue(SpanBuilder().spans(for: r, childIDs: &ids))
        }
        await p.cycle(deadline: .now + .seconds(1))
        #expect(p.counters.spoolSpans == 5)
        #expect(transport.payloads.isEmpty)
        transport.setFailing(false)
        await p.cycle(deadline: .now + .seconds(1))
        #expect(p.counters.exportedSpans == 5)
        #expect(p.counters.spoolSpans == 0)
        #expect(transport.payloads.count == 3)
    }
}
