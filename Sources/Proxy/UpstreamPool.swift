import NIOCore
import NIOHTTP1
import NIOPosix

/// An upstream response head: parsed to bytes by the own pool, or by AsyncHTTPClient (HTTPS upstreams).
enum UpstreamHead {
    case raw(RawResponseHead)
    case parsed(HTTPResponseHead)

    var status: Int {
        switch self {
        case .raw(let h): return h.status
        case .parsed(let h): return Int(h.status.code)
        }
    }

    var reason: String {
        switch self {
        case .raw(let h): return h.reason
        case .parsed(let h): return h.status.reasonPhrase
        }
    }

    func first(_ lower: StaticString) -> String? {
        switch self {
        case .raw(let h): return h.first(lower)
        case .parsed(let h): return h.headers.first(name: lower.description)
        }
    }

    var isEventStream: Bool {
        switch self {
        case .raw(let h): return h.firstValue("content-type", hasPrefix: "text/event-stream")
        case .parsed(let h): return h.headers.first(name: "content-type")?.hasPrefix("text/event-stream") ?? false
        }
    }

    /// The client-facing head: the upstream's status and its end-to-end headers.
    func clientHead(dropContentLength: Bool) -> OutgoingHead {
        switch self {
        case .raw(let h):
            var out = OutgoingHead(status: h.status, reason: h.reason, capacity: h.bytes.readableBytes + 192)
            out.addForwarded(h, dropContentLength: dropContentLength)
            return out
        case .parsed(let h):
            var out = OutgoingHead(status: Int(h.status.code), reason: h.status.reasonPhrase)
            out.addForwarded(h.headers, dropContentLength: dropContentLength)
            return out
        }
    }
}

/// Receives one upstream exchange's events, on the event loop that started it.
protocol UpstreamResponseHandler: AnyObject {
    func upstreamHead(id: UInt64, _ head: UpstreamHead) -> EventLoopFuture<Void>?
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
        self.hostHeader = Self.hostHeader(for: upstream)
        self.connectTimeout = connectTimeout
        self.readTimeout = readTimeout
        self.maxIdle = maxIdle
    }

    /// The Host header for `upstream` (its port only when not the scheme's default).
    static func hostHeader(for upstream: UpstreamURL) -> String {
        let defaultPort = upstream.scheme == "https" ? 443 : 80
        let h = upstream.host.contains(":") ? "[\(upstream.host)]" : upstream.host
        return upstream.port == defaultPort ? h : "\(h):\(upstream.port)"
    }

    /// Sends the request (`head` is the serialized request head, with Host and Content-Length); the response's
    /// events go to `handler`. Returns a cancel action.
    func execute(method: HTTPMethod, head: ByteBuffer, body: ByteBuffer?, id: UInt64,
                 handler: any UpstreamResponseHandler) -> UpstreamExchange
    {
        let exchange = UpstreamExchange(id: id, method: method, head: head, body: body, handler: handler)
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
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // One handler: the request head goes out as bytes, the response is parsed as bytes.
                    try channel.pipeline.syncOperations.addHandler(
                        UpstreamConnection(channel: channel, pool: pool, readTimeout: readTimeout))
                }
            }
            .connect(host: host, port: port)
            .whenComplete { [exchange = NIOLoopBound(exchange, eventLoop: eventLoop)] result in
                // Completes on the pool's event loop, where the exchange lives.
                let exchange = exchange.value
                switch result {
                case .success(let channel):
                    let connection = try! channel.pipeline.syncOperations.handler(type: UpstreamConnection.self)
                    if exchange.cancelled {
                        pool.release(connection)
                    } else {
                        connection.start(exchange, reused: false)
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
    let method: HTTPMethod
    let head: ByteBuffer
    let body: ByteBuffer?
    weak var handler: (any UpstreamResponseHandler)?
    var connection: UpstreamConnection?
    var cancelled = false
    var finished = false

    init(id: UInt64, method: HTTPMethod, head: ByteBuffer, body: ByteBuffer?, handler: any UpstreamResponseHandler) {
        self.id = id
        self.method = method
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

/// An upstream keep-alive connection and its channel handler: writes request heads as bytes, parses responses
/// with `ResponseParser`, and times out reads itself (one timer per connection, re-armed only when it fires, so a
/// request costs a clock read instead of a scheduled task). Event-loop confined.
final class UpstreamConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let channel: any Channel
    unowned let pool: UpstreamPool
    var exchange: UpstreamExchange?
    private let readTimeout: TimeAmount
    private var parser = ResponseParser()
    /// Unparsed bytes (a head or chunk line split across reads).
    private var pending: ByteBuffer?
    private var reused = false
    private var gotResponseBytes = false
    /// Reading paused because the client is slow.
    private var paused = false
    private var lastActivity = NIODeadline.now()
    private var timer: Scheduled<Void>?
    private var closed = false

    init(channel: any Channel, pool: UpstreamPool, readTimeout: TimeAmount) {
        self.channel = channel
        self.pool = pool
        self.readTimeout = readTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        armTimer(at: NIODeadline.now() + readTimeout)
    }

    /// Also when a connect failed (the channel never became active, so `channelInactive` does not come): the
    /// timer must not keep the handler and its channel alive for the rest of the timeout.
    func handlerRemoved(context: ChannelHandlerContext) {
        stopTimer()
    }

    private func stopTimer() {
        closed = true
        timer?.cancel()
        timer = nil
    }

    func start(_ exchange: UpstreamExchange, reused: Bool) {
        self.exchange = exchange
        exchange.connection = self
        self.reused = reused
        gotResponseBytes = false
        parser.reset()
        pending = nil
        lastActivity = NIODeadline.now()
        if let body = exchange.body, body.readableBytes > 0 {
            channel.write(exchange.head, promise: nil)
            channel.writeAndFlush(body, promise: nil)
        } else {
            channel.writeAndFlush(exchange.head, promise: nil)
        }
    }

    func abort() {
        exchange = nil
        channel.close(promise: nil)
    }

    // MARK: channel events

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        lastActivity = NIODeadline.now()
        guard exchange != nil else {
            // Bytes while idle in the pool (or after the exchange was abandoned): the connection is not reusable.
            channel.close(promise: nil)
            return
        }
        gotResponseBytes = true
        if var p = pending {
            pending = nil
            p.writeBuffer(&buffer)
            buffer = p
        }
        // Body bytes of one read go to the client as one write.
        var body: ByteBuffer?
        do {
            while let x = exchange, let event = try parser.next(&buffer, noBody: x.method == .HEAD) {
                switch event {
                case .head(let head):
                    _ = x.handler?.upstreamHead(id: x.id, .raw(head))
                case .body(var b):
                    if body == nil { body = b } else { body!.writeBuffer(&b) }
                case .end:
                    if let b = body {
                        body = nil
                        deliver(b)
                    }
                    // Bytes after the response on a keep-alive connection: do not reuse it.
                    finish(reusable: !parser.mustClose && buffer.readableBytes == 0)
                    return
                }
            }
        } catch {
            fail(UpstreamFailure.protocolError(error))
            return
        }
        if let b = body { deliver(b) }
        if buffer.readableBytes > 0 { pending = buffer }
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopTimer()
        pool.remove(self)
        // The parser is reset for each exchange, so a close-delimited state means this exchange's head arrived.
        if exchange != nil && parser.isCloseDelimited {
            finish(reusable: false)  // the close ends a body framed by it
        } else {
            onClosed()
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard exchange != nil, !(error is IOError) else {
            // Socket errors (a reset): closing leads to `channelInactive`, which retries or fails the exchange.
            channel.close(promise: nil)
            return
        }
        fail(UpstreamFailure.protocolError(error))
    }

    // MARK: exchange

    private func deliver(_ buffer: ByteBuffer) {
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

    private func finish(reusable: Bool) {
        guard let x = exchange else { return }
        exchange = nil
        x.finished = true
        x.connection = nil
        if reusable && !paused && !closed { pool.release(self) } else { channel.close(promise: nil) }
        x.handler?.upstreamEnd(id: x.id)
    }

    private func fail(_ error: UpstreamFailure) {
        guard let x = exchange else { return }
        exchange = nil
        x.fail(error)
        channel.close(promise: nil)
    }

    private func onClosed() {
        guard let x = exchange else { return }
        exchange = nil
        if !gotResponseBytes && reused && !x.cancelled && x.method.isIdempotent {
            // A pooled connection the upstream closed as we reused it: try an idempotent request once on a new
            // connection. POSTs are not retried (the upstream may have acted on them; the SDKs retry a 502).
            x.connection = nil
            pool.connect(x)
            return
        }
        x.fail(gotResponseBytes ? UpstreamFailure.closedMidResponse : UpstreamFailure.closedBeforeResponse)
    }

    // MARK: read timeout

    private func armTimer(at deadline: NIODeadline) {
        timer = channel.eventLoop.scheduleTask(deadline: deadline) { [me = NIOLoopBound(self, eventLoop: channel.eventLoop)] in
            me.value.timerFired()
        }
    }

    private func timerFired() {
        timer = nil
        guard !closed else { return }
        let due = lastActivity + readTimeout
        if NIODeadline.now() < due {
            armTimer(at: due)
            return
        }
        // No byte within the timeout: waiting for a response, or idle in the pool for that long.
        if exchange != nil {
            fail(UpstreamFailure.readTimeout)
        } else {
            channel.close(promise: nil)
        }
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
