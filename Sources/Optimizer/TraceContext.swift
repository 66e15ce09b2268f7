import Wire

/// The W3C trace context of one proxied request (issue 6): the sidecar's own span id, the trace it belongs to
/// (continued from the client's `traceparent`, or new), the client's span as parent, and the sampled flag. Built
/// on the hot path from the request head with no lock and no system call; the telemetry sink later exports the
/// request's span with exactly these ids, so the upstream's spans (whose parent is `spanID`) join the same trace.
public struct TraceContext: Sendable, Equatable {
    public var traceIDHigh: UInt64
    public var traceIDLow: UInt64
    /// The sidecar's span (the CLIENT span exported for the request).
    public var spanID: UInt64
    /// The client's span, when the client sent a valid `traceparent`.
    public var parentSpanID: UInt64?
    /// W3C `sampled` flag: false when the client's `traceparent` said not sampled (no span is exported then).
    public var sampled: Bool
    /// The client's `tracestate`, passed through to the upstream unchanged and copied into the span.
    public var traceState: String?

    public init(traceIDHigh: UInt64, traceIDLow: UInt64, spanID: UInt64, parentSpanID: UInt64?, sampled: Bool,
                traceState: String? = nil)
    {
        self.traceIDHigh = traceIDHigh
        self.traceIDLow = traceIDLow
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.sampled = sampled
        self.traceState = traceState
    }

    /// Continues the client's trace when `traceparent` is valid (version 00 or a later version with at least the
    /// version-00 fields), else starts a new sampled trace.
    public static func start(traceparent: String?, tracestate: String?, ids: inout TraceIDGenerator) -> TraceContext {
        let spanID = ids.nextSpanID()
        if let tp = traceparent, let parsed = parse(traceparent: tp) {
            return TraceContext(traceIDHigh: parsed.high, traceIDLow: parsed.low, spanID: spanID,
                                parentSpanID: parsed.parent, sampled: parsed.sampled,
                                traceState: tracestate.flatMap { $0.isEmpty ? nil : $0 })
        }
        let (h, l) = ids.nextTraceID()
        return TraceContext(traceIDHigh: h, traceIDLow: l, spanID: spanID, parentSpanID: nil, sampled: true)
    }

    /// `traceparent` for the upstream request: the same trace, the sidecar's span as parent.
    public var upstreamTraceparent: String {
        var bytes = [UInt8]()
        bytes.reserveCapacity(55)
        bytes.append(contentsOf: "00-".utf8)
        Self.appendHex(traceIDHigh, to: &bytes)
        Self.appendHex(traceIDLow, to: &bytes)
        bytes.append(UInt8(ascii: "-"))
        Self.appendHex(spanID, to: &bytes)
        bytes.append(contentsOf: sampled ? "-01".utf8 : "-00".utf8)
        return String(decoding: bytes, as: UTF8.self)
    }

    public var traceIDHex: String {
        var b = [UInt8]()
        b.reserveCapacity(32)
        Self.appendHex(traceIDHigh, to: &b)
        Self.appendHex(traceIDLow, to: &b)
        return String(decoding: b, as: UTF8.self)
    }

    public static func hex(_ v: UInt64) -> String {
        var b = [UInt8]()
        b.reserveCapacity(16)
        appendHex(v, to: &b)
        return String(decoding: b, as: UTF8.self)
    }

    static func appendHex(_ v: UInt64, to bytes: inout [UInt8]) {
        let digits: StaticString = "0123456789abcdef"
        digits.withUTF8Buffer { d in
            var shift = 60
            while shift >= 0 {
                bytes.append(d[Int((v >> UInt64(shift)) & 0xf)])
                shift -= 4
            }
        }
    }

    /// Parses `version-traceid-parentid-flags`; nil when malformed, all-zero ids or version `ff`.
    public static func parse(traceparent: String) -> (high: UInt64, low: UInt64, parent: UInt64, sampled: Bool)? {
        var s = traceparent
        return s.withUTF8 { u -> (UInt64, UInt64, UInt64, Bool)? in
            // Leading/trailing optional whitespace is tolerated.
            var start = 0
            var end = u.count
            while start < end, u[start] == 0x20 || u[start] == 0x09 { start += 1 }
            while end > start, u[end - 1] == 0x20 || u[end - 1] == 0x09 { end -= 1 }
            let n = end - start
            guard n >= 55 else { return nil }
            func hexValue(_ from: Int, _ count: Int) -> UInt64? {
                var v: UInt64 = 0
                for i in from..<(from + count) {
                    let c = u[start + i]
                    let d: UInt8
                    switch c {
                    case 0x30...0x39: d = c - 0x30
                    case 0x61...0x66: d = c - 0x61 + 10
                    default: return nil  // upper case is invalid per W3C
                    }
                    v = v << 4 | UInt64(d)
                }
                return v
            }
            guard let version = hexValue(0, 2), version != 0xff else { return nil }
            if version == 0 && n != 55 { return nil }
            if version != 0 && n > 55 && u[start + 55] != UInt8(ascii: "-") { return nil }
            guard u[start + 2] == UInt8(ascii: "-"), u[start + 35] == UInt8(ascii: "-"),
                  u[start + 52] == UInt8(ascii: "-"),
                  let high = hexValue(3, 16), let low = hexValue(19, 16), let parent = hexValue(36, 16),
                  let flags = hexValue(53, 2)
            else { return nil }
            guard high != 0 || low != 0, parent != 0 else { return nil }
            return (high, low, parent, flags & 1 == 1)
        }
    }
}

/// Span and trace ids from a SplitMix64 generator seeded once from the system's random source: no lock and no
/// system call per id. One per connection handler (event-loop confined), not shared.
public struct TraceIDGenerator: Sendable {
    private var state: UInt64

    public init(seed: UInt64 = UInt64.random(in: 1...UInt64.max)) {
        self.state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A non-zero span id.
    public mutating func nextSpanID() -> UInt64 {
        var v = next()
        while v == 0 { v = next() }
        return v
    }

    public mutating func nextTraceID() -> (UInt64, UInt64) {
        (next(), nextSpanID())
    }
}

/// Request parameters reported as `gen_ai.request.*` (read off the hot path, by the accountant).
public struct RequestParameters: Sendable, Equatable {
    public var maxTokens: Int?
    public var temperature: Double?
    public var topP: Double?

    public init(maxTokens: Int? = nil, temperature: Double? = nil, topP: Double? = nil) {
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.topP = topP
    }

    public init(_ view: RequestView) {
        self.maxTokens = view.int("max_tokens") ?? view.int("max_completion_tokens") ?? view.int("max_output_tokens")
        self.temperature = view.double("temperature")
        self.topP = view.double("top_p")
    }
}
