import Atomics
import Foundation
import NIOCore
import NIOPosix
import Policy

/// One named upstream as the proxy reaches it.
final class UpstreamEndpoint: Sendable {
    let name: String
    let url: UpstreamURL
    /// `Bearer ...` to send instead of the client's Authorization, when the policy gives the upstream a key.
    let authorization: String?
    /// Plain-HTTP keep-alive pools, one per event loop (empty for https: AsyncHTTPClient serves those).
    let pools: [ObjectIdentifier: UpstreamPool]

    init(name: String, url: UpstreamURL, authorization: String?, pools: [ObjectIdentifier: UpstreamPool]) {
        self.name = name
        self.url = url
        self.authorization = authorization
        self.pools = pools
    }

    func pool(for loop: any EventLoop) -> UpstreamPool? {
        pools.isEmpty ? nil : pools[ObjectIdentifier(loop)]
    }

    /// Closes idle pooled connections (a replaced policy's upstreams).
    func closeIdle() {
        for pool in pools.values { pool.eventLoop.execute { _ = pool.close() } }
    }
}

/// The policy snapshot and the upstreams it names, swapped as one by a reload: a request reads it with one atomic
/// load and uses that snapshot from start to end.
final class Runtime: Sendable, AtomicReference {
    let policy: CompiledPolicy
    let upstreams: [String: UpstreamEndpoint]

    init(policy: CompiledPolicy, upstreams: [String: UpstreamEndpoint]) {
        self.policy = policy
        self.upstreams = upstreams
    }

    /// Builds endpoints for every upstream of `policy`. API keys from environment variables or files are read now:
    /// a missing one is a configuration error (the reload is refused).
    static func make(policy: CompiledPolicy, config: ProxyConfiguration, group: MultiThreadedEventLoopGroup,
                     environment: [String: String]) throws(ProxyError) -> Runtime
    {
        var endpoints: [String: UpstreamEndpoint] = [:]
        for (name, u) in policy.upstreams {
            let url = try UpstreamURL(u.url)
            var authorization: String?
            switch u.apiKey {
            case .passthrough:
                authorization = nil
            case .environment(let variable):
                guard let key = environment[variable], !key.isEmpty else {
                    throw ProxyError(code: .invalidConfiguration,
                                     message: "upstream '\(name)': environment variable \(variable) is not set")
                }
                authorization = "Bearer \(key)"
            case .file(let path):
                guard let data = FileManager.default.contents(atPath: path),
                    let key = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines),
                    !key.isEmpty
                else {
                    throw ProxyError(code: .invalidConfiguration, message: "upstream '\(name)': cannot read key file \(path)")
                }
                authorization = "Bearer \(key)"
            }
            var pools: [ObjectIdentifier: UpstreamPool] = [:]
            if url.scheme == "http" {
                let connect = u.connectTimeout.map { TimeAmount.nanoseconds(Int64($0.nanoseconds)) }
                    ?? config.upstreamConnectTimeout
                let read = u.readTimeout.map { TimeAmount.nanoseconds(Int64($0.nanoseconds)) } ?? config.upstreamReadTimeout
                for loop in group.makeIterator() {
                    pools[ObjectIdentifier(loop)] = UpstreamPool(
                        eventLoop: loop, upstream: url, connectTimeout: connect, readTimeout: read,
                        maxIdle: u.maxConnections ?? config.upstreamConnectionsPerHost)
                }
            }
            endpoints[name] = UpstreamEndpoint(name: name, url: url, authorization: authorization, pools: pools)
        }
        return Runtime(policy: policy, upstreams: endpoints)
    }
}

extension Duration {
    var nanoseconds: Double {
        let (s, atto) = components
        return Double(s) * 1e9 + Double(atto) / 1e9
    }
}
