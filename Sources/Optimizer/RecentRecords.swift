import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Wire

/// The last N records, newest last: `GET /v1/optimizer/requests` (for operators and tests).
public final class RecentRecords: RecordSink {
    private let ring: NIOLockedValueBox<CircularBuffer<RequestRecord>>
    public let capacity: Int

    public init(capacity: Int = 256) {
        self.capacity = capacity
        self.ring = NIOLockedValueBox(CircularBuffer(initialCapacity: capacity))
    }

    public func record(_ r: RequestRecord) {
        ring.withLockedValue { ring in
            if ring.count >= capacity { ring.removeFirst() }
            ring.append(r)
        }
    }

    public var records: [RequestRecord] { ring.withLockedValue { Array($0) } }

    /// `{"object":"list","data":[...]}` with the newest `limit` records, oldest first.
    public func json(limit: Int) -> String {
        let list = records.suffix(max(0, limit))
        return #"{"object":"list","data":[\#(list.map { $0.json }.joined(separator: ","))]}"#
    }
}

extension RequestRecord {
    /// The record as JSON (USD amounts as exact decimal strings, durations in milliseconds).
    public var json: String {
        func str(_ s: String?) -> String { s.map { JSONString.quoted($0) } ?? "null" }
        func int(_ i: Int?) -> String { i.map(String.init) ?? "null" }
        func usd(_ d: Decimal?) -> String { d.map { "\"\(USD.format($0))\"" } ?? "null" }
        func ms(_ d: Duration?) -> String {
            guard let d else { return "null" }
            let (s, atto) = d.components
            return String(format: "%.3f", Double(s) * 1000 + Double(atto) / 1e15)
        }
        let usageJSON = usage.map {
            #"{"prompt_tokens":\#($0.promptTokens),"completion_tokens":\#($0.completionTokens),"cached_tokens":\#($0.cachedTokens),"reasoning_tokens":\#($0.reasoningTokens)}"#
        } ?? "null"
        let reasons = finishReasons.map { JSONString.quoted($0) }.joined(separator: ",")
        let compressionJSON = compression.map {
            #"{"technique":\#(str($0.technique)),"profile":\#(str($0.profile)),"original_tokens":\#($0.originalTokens),"compressed_tokens":\#($0.compressedTokens),"ratio":\#(String(format: "%.4f", $0.ratio)),"quality_score":\#(String(format: "%.4f", $0.qualityScore)),"applied":\#($0.applied),"duration_ms":\#(ms($0.duration))}"#
        } ?? "null"
        return #"{"request_id":\#(str(requestID)),"application":\#(str(application)),"endpoint":\#(str(endpoint)),"requested_model":\#(str(requestedModel)),"served_model":\#(str(servedModel)),"response_model":\#(str(responseModel)),"response_id":\#(str(responseID)),"finish_reasons":[\#(reasons)],"stream":\#(stream),"status":\#(status),"error_type":\#(str(errorType)),"prompt_tokens_original":\#(int(promptTokensOriginal)),"prompt_tokens_optimized":\#(int(promptTokensOptimized)),"token_count_is_estimate":\#(tokenCountIsEstimate),"usage":\#(usageJSON),"usage_estimated":\#(usageEstimated),"cost_usd":\#(usd(costUSD)),"counterfactual_cost_usd":\#(usd(counterfactualCostUSD)),"tokens_saved":\#(tokensSaved),"cost_saved_usd":\#(usd(costSavedUSD)),"rule":\#(str(rule)),"upstream":\#(str(upstream)),"attempts":\#(attempts),"compression":\#(compressionJSON),"timings_ms":{"total":\#(ms(timings.total)),"time_to_first_chunk":\#(ms(timings.timeToFirstChunk)),"upstream":\#(ms(timings.upstream)),"overhead":\#(ms(timings.overhead))}}"#
    }
}
