import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

// HTTP/1.1 protocol upgrades (RFC 9110 section 7.8), in practice WebSocket: the OpenAI SDKs open their Realtime,
// Responses-over-WebSocket and similar sessions as `ws(s)://{base_url}/...`, so an application pointed at the sidecar
// sends them here. Such a request is forwarded on a connection of its own (not the keep-alive pool): the sidecar
// writes the request head (Host for the upstream, the policy's key, Upgrade and `Connection: upgrade` kept), then
// joins the client's and the upstream's connections and relays bytes both ways until either side closes. The
// upstream's answer (`101 Switching Protocols` with its `Sec-WebSocket-Accept`, or a refusal) reaches the client
// byte for byte; the frames that follow are not read.

extension RequestHead {
    /// The `Upgrade` header's value when this is an upgrade request the sidecar tunnels: HTTP/1.1, GET, with
    /// `upgrade` among the `Connection` tokens.
    var upgradeProtocol: String? {
        guard method == .GET, version == .http1_1, case .raw(let raw) = fields else { return nil }
        var hasToken = false
        for f in raw.fields where raw.withName(f, { HeaderBytes.equalsIgnoringCase($0, "connection") }) {
            raw.withValue(f) { v in
                HeaderBytes.forEachToken(v) { t in
                    if HeaderBytes.equalsIgnoringCase(t, "upgrade") { hasToken = true }
                }
            }
        }
        guard hasToken, let value = raw.first("upgrade"), !value.isEmpty else { return nil }
        return value
    }
}

enum UpgradeTunnel {
    /// Opens a connection of its own to `url`'s host (TLS with `tls` for https, offering only HTTP/1.1 by ALPN).
    /// Completes once the connection is usable: connected, and for TLS once the handshake (and the certificate's
    /// verification) succeeded, so that a failure is still an HTTP error for the client.
    static func connect(to url: UpstreamURL, on eventLoop: any EventLoop, tls: NIOSSLContext?,
                        connectTimeout: TimeAmount) -> EventLoopFuture<any Channel>
    {
        let host = url.host
        let isIP = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        let handshake = eventLoop.makePromise(of: Void.self)
        let connected = ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        // An IP address is not sent as SNI; the certificate is then checked against the IP itself.
                        let handler = try NIOSSLClientHandler(context: tls, serverHostname: isIP ? nil : host)
                        try channel.pipeline.syncOperations.addHandlers([handler, HandshakeWaiter(handshake)])
                    } else {
                        handshake.succeed()
                    }
                }
            }
            .connect(host: host, port: url.port)
        connected.whenFailure { handshake.fail($0) }
        return connected.flatMap { channel in
            handshake.futureResult.map { channel }.flatMapErrorThrowing { error in
                channel.close(promise: nil)
                throw error
            }
        }
    }

    /// The status code of a response's first bytes (`HTTP/1.1 101 ...`), when they hold a status line.
    static func status(of first: ByteBuffer) -> Int? {
        first.withUnsafeReadableBytes { p -> Int? in
            guard p.count >= 12, p[0] == UInt8(ascii: "H"), p[8] == UInt8(ascii: " ") else { return nil }
            var code = 0
            for i in 9..<12 {
                let d = Int(p[i]) - Int(UInt8(ascii: "0"))
                guard d >= 0 && d <= 9 else { return nil }
                code = code * 10 + d
            }
            return code
        }
    }
}

/// Completes `promise` when the TLS handshake is done, fails it when the connection fails first; then leaves.
private final class HandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private var promise: EventLoopPromise<Void>?

    init(_ promise: EventLoopPromise<Void>) { self.promise = promise }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? TLSUserEvent, case .handshakeCompleted = e {
            promise?.succeed()
            promise = nil
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise?.fail(error)
        promise = nil
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise?.fail(ChannelError.eof)
        promise = nil
        context.fireChannelInactive()
    }
}

/// One end of a tunnel: what its channel reads is written to the partner's channel, flushed when a read burst
/// ends. Backpressure: while the partner's channel is not writable, this one stops reading. When either channel
/// closes, so does the other.
final class TunnelGlue: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: TunnelGlue?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    /// Called once, with the first bytes this end reads (the upstream end: the response's status line).
    private var onFirstBytes: ((ByteBuffer) -> Void)?
    /// Called once, when this end's channel closes.
    private var onClose: (() -> Void)?

    private init(onFirstBytes: ((ByteBuffer) -> Void)?, onClose: (() -> Void)?) {
        self.onFirstBytes = onFirstBytes
        self.onClose = onClose
    }

    /// Two partnered ends: the client's and the upstream's.
    static func pair(upstreamFirstBytes: @escaping (ByteBuffer) -> Void, upstreamClosed: @escaping () -> Void)
        -> (client: TunnelGlue, upstream: TunnelGlue)
    {
        let client = TunnelGlue(onFirstBytes: nil, onClose: nil)
        let upstream = TunnelGlue(onFirstBytes: upstreamFirstBytes, onClose: upstreamClosed)
        client.partner = upstream
        upstream.partner = client
        return (client, upstream)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    // MARK: called by the partner

    private func partnerWrite(_ data: NIOAny) { context?.write(data, promise: nil) }

    private func partnerFlush() { context?.flush() }

    private func partnerClosed() { context?.close(promise: nil) }

    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }

    private var isWritable: Bool { context?.channel.isWritable ?? false }

    // MARK: events of this end

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if let f = onFirstBytes {
            onFirstBytes = nil
            f(unwrapInboundIn(data))
        }
        partner?.partnerWrite(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.partnerFlush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let f = onClose {
            onClose = nil
            f()
        }
        partner?.partnerClosed()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // A tunnel has no request boundary to stop at: on shutdown it lives until one side closes or the drain
        // timeout ends the process's connections.
        if event is ChannelShouldQuiesceEvent { return }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if partner?.isWritable ?? true {
            context.read()
        } else {
            pendingRead = true
        }
    }
}

extension ProxyShared {
    /// The TLS context of tunnels to https upstreams: the system trust store plus `--upstream-ca-file`, HTTP/1.1
    /// only. Made on first use (loading the trust store takes a few milliseconds), then shared.
    func tunnelTLSContext() throws -> NIOSSLContext {
        try tunnelTLS.withLockedValue { cached in
            if let cached { return cached }
            var tls = TLSConfiguration.makeClientConfiguration()
            if let ca = config.upstreamCAFile { tls.additionalTrustRoots = [.file(ca)] }
            tls.applicationProtocols = ["http/1.1"]
            let context = try NIOSSLContext(configuration: tls)
            cached = context
            return context
        }
    }
}
