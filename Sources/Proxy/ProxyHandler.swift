import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import Wire

/// The API endpoints whose JSON bodies the sidecar reads. Other `/v1/*` paths are forwarded without reading.
public enum Endpoint: String, Sendable {
    case chatCompletions = "chat.completions"
    case completions
    case embeddings
    case responses
    case other

    /// Classifies the path after the `/v1` prefix (query excluded).
    static func classify(method: HTTPMethod, path: Substring) -> Endpoint {
        guard method == .POST else { return .other }
        switch path {
        case "/chat/completions": return .chatCompletions
        case "/completions": return .completions
        case "/embeddings": return .embeddings
        case "/responses": return .responses
        default: return .other
        }
    }

    var readsBody: Bool { self != .other }
}

/// Handles one HTTP/1.1 connection's requests (one at a time, NIO's pipeline handler orders them) or one HTTP/2
/// stream. All of its state lives on the channel's event loop, and so do the upstream client callbacks: no locks,
/// no thread hops on the hot path.
final class ProxyHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case idle
        /// Reading the request body.
        case receiving(head: HTTPRequestHead, endpoint: Endpoint, upstreamPath: Substring, body: ByteBuffer?,
                       start: NIODeadline)
        /// An error response was sent before the request ended; the rest of the body is dropped.
        case discarding
        /// Waiting for the upstream, or streaming its response.
        case forwarding(Forwarding)
    }

    /// One request in flight upstream.
    final class Forwarding {
        let id: UInt64
        let keepAlive: Bool
        let version: HTTPVersion
        var task: HTTPClient.Task<Void>?
        var headSent = false
        var bodyComplete: NIODeadline
        var dispatched: NIODeadline
        init(id: UInt64, keepAlive: Bool, version: HTTPVersion, bodyComplete: NIODeadline) {
            self.id = id
            self.keepAlive = keepAlive
            self.version = version
            self.bodyComplete = bodyComplete
            self.dispatched = bodyComplete
        }
    }

    private let shared: ProxyShared
    private var state: State = .idle
    private var nextID: UInt64 = 0
    private var context: ChannelHandlerContext?

    init(shared: ProxyShared) {
        self.shared = shared
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelInFlight()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The client went away: stop the upstream request too.
        cancelInFlight()
        context.fireChannelInactive()
    }

    private func cancelInFlight() {
        if case .forwarding(let f) = state {
            f.task?.cancel()
            state = .idle
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is HTTPParserError {
            // Malformed HTTP: answer once, then close. Nothing of it was forwarded.
            if case .forwarding = state {
                cancelInFlight()
                context.close(promise: nil)
                return
            }
            state = .discarding
            let e = OpenAIError.badRequest("Malformed HTTP request: \(error)", code: "bad_http_request")
            writeError(context: context, e, version: .http1_1, keepAlive: false)
            return
        }
        cancelInFlight()
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            onHead(context: context, head)
        case .body(let part):
            onBody(context: context, part)
        case .end:
            onEnd(context: context)
        }
    }

    // MARK: request

    private func onHead(context: ChannelHandlerContext, _ head: HTTPRequestHead) {
        let start = NIODeadline.now()
        let uri = head.uri
        let pathEnd = uri.firstIndex(of: "?") ?? uri.endIndex
        let path = uri[..<pathEnd]

        if path == "/v1" || path.hasPrefix("/v1/") {
            let upstreamPath = uri.dropFirst(3)  // keeps the query
            let endpoint = Endpoint.classify(method: head.method, path: path.dropFirst(3))
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > shared.config.maxBodyBytes {
                reject(context: context, .bodyTooLarge(limit: shared.config.maxBodyBytes), head: head)
                return
            }
            if head.headers.first(name: "expect")?.lowercased() == "100-continue" {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))),
                                      promise: nil)
            }
            state = .receiving(head: head, endpoint: endpoint, upstreamPath: upstreamPath, body: nil, start: start)
            return
        }
        state = .discarding
        switch (head.method, path) {
        case (.GET, "/health"), (.HEAD, "/health"):
            writeJSON(context: context, status: .ok, body: #"{"status":"ok"}"#, head: head)
        case (.GET, "/ready"), (.HEAD, "/ready"):
            if shared.isDraining {
                writeJSON(context: context, status: .serviceUnavailable, body: #"{"status":"draining"}"#, head: head)
            } else {
                writeJSON(context: context, status: .ok, body: #"{"status":"ready"}"#, head: head)
            }
        default:
            writeError(context: context, .notFound(method: head.method.rawValue, path: String(path)),
                       version: head.version, keepAlive: head.isKeepAlive)
        }
    }

    private func onBody(context: ChannelHandlerContext, _ part: ByteBuffer) {
        guard case .receiving(let head, let endpoint, let upstreamPath, var body, let start) = state else { return }
        state = .idle  // drop the reference so `body` is uniquely owned while appending
        if body == nil {
            body = part
        } else {
            var part = part
            body!.writeBuffer(&part)
        }
        if body!.readableBytes > shared.config.maxBodyBytes {
            reject(context: context, .bodyTooLarge(limit: shared.config.maxBodyBytes), head: head)
            return
        }
        state = .receiving(head: head, endpoint: endpoint, upstreamPath: upstreamPath, body: body, start: start)
    }

    private func onEnd(context: ChannelHandlerContext) {
        switch state {
        case .discarding:
            state = .idle
            return
        case .receiving(let head, let endpoint, let upstreamPath, let body, _):
            let bodyComplete = NIODeadline.now()
            var outgoing = body
            if endpoint.readsBody {
                do {
                    let view = try RequestView.parse(body ?? ByteBuffer())
                    outgoing = view.body
                } catch {
                    state = .idle
                    writeError(context: context, .invalidJSON(error), version: head.version, keepAlive: head.isKeepAlive)
                    return
                }
            }
            forward(context: context, head: head, upstreamPath: upstreamPath, body: outgoing, bodyComplete: bodyComplete)
        case .idle, .forwarding:
            return
        }
    }

    private func reject(context: ChannelHandlerContext, _ error: OpenAIError, head: HTTPRequestHead) {
        state = .discarding
        // The rest of the body is not read: close after answering.
        writeError(context: context, error, version: head.version, keepAlive: false)
    }

    // MARK: upstream

    private func forward(context: ChannelHandlerContext, head: HTTPRequestHead, upstreamPath: Substring,
                         body: ByteBuffer?, bodyComplete: NIODeadline)
    {
        nextID &+= 1
        let f = Forwarding(id: nextID, keepAlive: head.isKeepAlive, version: head.version, bodyComplete: bodyComplete)
        state = .forwarding(f)
        let request: HTTPClient.Request
        do {
            request = try HTTPClient.Request(
                url: shared.config.upstream.base + upstreamPath,
                method: head.method,
                headers: ForwardingHeaders.upstreamRequestHeaders(head.headers),
                body: body.map { .byteBuffer($0) })
        } catch {
            state = .idle
            writeError(context: context, .badRequest("The request URL cannot be forwarded: \(error)"),
                       version: head.version, keepAlive: head.isKeepAlive)
            return
        }
        let delegate = UpstreamDelegate(handler: NIOLoopBound(self, eventLoop: context.eventLoop), id: f.id)
        f.dispatched = NIODeadline.now()
        f.task = shared.client.execute(request: request, delegate: delegate,
                                       eventLoop: .delegateAndChannel(on: context.eventLoop), logger: nil)
    }

    private func current(_ id: UInt64) -> (Forwarding, ChannelHandlerContext)? {
        guard case .forwarding(let f) = state, f.id == id, let context else { return nil }
        return (f, context)
    }

    func upstreamHead(id: UInt64, _ upstream: HTTPResponseHead) -> EventLoopFuture<Void>? {
        guard let (f, context) = current(id) else { return nil }
        let arrived = NIODeadline.now()
        var headers = ForwardingHeaders.clientResponseHeaders(upstream.headers)
        // Time inside the sidecar, upstream excluded: reading the request (after its last byte) until it was handed
        // to the upstream client, plus preparing the response head.
        let inside = (f.dispatched - f.bodyComplete) + (NIODeadline.now() - arrived)
        headers.add(name: "x-auto-optimizer-overhead-ms", value: formatMillis(inside))
        if !f.keepAlive { headers.replaceOrAdd(name: "connection", value: "close") }
        f.headSent = true
        let isStream = upstream.headers.first(name: "content-type")?.hasPrefix("text/event-stream") ?? false
        let part = wrapOutboundOut(.head(HTTPResponseHead(version: f.version, status: upstream.status, headers: headers)))
        if isStream {
            context.writeAndFlush(part, promise: nil)
        } else {
            context.write(part, promise: nil)
        }
        return nil
    }

    func upstreamBody(id: UInt64, _ buffer: ByteBuffer) -> EventLoopFuture<Void>? {
        guard let (_, context) = current(id) else { return nil }
        // Each upstream read goes out at once (SSE chunks are never batched); the write future is the backpressure.
        return context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))))
    }

    func upstreamEnd(id: UInt64) {
        guard let (f, context) = current(id) else { return }
        state = .idle
        if f.keepAlive {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
        }
    }

    func upstreamError(id: UInt64, _ error: any Error) {
        guard let (f, context) = current(id) else { return }
        state = .idle
        if f.headSent {
            // Bytes already reached the client: the only honest signal left is to cut the response short.
            shared.logger.warning("upstream failed mid-response", metadata: ["error": "\(error)"])
            context.close(promise: nil)
            return
        }
        let e = UpstreamErrors.map(error)
        shared.logger.info("upstream request failed", metadata: ["status": "\(e.status)", "error": "\(error)"])
        writeError(context: context, e, version: f.version, keepAlive: f.keepAlive)
    }

    // MARK: local responses

    private func writeJSON(context: ChannelHandlerContext, status: HTTPResponseStatus, body: String,
                           head: HTTPRequestHead)
    {
        var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
        buffer.writeString(body)
        writeResponse(context: context, status: status, body: buffer, version: head.version,
                      keepAlive: head.isKeepAlive, omitBody: head.method == .HEAD)
    }

    private func writeError(context: ChannelHandlerContext, _ error: OpenAIError, version: HTTPVersion,
                            keepAlive: Bool)
    {
        writeResponse(context: context, status: HTTPResponseStatus(statusCode: error.status),
                      body: error.body(allocator: context.channel.allocator), version: version, keepAlive: keepAlive,
                      omitBody: false)
    }

    private func writeResponse(context: ChannelHandlerContext, status: HTTPResponseStatus, body: ByteBuffer,
                               version: HTTPVersion, keepAlive: Bool, omitBody: Bool)
    {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/json")
        headers.add(name: "content-length", value: String(body.readableBytes))
        headers.add(name: "x-auto-optimizer-overhead-ms", value: "0.000")
        if !keepAlive { headers.add(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))),
                      promise: nil)
        if !omitBody { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive { done.whenComplete { _ in context.close(promise: nil) } }
    }
}

func formatMillis(_ t: TimeAmount) -> String {
    let us = max(0, t.nanoseconds / 1000)
    let ms = us / 1000
    let frac = us % 1000
    let fracString = String(frac)
    return "\(ms)." + String(repeating: "0", count: 3 - fracString.count) + fracString
}

/// The upstream client's callbacks, forwarded to the handler on its event loop.
final class UpstreamDelegate: HTTPClientResponseDelegate {
    typealias Response = Void
    let handler: NIOLoopBound<ProxyHandler>
    let id: UInt64

    init(handler: NIOLoopBound<ProxyHandler>, id: UInt64) {
        self.handler = handler
        self.id = id
    }

    func didReceiveHead(task: HTTPClient.Task<Void>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        handler.value.upstreamHead(id: id, head) ?? task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<Void>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        handler.value.upstreamBody(id: id, buffer) ?? task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveError(task: HTTPClient.Task<Void>, _ error: any Error) {
        handler.value.upstreamError(id: id, error)
    }

    func didFinishRequest(task: HTTPClient.Task<Void>) throws {
        handler.value.upstreamEnd(id: id)
    }
}

/// Maps upstream client failures to the sidecar's OpenAI-shaped answers: timeouts are 504, everything else that
/// kept the upstream from answering is 502.
enum UpstreamErrors {
    static func map(_ error: any Error) -> OpenAIError {
        if let e = error as? HTTPClientError {
            if e == .readTimeout || e == .deadlineExceeded || e == .connectTimeout {
                return .gatewayTimeout(String(describing: e))
            }
            return .badGateway(String(describing: e))
        }
        if let e = error as? ChannelError, case .connectTimeout = e {
            return .gatewayTimeout(String(describing: e))
        }
        return .badGateway(String(describing: error))
    }
}
