import Foundation
import NIOConcurrencyHelpers
import Wire

/// Totals since start, by application and by served model: what `GET /v1/optimizer/savings` reports.
public final class SavingsLedger: RecordSink {
    public struct Totals: Sendable, Equatable {
        public var requests = 0
        public var failed = 0
        public var promptTokens = 0
        public var completionTokens = 0
        public var tokensSaved = 0
        public var costPicoUSD: Int64 = 0
        public var costSavedPicoUSD: Int64 = 0
        public var costUSD: Decimal { USD.fromPico(costPicoUSD) }
        public var costSavedUSD: Decimal { USD.fromPico(costSavedPicoUSD) }
        /// Requests whose usage or price is an estimate (unknown model, no upstream usage).
        public var estimated = 0

        mutating func add(_ r: RequestRecord) {
            requests += 1
            if r.status >= 400 || r.errorType != nil { failed += 1 }
            promptTokens += r.usage?.promptTokens ?? 0
            completionTokens += r.usage?.completionTokens ?? 0
            tokensSaved += r.tokensSaved
            costPicoUSD &+= r.costPicoUSD ?? 0
            costSavedPicoUSD &+= r.costSavedPicoUSD ?? 0
            if r.usageEstimated || r.tokenCountIsEstimate { estimated += 1 }
        }
    }

    struct State {
        var all = Totals()
        var byApplication: [String: Totals] = [:]
        var byModel: [String: Totals] = [:]
    }

    private let state = NIOLockedValueBox(State())
    public let started = Date()

    public init() {}

    public func record(_ r: RequestRecord) {
        state.withLockedValue { s in
            s.all.add(r)
            s.byApplication[r.application, default: Totals()].add(r)
            s.byModel[r.servedModel ?? r.requestedModel ?? "unknown", default: Totals()].add(r)
        }
    }

    public var totals: Totals { state.withLockedValue { $0.all } }

    /// The report as JSON (USD as decimal strings, exact).
    /// The report; `droppedRecords`: requests whose records never reached the ledger (the accounting queue was
    /// full), so a reader can tell complete totals from undercounted ones.
    public func json(droppedRecords: Int = 0) -> String {
        let s = state.withLockedValue { $0 }
        func obj(_ t: Totals) -> String {
            #"{"requests":\#(t.requests),"failed":\#(t.failed),"prompt_tokens":\#(t.promptTokens),"completion_tokens":\#(t.completionTokens),"tokens_saved":\#(t.tokensSaved),"cost_usd":"\#(USD.format(t.costUSD))","cost_saved_usd":"\#(USD.format(t.costSavedUSD))","estimated":\#(t.estimated)}"#
        }
        func map(_ m: [String: Totals]) -> String {
            "{" + m.keys.sorted().map { "\(JSONString.quoted($0)):\(obj(m[$0]!))" }.joined(separator: ",") + "}"
        }
        let since = ISO8601DateFormatter().string(from: started)
        return #"{"object":"optimizer.savings","since":"\#(since)","total":\#(obj(s.all)),"by_application":\#(map(s.byApplication)),"by_model":\#(map(s.byModel)),"records_dropped":\#(droppedRecords)}"#
    }
}

/// USD amounts: exact `Decimal` arithmetic everywhere; text output rounded half-up to 1e-9 USD (nano-dollars),
/// trailing zeros trimmed.
public enum USD {
    public static func fromPico(_ pico: Int64) -> Decimal {
        Decimal(sign: pico < 0 ? .minus : .plus, exponent: -12, significand: Decimal(pico.magnitude))
    }

    /// Rounded half-up to the pico-dollar.
    public static func toPico(_ usd: Decimal) -> Int64 {
        var scaled = usd * Decimal(sign: .plus, exponent: 12, significand: 1)
        var rounded = Decimal()
        NSDecimalRound(&rounded, &scaled, 0, .plain)
        return Int64(truncating: NSDecimalNumber(decimal: rounded))
    }

    public static func format(_ value: Decimal) -> String {
        var v = value
        var rounded = Decimal()
        NSDecimalRound(&rounded, &v, 9, .plain)
        return "\(rounded)"
    }
}
