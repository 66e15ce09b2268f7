/// A finished span in the OTLP data model, with the exact ids, kind, timestamps and attributes to export.
///
/// swift-otel 1.6.0 keeps its span exporter layer (`OTelSpanExporter`, `OTelFinishedSpan`) and generated OTLP types
/// `internal`/`package`, and its tracer assigns span ids itself; the sidecar's spans must carry the ids already sent
/// upstream in `traceparent` and the timestamps of the finished exchange, and must be serializable for the disk
/// spool. So spans are encoded here (the OTLP protobuf wire format, `opentelemetry/proto/trace/v1/trace.proto`)
/// and sent by `OTLPSpanTransport`s; metrics use swift-otel's exporters.
public struct OTLPSpan: Sendable, Equatable {
    public enum Kind: Int, Sendable {
        case unspecified = 0, `internal` = 1, server = 2, client = 3, producer = 4, consumer = 5
    }

    public enum StatusCode: Int, Sendable {
        case unset = 0, ok = 1, error = 2
    }

    public var traceIDHigh: UInt64
    public var traceIDLow: UInt64
    public var spanID: UInt64
    public var parentSpanID: UInt64?
    public var traceState: String?
    public var name: String
    public var kind: Kind
    public var startTimeUnixNano: UInt64
    public var endTimeUnixNano: UInt64
    public var attributes: [OTLPAttribute]
    public var events: [Event] = []
    public var status: StatusCode = .unset
    public var statusMessage: String?

    public struct Event: Sendable, Equatable {
        public var name: String
        public var timeUnixNano: UInt64
        public var attributes: [OTLPAttribute]

        public init(name: String, timeUnixNano: UInt64, attributes: [OTLPAttribute] = []) {
            self.name = name
            self.timeUnixNano = timeUnixNano
            self.attributes = attributes
        }
    }

    public init(traceIDHigh: UInt64, traceIDLow: UInt64, spanID: UInt64, parentSpanID: UInt64?, traceState: String?,
                name: String, kind: Kind, startTimeUnixNano: UInt64, endTimeUnixNano: UInt64,
                attributes: [OTLPAttribute])
    {
        self.traceIDHigh = traceIDHigh
        self.traceIDLow = traceIDLow
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.traceState = traceState
        self.name = name
        self.kind = kind
        self.startTimeUnixNano = startTimeUnixNano
        self.endTimeUnixNano = endTimeUnixNano
        self.attributes = attributes
    }

    public func attribute(_ key: String) -> OTLPAttribute.Value? {
        attributes.last(where: { $0.key == key })?.value
    }
}

/// One span or resource attribute (`KeyValue` with an `AnyValue`).
public struct OTLPAttribute: Sendable, Equatable {
    public enum Value: Sendable, Equatable {
        case string(String)
        case bool(Bool)
        case int(Int64)
        case double(Double)
        case stringArray([String])
    }

    public var key: String
    public var value: Value

    public init(_ key: String, _ value: Value) {
        self.key = key
        self.value = value
    }
}

/// The resource and instrumentation scope every exported batch carries.
public struct OTLPResource: Sendable, Equatable {
    public var attributes: [OTLPAttribute]
    public var scopeName: String
    public var scopeVersion: String

    public init(attributes: [OTLPAttribute], scopeName: String = "llm-auto-optimizer",
                scopeVersion: String = TelemetryVersion.current)
    {
        self.attributes = attributes
        self.scopeName = scopeName
        self.scopeVersion = scopeVersion
    }
}

public enum TelemetryVersion {
    public static let current = "0.6.0"
}

// MARK: - protobuf wire format

/// Minimal protobuf writer for the OTLP messages the sidecar sends.
struct ProtoWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func tag(_ field: Int, _ wire: Int) { varint(UInt64(field << 3 | wire)) }

    mutating func fixed64(_ field: Int, _ v: UInt64) {
        tag(field, 1)
        for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
    }

    mutating func fixed32(_ field: Int, _ v: UInt32) {
        tag(field, 5)
        for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) }
    }

    mutating func uint(_ field: Int, _ v: UInt64) {
        tag(field, 0)
        varint(v)
    }

    mutating func int64(_ field: Int, _ v: Int64) {
        tag(field, 0)
        varint(UInt64(bitPattern: v))
    }

    mutating func bool(_ field: Int, _ v: Bool) {
        tag(field, 0)
        bytes.append(v ? 1 : 0)
    }

    mutating func double(_ field: Int, _ v: Double) { fixed64(field, v.bitPattern) }

    mutating func bytesField(_ field: Int, _ b: [UInt8]) {
        tag(field, 2)
        varint(UInt64(b.count))
        bytes.append(contentsOf: b)
    }

    mutating func string(_ field: Int, _ s: String) {
        tag(field, 2)
        varint(UInt64(s.utf8.count))
        bytes.append(contentsOf: s.utf8)
    }

    /// A nested message written in place by `body`: a one-byte length is reserved and widened afterwards when the
    /// message is 128 bytes or longer (one move of its bytes), so small messages cost no extra buffer.
    mutating func message(_ field: Int, _ body: (inout ProtoWriter) -> Void) {
        tag(field, 2)
        let lengthAt = bytes.count
        bytes.append(0)
        body(&self)
        let length = bytes.count - lengthAt - 1
        if length < 0x80 {
            bytes[lengthAt] = UInt8(length)
            return
        }
        var prefix: [UInt8] = []
        var v = UInt64(length)
        while v >= 0x80 {
            prefix.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        prefix.append(UInt8(v))
        bytes.replaceSubrange(lengthAt..<(lengthAt + 1), with: prefix)
    }
}

func bigEndianBytes(_ values: UInt64...) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(values.count * 8)
    for v in values {
        for i in (0..<8).reversed() { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
    }
    return out
}

extension OTLPAttribute {
    func encode(into w: inout ProtoWriter) {
        w.string(1, key)
        w.message(2) { v in value.encode(into: &v) }
    }
}

extension OTLPAttribute.Value {
    func encode(into w: inout ProtoWriter) {
        switch self {
        case .string(let s): w.string(1, s)
        case .bool(let b): w.bool(2, b)
        case .int(let i): w.int64(3, i)
        case .double(let d): w.double(4, d)
        case .stringArray(let a):
            w.message(5) { arr in
                for s in a { arr.message(1) { v in v.string(1, s) } }
            }
        }
    }
}

extension OTLPSpan {
    func encode(into w: inout ProtoWriter) {
        w.bytesField(1, bigEndianBytes(traceIDHigh, traceIDLow))
        w.bytesField(2, bigEndianBytes(spanID))
        if let traceState, !traceState.isEmpty { w.string(3, traceState) }
        if let parentSpanID { w.bytesField(4, bigEndianBytes(parentSpanID)) }
        w.string(5, name)
        w.uint(6, UInt64(kind.rawValue))
        w.fixed64(7, startTimeUnixNano)
        w.fixed64(8, endTimeUnixNano)
        for a in attributes { w.message(9) { a.encode(into: &$0) } }
        for e in events {
            w.message(11) { ev in
                ev.fixed64(1, e.timeUnixNano)
                ev.string(2, e.name)
                for a in e.attributes { ev.message(3) { a.encode(into: &$0) } }
            }
        }
        if status != .unset || statusMessage != nil {
            w.message(15) { st in
                if let statusMessage { st.string(2, statusMessage) }
                st.uint(3, UInt64(status.rawValue))
            }
        }
        // flags: W3C trace flags (sampled) in the low byte; bits 8-9 say whether the parent is remote.
        var flags: UInt32 = 0x1 | 0x100
        if parentSpanID != nil && kind == .client { flags |= 0x200 }
        w.fixed32(16, flags)
    }
}

/// Encodes `ExportTraceServiceRequest` (`opentelemetry/proto/collector/trace/v1/trace_service.proto`): one
/// ResourceSpans with one ScopeSpans holding `spans`.
public enum OTLPTraceEncoder {
    public static func exportRequest(resource: OTLPResource, spans: [OTLPSpan]) -> [UInt8] {
        var w = ProtoWriter(capacity: 256 + spans.count * 1600)
        w.message(1) { rs in
            rs.message(1) { r in
                for a in resource.attributes { r.message(1) { a.encode(into: &$0) } }
            }
            rs.message(2) { ss in
                ss.message(1) { scope in
                    scope.string(1, resource.scopeName)
                    scope.string(2, resource.scopeVersion)
                }
                for span in spans { ss.message(2) { span.encode(into: &$0) } }
            }
        }
        return w.bytes
    }
}
