import Foundation
import Optimizer

/// Builds the spans of one proxied request from its `RequestRecord` (on the accounting thread, never the hot path):
/// a CLIENT span named `{gen_ai.operation.name} {served model}` with the GenAI semantic conventions (v1.41.1 names)
/// and the sidecar's `llm.optimization.*` attributes, plus INTERNAL children for compression (when it ran) and the
/// upstream call. Prompt and completion text are not in the record, so they are never exported; neither are any
/// request headers (API keys).
public struct SpanBuilder: Sendable {
    /// Maps a served model to `gen_ai.provider.name` (from the catalog); nil falls back to `openai`.
    public var providerName: @Sendable (String) -> String?

    public init(providerName: @escaping @Sendable (String) -> String? = { _ in nil }) {
        self.providerName = providerName
    }

    /// `gen_ai.operation.name` for a sidecar endpoint (nil for endpoints that are not GenAI operations).
    public static func operationName(endpoint: String) -> String? {
        switch endpoint {
        case "chat.completions", "responses": return "chat"
        case "completions": return "text_completion"
        case "embeddings": return "embeddings"
        default: return nil
        }
    }

    public func provider(_ r: RequestRecord) -> String {
        let model = r.servedModel ?? r.requestedModel ?? ""
        return providerName(model) ?? "openai"
    }

    /// The request's spans, or none when it has no sampled trace context.
    public func spans(for r: RequestRecord, childIDs: inout TraceIDGenerator) -> [OTLPSpan] {
        guard let trace = r.trace, trace.sampled else { return [] }
        let end = r.endedAtUnixNano != 0 ? r.endedAtUnixNano : Self.now()
        let total = UInt64(max(0, r.timings.total.nanosecondsClamped))
        let start = end >= total ? end - total : 0
        let op = Self.operationName(endpoint: r.endpoint)
        let served = r.servedModel ?? r.requestedModel
        let name: String
        if let op {
            name = served.map { "\(op) \($0)" } ?? op
        } else {
            name = "proxy \(r.endpoint)"
        }
        var a: [OTLPAttribute] = []
        a.reserveCapacity(40)
        if let op { a.append(.init("gen_ai.operation.name", .string(op))) }
        a.append(.init("gen_ai.provider.name", .string(provider(r))))
        if let served { a.append(.init("gen_ai.request.model", .string(served))) }
        if let m = r.responseModel { a.append(.init("gen_ai.response.model", .string(m))) }
        if let id = r.responseID { a.append(.init("gen_ai.response.id", .string(id))) }
        if !r.finishReasons.isEmpty { a.append(.init("gen_ai.response.finish_reasons", .stringArray(r.finishReasons))) }
        if op != nil { a.append(.init("gen_ai.request.stream", .bool(r.stream))) }
        if let n = r.parameters.maxTokens { a.append(.init("gen_ai.request.max_tokens", .int(Int64(n)))) }
        if let t = r.parameters.temperature { a.append(.init("gen_ai.request.temperature", .double(t))) }
        if let p = r.parameters.topP { a.append(.init("gen_ai.request.top_p", .double(p))) }
        if let u = r.usage {
            a.append(.init("gen_ai.usage.input_tokens", .int(Int64(u.promptTokens))))
            a.append(.init("gen_ai.usage.output_tokens", .int(Int64(u.completionTokens))))
            a.append(.init("gen_ai.usage.cache_read.input_tokens", .int(Int64(u.cachedTokens))))
            a.append(.init("gen_ai.usage.reasoning.output_tokens", .int(Int64(u.reasoningTokens))))
            a.append(.init("llm.usage.estimated", .bool(r.usageEstimated)))
        }
        if let ttfc = r.timings.timeToFirstChunk {
            a.append(.init("gen_ai.response.time_to_first_chunk", .double(ttfc.seconds)))
        }
        if let h = r.serverAddress { a.append(.init("server.address", .string(h))) }
        if let p = r.serverPort { a.append(.init("server.port", .int(Int64(p)))) }
        if r.status != 0 { a.append(.init("http.response.status_code", .int(Int64(r.status)))) }
        if let e = r.errorType { a.append(.init("error.type", .string(e))) }
        // The design's optimization attributes.
        if let n = r.promptTokensOriginal { a.append(.init("llm.optimization.original_tokens", .int(Int64(n)))) }
        if let n = r.promptTokensOptimized { a.append(.init("llm.optimization.optimized_tokens", .int(Int64(n)))) }
        a.append(.init("llm.optimization.tokens_saved", .int(Int64(r.tokensSaved))))
        if let p = r.costSavedPicoUSD { a.append(.init("llm.optimization.cost_saved_usd", .double(Double(p) / 1e12))) }
        if let p = r.costPicoUSD { a.append(.init("llm.cost_usd", .double(Double(p) / 1e12))) }
        if let c = r.compression {
            a.append(.init("llm.optimization.compression_ratio", .double(c.ratio)))
            a.append(.init("llm.optimization.quality_score", .double(c.qualityScore)))
            a.append(.init("llm.optimization.technique", .string(c.technique)))
        }
        if let m = r.requestedModel { a.append(.init("llm.optimization.original_model", .string(m))) }
        a.append(.init("llm.optimization.rule", .string(r.rule ?? "default")))
        a.append(.init("llm.request_id", .string(r.requestID)))
        a.append(.init("llm.application_name", .string(r.application)))
        if let u = r.upstream { a.append(.init("llm.upstream", .string(u))) }
        if r.attempts > 1 { a.append(.init("llm.upstream.attempts", .int(Int64(r.attempts)))) }

        var main = OTLPSpan(traceIDHigh: trace.traceIDHigh, traceIDLow: trace.traceIDLow, spanID: trace.spanID,
                            parentSpanID: trace.parentSpanID, traceState: trace.traceState, name: name, kind: .client,
                            startTimeUnixNano: start, endTimeUnixNano: end, attributes: a)
        if let ttfc = r.timings.timeToFirstChunk {
            main.events.append(.init(name: "gen_ai.first_chunk",
                                     timeUnixNano: start + UInt64(max(0, ttfc.nanosecondsClamped))))
        }
        if r.errorType != nil || r.status >= 400 {
            main.status = .error
            main.statusMessage = r.errorType ?? "http_\(r.status)"
        }
        var out = [main]
        if let c = r.compression {
            let d = UInt64(max(0, c.duration.nanosecondsClamped))
            out.append(OTLPSpan(
                traceIDHigh: trace.traceIDHigh, traceIDLow: trace.traceIDLow, spanID: childIDs.nextSpanID(),
                parentSpanID: trace.spanID, traceState: trace.traceState, name: "compress \(c.technique)",
                kind: .internal, startTimeUnixNano: start, endTimeUnixNano: min(end, start + d),
                attributes: [
                    .init("llm.optimization.technique", .string(c.technique)),
                    .init("llm.optimization.original_tokens", .int(Int64(c.originalTokens))),
                    .init("llm.optimization.optimized_tokens", .int(Int64(c.compressedTokens))),
                    .init("llm.optimization.compression_ratio", .double(c.ratio)),
                    .init("llm.optimization.quality_score", .double(c.qualityScore)),
                    .init("llm.optimization.compression_profile", .string(c.profile)),
                    .init("llm.optimization.compression_applied", .bool(c.applied)),
                ]))
        }
        if let host = r.serverAddress {
            let up = UInt64(max(0, r.timings.upstream.nanosecondsClamped))
            var attrs: [OTLPAttribute] = [.init("server.address", .string(host))]
            if let p = r.serverPort { attrs.append(.init("server.port", .int(Int64(p)))) }
            if let u = r.upstream { attrs.append(.init("llm.upstream", .string(u))) }
            if r.status != 0 { attrs.append(.init("http.response.status_code", .int(Int64(r.status)))) }
            attrs.append(.init("llm.upstream.attempts", .int(Int64(r.attempts))))
            var child = OTLPSpan(
                traceIDHigh: trace.traceIDHigh, traceIDLow: trace.traceIDLow, spanID: childIDs.nextSpanID(),
                parentSpanID: trace.spanID, traceState: trace.traceState, name: "upstream \(r.upstream ?? host)",
                kind: .internal, startTimeUnixNano: max(start, end - min(end, up)), endTimeUnixNano: end,
                attributes: attrs)
            if r.errorType != nil || r.status >= 500 {
                child.status = .error
                child.statusMessage = r.errorType ?? "http_\(r.status)"
            }
            out.append(child)
        }
        return out
    }

    static func now() -> UInt64 {
        UInt64(Date().timeIntervalSince1970 * 1e9)
    }
}

extension Duration {
    var nanosecondsClamped: Int64 {
        let (s, atto) = components
        if s > Int64.max / 1_000_000_000 { return Int64.max }
        return s * 1_000_000_000 + atto / 1_000_000_000
    }

    var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}
