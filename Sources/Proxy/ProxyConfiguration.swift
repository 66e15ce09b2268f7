import Foundation
import NIOCore
import Optimizer

/// How the sidecar listens and forwards. Every field has a default; the CLI fills it from flags and environment.
public struct ProxyConfiguration: Sendable {
    /// Listen address. Flag `--host`, env `AUTO_OPTIMIZER_HOST`. Default `127.0.0.1`.
    public var host: String = "127.0.0.1"
    /// Listen port. Flag `--port`, env `AUTO_OPTIMIZER_PORT`. Default 8080.
    public var port: Int = 8080
    /// Upstream base URL including the version prefix, like the SDKs' base URL: a client's `/v1/chat/completions`
    /// goes to `{upstream}/chat/completions`. Flag `--upstream`, env `AUTO_OPTIMIZER_UPSTREAM` (or
    /// `OPENAI_UPSTREAM_BASE_URL`). Default `https://api.openai.com/v1`.
    public var upstream: UpstreamURL = try! UpstreamURL("https://api.openai.com/v1")
    /// Largest request body accepted, in bytes. Flag `--max-body-bytes`. Default 32 MiB.
    public var maxBodyBytes: Int = 32 * 1024 * 1024
    /// Longest wait for the next byte from the upstream (also for its first byte). Flag `--upstream-timeout`
    /// (seconds). Default 600 s, like the OpenAI SDKs' own default.
    public var upstreamReadTimeout: TimeAmount = .seconds(600)
    /// Longest wait to connect to the upstream. Flag `--connect-timeout` (seconds). Default 10 s.
    public var upstreamConnectTimeout: TimeAmount = .seconds(10)
    /// How long in-flight requests may run after SIGTERM/SIGINT. Flag `--drain-timeout` (seconds). Default 30 s.
    public var drainTimeout: TimeAmount = .seconds(30)
    /// Most pooled keep-alive connections per upstream host and event loop before overflow connections are used.
    public var upstreamConnectionsPerHost: Int = 256
    /// Application id for requests without an `x-app-id` header (env `AUTO_OPTIMIZER_APP_ID`). Default `default`.
    public var applicationID: String = "default"
    /// Event loop threads. Default: one per core.
    public var threads: Int = System.coreCount
    /// PEM file of extra certificate authorities trusted for https upstreams, on top of the system trust store
    /// (a company CA, a local gateway). Flag `--upstream-ca-file`, env `AUTO_OPTIMIZER_UPSTREAM_CA_FILE`.
    public var upstreamCAFile: String?
    /// W3C trace context (issue 6): continue the client's `traceparent`, give each request a span id, send the
    /// upstream a `traceparent` naming that span, and put the ids in the request record. Set when telemetry is on.
    public var traceContext: Bool = false
    /// Records the accounting worker may have waiting (env `AUTO_OPTIMIZER_ACCOUNTING_QUEUE`, 64...1,048,576; default
    /// 16,384). Each holds its request and response bodies until the worker completes it; when the queue is full a
    /// record is dropped (counted in `records_dropped` and `auto_optimizer_telemetry_dropped_total{reason="queue_full"}`),
    /// never the request.
    public var accountingQueueCapacity: Int = Accountant.defaultQueueCapacity

    public init() {}
}

/// A parsed upstream base URL.
public struct UpstreamURL: Sendable, Equatable, CustomStringConvertible {
    public var scheme: String
    public var host: String
    public var port: Int
    /// The path prefix without a trailing slash, e.g. `/v1`.
    public var basePath: String
    /// `scheme://host:port/basePath`, what requests are built on.
    public let base: String

    public init(_ string: String) throws(ProxyError) {
        guard let schemeEnd = string.range(of: "://") else {
            throw ProxyError(code: .invalidConfiguration, message: "upstream URL '\(string)' has no scheme")
        }
        let scheme = string[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "http" || scheme == "https" else {
            throw ProxyError(code: .invalidConfiguration, message: "upstream URL '\(string)': scheme must be http or https")
        }
        let rest = string[schemeEnd.upperBound...]
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        var path = String(rest[slash...])
        if path.contains("?") || path.contains("#") {
            throw ProxyError(code: .invalidConfiguration, message: "upstream URL '\(string)' must not have a query")
        }
        while path.hasSuffix("/") { path.removeLast() }
        var host = String(authority)
        var port = scheme == "https" ? 443 : 80
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw ProxyError(code: .invalidConfiguration, message: "upstream URL '\(string)': bad IPv6 address")
            }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else {
                    throw ProxyError(code: .invalidConfiguration, message: "upstream URL '\(string)': bad port")
                }
                port = p
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let p = Int(authority[authority.index(after: colon)...]), (1...65535).contains(p) else {
                throw ProxyError(code: .invalidConfiguration, message: "upstream URL '\(string)': bad port")
            }
            port = p
        }
        guard !host.isEmpty else {
            throw ProxyError(code: .invalidConfiguration, message: "upstream URL '\(string)' has no host")
        }
        self.scheme = scheme
        self.host = host
        self.port = port
        self.basePath = path
        let hostPart = host.contains(":") ? "[\(host)]" : host
        self.base = "\(scheme)://\(hostPart):\(port)\(path)"
    }

    public var description: String { base }
}
