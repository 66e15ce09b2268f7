import NIOCore
import NIOHTTP1
import NIOPosix

/// Receives one upstream exchange's events, on the event loop that started it.
protocol UpstreamResponseHandler: AnyObject {
    func upstreamHead(id: UInt64, _ head: HTTPResponseHead) -> EventLoopFuture<Void>?
    /// Returns a future when the client cannot take more right now (the upstream stops reading until it completes).
    func upstreamBody(id: UInt64, _ buffer: ByteBuffer) -> EventLoopFuture<Void>?
    func upstreamEnd(id: UInt64)
    func upstreamError(id: UInt64, _ error: any Error)
}

/// Why a plain-HTTP upstream exchange failed.
enum UpstreamFailure: Error, CustomStringConvertible {
    case connect(any Error)
    case connectTimeout
    case readTimeout
    case closedBeforeResponse
    case closedMidResponse
    case reset(any Error)
    case protocolError(any Error)

    var description: String {
        switch self {
        case .connect(let e): return "connect failed: \(e)"
        case .connectTimeout: return "connect timed out"
        case .readTimeout: return "no data from the upstream within the read timeout"
        case .closedBeforeResponse: return "the upstream closed the connection before answering"
        case .closedMidResponse: return "the upstream closed the connection mid-response"
        case .reset(let e): return "the upstream connection failed: \(e)"
        case .protocolError(let e): return "invalid HTTP from the upstream: \(e)"
        }
    }
}

/// Keep-alive HTTP/1.1 connections to one plain-HTTP upstream, one pool per event loop: a request is served by a
/// connection on its own event loop, so a proxied exchange never leaves its thread (what nginx and Envoy do).
/// Every method must be called on `eventLoop`.
final class UpstreamPool: @unchecked Sendable {
    let eventLoop: any EventLoop
    private let host: String
    private let port: Int
    /// The Host header for requests to this upstream.
    let hostHeader: String
    private let connectTimeout: TimeAmount
    private let readTimeout: TimeAmount
    private let maxIdle: Int
    private var idle: [UpstreamConnection] = []
    private var closed = false

    init(eventLoop: any EventLoop, upstream: UpstreamURL, connectTimeout: TimeAmount, readTimeout: TimeAmount,
         maxIdle: Int)
    {
        self.eventLoop = eventLoop
        self.host = upstream.host
        self.port = upstream.port
        let defaultPort = upstream.scheme == "https" ? 443 : 80
        let h = upstream.host.contains(":") ? "[\(upstream.host)]" : upstream.host
        self.hostHeader = upstream.port == defaultPort ? h : "\(h):\(upstream.port)"
        self.connectTimeout = connectTimeout
        self.readTimeout = readTimeout
        self.maxIdle = maxIdle
    }

    /// Sends the request (its head carries Host and Content-Length already); the response's events go to
    /// `handler`. Returns a cancel action.
    func execute(head: HTTPRequestHead, body: ByteBuffer?, id: UInt64, handler: any UpstreamResponseHandler)
        -> UpstreamExchange
    {
        let exchange = UpstreamExchange(id: id, head: head, body: body, handler: handler)
        while let connection = idle.popLast() {
            if connection.channel.isActive {
                connection.start(exchange, reused: true)
                return exchange
            }
        }
        connect(exchange)
        return exchange
    }

    func connect(_ exchange: UpstreamExchange) {
        let pool = self
        let readTimeout = self.readTimeout
        ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    // No outbound header validation: the request head is the client's (parsed) plus our own.
                    try sync.addHandlers([
                        HTTPRequestEncoder(),
                        ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)),
                    ])
                    try sync.addHandler(IdleStateHandler(readTimeout: readTimeout))
                    try sync.addHandler(UpstreamConnectionHandler(pool: pool))
                }
            }
            .connect(host: host, port: port)
            .whenComplete { [exchange = NIOLoopBound(exchange, eventLoop: eventLoop)] result in
                // Completes on the pool's event loop, where the exchange lives.
                let exchange = exchange.value
                switch result {
                case .success(let channel):
                    let handler = try! channel.pipeline.syncOperations.handler(type: UpstreamConnectionHandler.self)
                    if exchange.cancelled {
                        pool.release(handler.connection)
                    } else {
                        handler.connection.start(exchange, reused: false)
                    }
                case .failure(let error):
                    if let e = error as? ChannelError, case .connectTimeout = e {
                        exchange.fail(UpstreamFailure.connectTimeout)
                    } else {
                        exchange.fail(UpstreamFailure.connect(error))
                    }
                }
            }
    }

    /// A connection whose exchange finished cleanly goes back to the pool (or closes if the pool is full).
    func release(_ connection: UpstreamConnection) {
        if closed || idle.count >= maxIdle || !connection.channel.isActive {
            connection.channel.close(promise: nil)
            return
        }
        idle.append(connection)
    }

    func remove(_ connection: UpstreamConnection) {
        if let i = idle.firstIndex(where: { $0 === connection }) { idle.remove(at: i) }
    }

    /// Closes the idle connections; completes when they are closed.
    func close() -> EventLoopFuture<Void> {
        closed = true
        let closing = idle.map { $0.channel.close() }
        idle.removeAll()
        return EventLoopFuture.andAllComplete(closing, on: eventLoop)
    }
}

/// One request/response on an upstream connection. Event-loop confined.
final class UpstreamExchange {
    let id: UInt64
    let head: HTTPRequestHead
    let body: ByteBuffer?
    weak var handler: (any UpstreamResponseHandler)?
    var connection: UpstreamConnection?
    var cancelled = false
    var finished = false

    init(id: UInt64, head: HTTPRequestHead, body: ByteBuffer?, handler: any UpstreamResponseHandler) {
        self.id = id
        self.head = head
        self.body = body
        self.handler = handler
    }

    /// The client went away: abandon the exchange and close its connection (the upstream sees the request end).
    func cancel() {
        guard !finished else { return }
        cancelled = true
        finished = true
        connection?.abort()
    }

    func fail(_ error: any Error) {
        guard !finished else { return }
        finished = true
        handler?.upstreamError(id: id, error)
    }
}

/// An upstream keep-alive connection. Event-loop confined.
final class UpstreamConnection {
    let channel: any Channel
    unowned let pool: UpstreamPool
    var exchange: UpstreamExchange?
    private var reused = false
    private var gotResponseBytes = false
    private var keepAlive = true
    /// The last head was informational (1xx): its `end` is not the response's end.
    private var informational = false
    /// Reading paused because the client is slow.
    private var paused = false

    init(channel: any Channel, pool: UpstreamPool) {
        self.channel = channel
        self.pool = pool
    }

    func start(_ exchange: UpstreamExchange, reused: Bool) {
        self.exchange = exchange
        exchange.connection = self
        self.reused = reused
        self.gotResponseBytes = false
        self.keepAlive = true
        channel.write(HTTPClientRequestPart.head(exchange.head), promise: nil)
        if let body = exchange.body, body.readableBytes > 0 {
            channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil)
        }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
    }

    func abort() {
        exchange = nil
        channel.close(promise: nil)
    }

    func onHead(_ head: HTTPResponseHead) {
        guard let x = exchange else { return }
        gotResponseBytes = true
        keepAlive = head.isKeepAlive
        informational = head.status.code < 200
        if informational { return }  // 1xx: wait for the real head
        _ = x.handler?.upstreamHead(id: x.id, head)
    }

    func onBody(_ buffer: ByteBuffer) {
        guard let x = exchange else { return }
        if let future = x.handler?.upstreamBody(id: x.id, buffer), !paused {
            // The client's socket is full: stop reading the upstream until the write completes.
            paused = true
            _ = channel.setOption(.autoRead, value: false)
            // The write's future completes on the client's event loop, which is this connection's too.
            future.whenComplete { [me = NIOLoopBound(self, eventLoop: channel.eventLoop)] _ in
                let me = me.value
                me.paused = false
                _ = me.channel.setOption(.autoRead, value: true)
                me.channel.read()
            }
        }
    }

    func onEnd() {
        if informational {
            informational = false
            return
        }
        guard let x = exchange else { return }
        exchange = nil
        x.finished = true
        x.connection = nil
        if keepAlive && !paused { pool.release(self) } else { channel.close(promise: nil) }
        x.handler?.upstreamEnd(id: x.id)
    }

    func onClosed() {
        pool.remove(self)
        guard let x = exchange else { return }
        exchange = nil
        if !gotResponseBytes && reused && !x.cancelled && x.head.method.isIdempotent {
            // A pooled connection the upstream closed as we reused it: try an idempotent request once on a new
            // connection. POSTs are not retried (the upstream may have acted on them; the SDKs retry a 502).
            x.connection = nil
            pool.connect(x)
            return
        }
        x.fail(gotResponseBytes ? UpstreamFailure.closedMidResponse : UpstreamFailure.closedBeforeResponse)
    }

    func onError(_ error: any Error) {
        guard exchange != nil, !(error is IOError) else {
            // Socket errors (a reset): closing leads to `onClosed`, which retries or fails the exchange.
            channel.close(promise: nil)
            return
        }
        let x = exchange!
        exchange = nil
        x.fail(UpstreamFailure.protocolError(error))
        channel.close(promise: nil)
    }

    func onReadIdle() {
        guard let x = exchange else {
            channel.close(promise: nil)  // idle in the pool for the whole timeout: let it go
            return
        }
        exchange = nil
        x.fail(UpstreamFailure.readTimeout)
        channel.close(promise: nil)
    }
}

final class UpstreamConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    private let pool: UpstreamPool
    private(set) var connection: UpstreamConnection!

    init(pool: UpstreamPool) {
        self.pool = pool
    }

    func handlerAdded(context: ChannelHandlerContext) {
        connection = UpstreamConnection(channel: context.channel, pool: pool)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): connection.onHead(head)
        case .body(let buffer): connection.onBody(buffer)
        case .end: connection.onEnd()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.onClosed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        connection.onError(error)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? IdleStateHandler.IdleStateEvent, e == .read {
            connection.onReadIdle()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

extension HTTPMethod {
    var isIdempotent: Bool {
        switch self {
        case .GET, .HEAD, .OPTIONS, .PUT, .DELETE, .TRACE: return true
        default: return false
        }
    }
}
