import AsyncHTTPClient
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// Sends one encoded `ExportTraceServiceRequest`. Throws `TelemetryError` with code `exportFailed` when the
/// batch should be retried (collector unreachable, 429, 5xx, gRPC UNAVAILABLE ...) and `exportRejected` when
/// retrying cannot help (400, 413, invalid argument ...).
public protocol OTLPSpanTransport: Sendable {
    func export(_ payload: [UInt8]) async throws(TelemetryError)
    /// Runs connections for transports that need it until shutdown (gRPC); returns at once otherwise.
    func run() async throws
    func shutdown() async
}

extension OTLPSpanTransport {
    public func run() async throws {}
    public func shutdown() async {}
}

/// OTLP/HTTP with binary protobuf bodies (`POST {endpoint}`, `application/x-protobuf`), on AsyncHTTPClient.
public final class OTLPHTTPSpanTransport: OTLPSpanTransport {
    let endpoint: String
    let headers: HTTPHeaders
    let timeout: Duration
    let client: HTTPClient

    public init(endpoint: String, headers: [(String, String)], timeout: Duration) {
        self.endpoint = endpoint
        var h = HTTPHeaders(headers)
        h.replaceOrAdd(name: "content-type", value: "application/x-protobuf")
        h.replaceOrAdd(name: "user-agent", value: "llm-auto-optimizer/\(TelemetryVersion.current)")
        self.headers = h
        self.timeout = timeout
        var config = HTTPClient.Configuration()
        config.timeout.connect = .seconds(2)
        self.client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: config)
    }

    public func export(_ payload: [UInt8]) async throws(TelemetryError) {
        var request = HTTPClientRequest(url: endpoint)
        request.method = .POST
        request.headers = headers
        request.body = .bytes(ByteBuffer(bytes: payload))
        let status: UInt
        let body: String
        do {
            let response = try await client.execute(request, timeout: .nanoseconds(Int64(timeout.nanosecondsClamped)))
            status = response.status.code
            let buffer = try await response.body.collect(upTo: 64 * 1024)
            body = String(buffer: buffer)
        } catch {
            throw TelemetryError(code: .exportFailed, message: "OTLP/HTTP export to \(endpoint) failed", cause: error)
        }
        switch status {
        case 200..<300:
            return
        case 408, 429, 500...599:
            throw TelemetryError(code: .exportFailed, message: "OTLP/HTTP export: HTTP \(status) \(body.prefix(200))")
        default:
            throw TelemetryError(code: .exportRejected, message: "OTLP/HTTP export: HTTP \(status) \(body.prefix(200))")
        }
    }

    public func shutdown() async {
        try? await client.shutdown()
    }
}

/// Raw bytes in and out: the payload is already an encoded protobuf message.
struct RawBytesCoder: MessageSerializer, MessageDeserializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
    func deserialize<Bytes: GRPCContiguousBytes>(_ bytes: Bytes) throws -> [UInt8] {
        bytes.withUnsafeBytes { Array($0) }
    }
}

/// OTLP/gRPC (`opentelemetry.proto.collector.trace.v1.TraceService/Export`), on grpc-swift-2 over plaintext
/// HTTP/2 (`http://` endpoints; `https://` uses TLS with the system trust roots).
public final class OTLPGRPCSpanTransport: OTLPSpanTransport {
    let client: GRPCClient<HTTP2ClientTransport.Posix>
    let metadata: Metadata
    let timeout: Duration
    let endpoint: String
    static let method = MethodDescriptor(fullyQualifiedService: "opentelemetry.proto.collector.trace.v1.TraceService",
                                         method: "Export")

    public init(endpoint: String, headers: [(String, String)], timeout: Duration) throws(TelemetryError) {
        self.endpoint = endpoint
        guard let url = URL(string: endpoint), let host = url.host else {
            throw TelemetryError(code: .invalidConfiguration, message: "OTLP/gRPC endpoint '\(endpoint)' is not a URL")
        }
        let tls = url.scheme == "https"
        let port = url.port ?? (tls ? 443 : 4317)
        do {
            let transport = try HTTP2ClientTransport.Posix(
                target: .dns(host: host, port: port),
                transportSecurity: tls ? .tls : .plaintext)
            self.client = GRPCClient(transport: transport)
        } catch {
            throw TelemetryError(code: .invalidConfiguration, message: "OTLP/gRPC endpoint '\(endpoint)'", cause: error)
        }
        var m = Metadata()
        for (k, v) in headers { m.addString(v, forKey: k.lowercased()) }
        self.metadata = m
        self.timeout = timeout
    }

    public func run() async throws {
        try await client.runConnections()
    }

    public func shutdown() async {
        client.beginGracefulShutdown()
    }

    public func export(_ payload: [UInt8]) async throws(TelemetryError) {
        var options = CallOptions.defaults
        options.timeout = timeout
        do {
            _ = try await client.unary(
                request: ClientRequest(message: payload, metadata: metadata), descriptor: Self.method,
                serializer: RawBytesCoder(), deserializer: RawBytesCoder(), options: options
            ) { response in try response.message }
        } catch let e as RPCError {
            switch e.code {
            case .invalidArgument, .unimplemented, .permissionDenied, .unauthenticated, .failedPrecondition:
                throw TelemetryError(code: .exportRejected, message: "OTLP/gRPC export to \(endpoint): \(e.code)",
                                     cause: e)
            default:
                throw TelemetryError(code: .exportFailed, message: "OTLP/gRPC export to \(endpoint): \(e.code)", cause: e)
            }
        } catch {
            throw TelemetryError(code: .exportFailed, message: "OTLP/gRPC export to \(endpoint) failed", cause: error)
        }
    }
}

/// Keeps every exported payload (tests); can be told to fail.
public final class InMemorySpanTransport: OTLPSpanTransport {
    private let state = NIOLockedValueBox<(payloads: [[UInt8]], failing: Bool)>(([], false))

    public init() {}

    public var payloads: [[UInt8]] { state.withLockedValue { $0.payloads } }

    public func setFailing(_ failing: Bool) { state.withLockedValue { $0.failing = failing } }

    public func export(_ payload: [UInt8]) async throws(TelemetryError) {
        let failed = state.withLockedValue { s -> Bool in
            if s.failing { return true }
            s.payloads.append(payload)
            return false
        }
        if failed { throw TelemetryError(code: .exportFailed, message: "in-memory transport is failing") }
    }
}
