import AsyncHTTPClient
import Atomics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import Optimizer
import Policy
import Synchronization
import Wire

/// Request ids: a random per-process prefix and a counter; unique, cheap, no lock.
final class RequestIDs: Sendable {
    /// `ao-` and eight hex digits.
    private let prefix = UInt32.random(in: 0...UInt32.max)
    private let counter = Atomic<UInt64>(0)

    /// `ao-<prefix>-<counter>`, lowercase hex, written in place (`String(_:radix:)` and concatenation cost ~1k
    /// instructions a request).
    func next() -> String {
        let n = counter.wrappingAdd(1, ordering: .relaxed).newValue
        let digits = max(1, (UInt64.bitWidth - n.leadingZeroBitCount + 3) / 4)
        return String(unsafeUninitializedCapacity: 12 + digits) { out in
            @inline(__always) func hex(_ v: UInt64) -> UInt8 { v < 10 ? 0x30 + UInt8(v) : 0x57 + UInt8(v) }
            out[0] = UInt8(ascii: "a")
            out[1] = UInt8(ascii: "o")
            out[2] = UInt8(ascii: "-")
            for i in 0..<8 { out[3 + i] = hex(UInt64(prefix >> (28 - 4 * UInt32(i))) & 0xF) }
            out[11] = UInt8(ascii: "-")
            for i in 0..<digits { out[12 + i] = hex((n >> UInt64(4 * (digits - 1 - i))) & 0xF) }
            return 12 + digits
        }
    }
}

/// What every connection handler shares: configuration, the policy runtime, the upstream client, the drain flag.
final class ProxyShared: Sendable {
    let config: ProxyConfiguration
    let client: HTTPClient
    let logger: Logger
    let planner: Planner
    let accountant: Accountant
    let budgets: BudgetTracker
    let requestIDs = RequestIDs()
    /// The current policy and its upstreams: one atomic load per request; replaced whole by a reload.
    let runtime: ManagedAtomic<Runtime>
    private let draining = Atomic<Bool>(false)
    /// See `tunnelTLSContext()`.
    let tunnelTLS = NIOLockedValueBox<NIOSSLContext?>(nil)

    init(config: ProxyConfiguration, client: HTTPClient, logger: Logger, planner: Planner, accountant: Accountant,
         budgets: BudgetTracker, runtime: Runtime)
    {
        self.config = config
        self.client = client
        self.logger = logger
        self.planner = planner
        self.accountant = accountant
        self.budgets = budgets
        self.runtime = ManagedAtomic(runtime)
    }

    var isDraining: Bool { draining.load(ordering: .relaxed) }
    func startDraining() { draining.store(true, ordering: .relaxed) }
}

/// The sidecar's listener: HTTP/1.1 keep-alive and h2c (prior knowledge) on one port, forwarding `/v1/*` to the
/// upstream over pooled keep-alive connections (plain HTTP, or TLS with the system trust store and HTTP/2 via ALPN).
public final class ProxyServer: Sendable {
    public let config: ProxyConfiguration
    private let group: MultiThreadedEventLoopGroup
    private let shared: ProxyShared
    private let quiesce: NIOLockedValueBox<ServerQuiescingHelper?>
    private let channel: any Channel
    private let logger: Logger

    /// The address actually bound (useful with port 0).
    public var localAddress: SocketAddress? { channel.localAddress }

    private init(config: ProxyConfiguration, group: MultiThreadedEventLoopGroup, shared: ProxyShared,
                 quiesce: ServerQuiescingHelper, channel: any Channel, logger: Logger)
    {
        self.config = config
        self.group = group
        self.shared = shared
        self.quiesce = NIOLockedValueBox(quiesce)
        self.channel = channel
        self.logger = logger
    }

    /// Binds and starts serving. Throws a `ProxyError` when the port cannot be bound.
    /// Binds and starts serving with `policy` (nil: the built-in passthrough policy to `config.upstream`).
    public static func start(config: ProxyConfiguration, policy: CompiledPolicy? = nil, accountant: Accountant,
                             budgets: BudgetTracker = BudgetTracker(), planner: Planner = Planner(),
                             environment: [String: String] = ProcessInfo.processInfo.environment,
                             logger: Logger) async throws -> ProxyServer
    {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, config.threads))
        let runtime: Runtime
        do {
            runtime = try Runtime.make(policy: policy ?? CompiledPolicy.builtIn(upstreamURL: config.upstream.base),
                                       config: config, group: group, environment: environment)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        if let ca = config.upstreamCAFile { tls.additionalTrustRoots = [.file(ca)] }
        var clientConfig = HTTPClient.Configuration(
            tlsConfiguration: tls,
            redirectConfiguration: .disallow,
            timeout: .init(connect: config.upstreamConnectTimeout, read: config.upstreamReadTimeout),
            connectionPool: .init(idleTimeout: .seconds(60),
                                  concurrentHTTP1ConnectionsPerHostSoftLimit: config.upstreamConnectionsPerHost),
            decompression: .disabled)
        // Fail fast: a refused connection is a 502 now, not after the connect timeout (fallback is the policy's job).
        clientConfig.connectionPool.retryConnectionEstablishment = false
        clientConfig.httpVersion = .automatic
        let client = HTTPClient(eventLoopGroupProvider: .shared(group), configuration: clientConfig)
        let shared = ProxyShared(config: config, client: client, logger: logger, planner: planner,
                                 accountant: accountant, budgets: budgets, runtime: runtime)
        let quiesce = ServerQuiescingHelper(group: group)

        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ProtocolDetector(shared: shared))
                }
            }
        do {
            let channel = try await bootstrap.bind(host: config.host, port: config.port).get()
            return ProxyServer(config: config, group: group, shared: shared, quiesce: quiesce, channel: channel,
                               logger: logger)
        } catch {
            try? await client.shutdown()
            try? await group.shutdownGracefully()
            throw ProxyError(code: .bindFailed, message: "cannot listen on \(config.host):\(config.port)", cause: error)
        }
    }

    /// Graceful shutdown: `/ready` turns 503, the listener closes, idle connections close, in-flight requests and
    /// streams finish (up to the drain timeout), then everything stops.
    public func shutdown() async {
        shared.startDraining()
        let promise = group.next().makePromise(of: Void.self)
        if let helper = quiesce.withLockedValue({ $0 }) {
            helper.initiateShutdown(promise: promise)
        } else {
            promise.succeed()
        }
        let drained = promise.futureResult
        // Whichever comes first: every connection closed, or the drain timeout. (Not a task group: waiting on a
        // future does not end when its task is cancelled, so the group would wait for the last connection, a
        // WebSocket session for instance, however long it stays open.)
        let loop = group.next()
        let outcome = loop.makePromise(of: Bool.self)
        let settled = NIOLockedValueBox(false)
        let settle: @Sendable (Bool) -> Void = { clean in
            let first = settled.withLockedValue { done in
                defer { done = true }
                return !done
            }
            if first { outcome.succeed(clean) }
        }
        drained.whenComplete { _ in settle(true) }
        let timer = loop.scheduleTask(in: config.drainTimeout) { settle(false) }
        let clean = (try? await outcome.futureResult.get()) ?? false
        timer.cancel()
        if !clean { logger.warning("drain timeout reached, closing remaining connections") }
        for endpoint in shared.runtime.load(ordering: .acquiring).upstreams.values {
            for pool in endpoint.pools.values {
                try? await pool.eventLoop.flatSubmit { pool.close() }.get()
            }
        }
        try? await shared.client.shutdown()
        // The quiescing helper fails a promise in its deinit: let that happen while the event loops still run.
        quiesce.withLockedValue { $0 = nil }
        try? await group.shutdownGracefully()
        shared.accountant.close()
    }

    /// Swaps in a new policy (and its upstreams) atomically; requests in flight finish on the old one. Throws,
    /// keeping the current policy, when an upstream of the new one cannot be set up (bad URL, missing API key).
    public func reload(policy: CompiledPolicy, environment: [String: String] = ProcessInfo.processInfo.environment)
        throws(ProxyError)
    {
        let next = try Runtime.make(policy: policy, config: config, group: group, environment: environment)
        let old = shared.runtime.exchange(next, ordering: .acquiringAndReleasing)
        for endpoint in old.upstreams.values { endpoint.closeIdle() }
    }

    /// The policy in force.
    public var policy: CompiledPolicy { shared.runtime.load(ordering: .acquiring).policy }

    /// Completes when the listener closes.
    public func waitUntilClosed() async {
        try? await channel.closeFuture.get()
    }
}

/// Looks at a new connection's first bytes: the HTTP/2 connection preface means h2c with prior knowledge,
/// anything else is HTTP/1.x. Then installs the matching pipeline and steps aside.
final class ProtocolDetector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    private let shared: ProxyShared
    private var buffered: ByteBuffer?

    init(shared: ProxyShared) {
        self.shared = shared
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffered == nil {
            buffered = incoming
        } else {
            buffered!.writeBuffer(&incoming)
        }
        let bytes = buffered!.readableBytesView
        let n = min(bytes.count, Self.preface.count)
        let isH2 = bytes.prefix(n).elementsEqual(Self.preface.prefix(n))
        if isH2 && n < Self.preface.count { return }  // wait for the rest of the preface
        do {
            let pipeline = context.pipeline.syncOperations
            if isH2 {
                let shared = self.shared
                _ = try pipeline.configureHTTP2Pipeline(
                    mode: .server, connectionConfiguration: .init(), streamConfiguration: .init(), position: .last
                ) { stream in
                    stream.eventLoop.makeCompletedFuture {
                        try stream.pipeline.syncOperations.addHandlers([
                            HTTP2FramePayloadToHTTP1ServerCodec(), HTTP2RequestAdapter(),
                            ProxyHandler(shared: shared, http1: false),
                        ])
                    }
                }
            } else {
                // The own HTTP/1 request decoder (byte ranges, no String per header); ProxyHandler orders pipelined
                // requests itself and writes its responses as bytes (the upstream's header lines, parsed and so
                // free of control characters, and its own, whose values are cleaned of them).
                // The decoder hands its parts to the handler directly (see `HTTP1RequestDecoder.sink`).
                let handler = ProxyHandler(shared: shared, http1: true)
                try pipeline.addHandlers([HTTP1RequestDecoder(sink: handler), handler])
            }
            let data = buffered!
            buffered = nil
            context.fireChannelRead(wrapInboundOut(data))
            pipeline.removeHandler(context: context, promise: nil)
        } catch {
            context.close(promise: nil)
        }
    }

    typealias InboundOut = ByteBuffer
}
