import NIOCore
import NIOHTTP1
import NIOPosix

/// Serves Prometheus text on `GET /metrics` (and `/health`) on its own port, on its own event loop thread so a
/// scrape never runs on the proxy's loops.
public final class MetricsServer: Sendable {
    let channel: any Channel
    let group: MultiThreadedEventLoopGroup

    public var localPort: Int? { channel.localAddress?.port }

    /// Binds `host:port`; `render` is called for each scrape (off the proxy's event loops).
    public static func start(host: String, port: Int, render: @escaping @Sendable () -> [UInt8])
        async throws(TelemetryError) -> MetricsServer
    {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 64)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.pipeline.configureHTTPServerPipeline().flatMap {
                        channel.pipeline.addHandler(MetricsHandler(render: render))
                    }
                }
                .bind(host: host, port: port).get()
            return MetricsServer(channel: channel, group: group)
        } catch {
            try? await group.shutdownGracefully()
            throw TelemetryError(code: .bind, message: "cannot listen for /metrics on \(host):\(port)", cause: error)
        }
    }

    init(channel: any Channel, group: MultiThreadedEventLoopGroup) {
        self.channel = channel
        self.group = group
    }

    public func shutdown() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }
}

final class MetricsHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let render: @Sendable () -> [UInt8]

    init(render: @escaping @Sendable () -> [UInt8]) { self.render = render }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let status: HTTPResponseStatus
        let contentType: String
        var body: [UInt8]
        switch (head.method, path) {
        case (.GET, "/metrics"), (.HEAD, "/metrics"):
            status = .ok
            contentType = "text/plain; version=0.0.4; charset=utf-8"
            body = render()
        case (.GET, "/health"), (.HEAD, "/health"):
            status = .ok
            contentType = "application/json"
            body = Array(#"{"status":"ok"}"#.utf8)
        default:
            status = .notFound
            contentType = "text/plain"
            body = Array("not found\n".utf8)
        }
        if head.method == .HEAD { body = [] }
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: contentType)
        headers.add(name: "content-length", value: String(body.count))
        if !head.isKeepAlive { headers.add(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
                      promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        if head.isKeepAlive {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
