import AsyncHTTPClient
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import NIOCore
import NIOSSL
import NIOHTTP1
import Optimizer
import Policy
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
        // Byte-wise: a `switch` over string literals compares `String`s (~100 instructions each).
        var path = path
        return path.withUTF8 { p in
            if bytes(p, equal: "/chat/completions") { return .chatCompletions }
            if bytes(p, equal: "/completions") { return .completions }
            if bytes(p, equal: "/embeddings") { return .embeddings }
            if bytes(p, equal: "/responses") { return .responses }
            return .other
        }
    }

    var readsBody: Bool { self != .other }
}

/// `p` starts with the ASCII `prefix`, compared byte for byte (URI routing).
@inline(__always)
private func bytes(_ p: UnsafeBufferPointer<UInt8>, startWith prefix: StaticString) -> Bool {
    let n = prefix.utf8CodeUnitCount
    return p.count >= n && (n == 0 || memcmp(p.baseAddress!, prefix.utf8Start, n) == 0)
}

/// `p` is exactly the ASCII `s`.
@inline(__always)
private func bytes(_ p: UnsafeBufferPointer<UInt8>, equal s: StaticString) -> Bool {
    p.count == s.utf8CodeUnitCount && bytes(p, startWith: s)
}

/// Handles one HTTP/1.1 connection's requests (one at a time, NIO's pipeline handler orders them) or one HTTP/2
/// stream. All of its state lives on the channel's event loop, and so do the upstream client callbacks: no locks,
/// no thread hops on the hot path.
final class ProxyHandler: ChannelInboundHandler, RemovableChannelHandler, UpstreamResponseHandler {
    typealias InboundIn = ProxyRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// A request being read: its head and the body so far. A class, so that the state enum's payloads are single
    /// references: matching or replacing the state then retains or releases one object instead of copying the
    /// head's fields (~10 such copies a request cost ~6k instructions).
    private final class Receiving {
        let head: RequestHead
        let endpoint: Endpoint
        let upstreamPath: Substring
        /// The announced Content-Length (0 when absent or invalid), read once with the head.
        let expectedLength: Int
        var body: ByteBuffer?
        let start: NIODeadline

        init(head: RequestHead, endpoint: Endpoint, upstreamPath: Substring, expectedLength: Int, start: NIODeadline) {
            self.head = head
            self.endpoint = endpoint
            self.upstreamPath = upstreamPath
            self.expectedLength = expectedLength
            self.start = start
        }
    }

    private enum State {
        case idle
        /// Reading the request body.
        case receiving(Receiving)
        /// An error response was sent before the request ended; the rest of the body is dropped.
        case discarding
        /// Waiting for the upstream, or streaming its response.
        case forwarding(Exchange)
    }

    private let shared: ProxyShared
    private var state: State = .idle
    private var nextID: UInt64 = 0
    private var context: ChannelHandlerContext?
    /// Span/trace ids for W3C trace context (seeded once per connection; no lock, no system call per request).
    private var traceIDs: TraceIDGenerator?
    /// HTTP/1.1 pipelining: parts of requests that arrived while one is in flight, handled in order once its
    /// response is complete. When they pile up (past the body limit in bytes, heads included, or past
    /// `maxQueuedParts`), reading stops until they are drained: a client cannot make the sidecar hold an unbounded
    /// number of pipelined requests.
    private var queued = CircularBuffer<ProxyRequestPart>()
    private var queuedBytes = 0
    /// About 85 pipelined requests (head, body, end) waiting behind the one in flight.
    static let maxQueuedParts = 256
    private var readingPaused = false
    /// The server is shutting down: close this connection after the current response.
    private var quiescing = false
    /// A response that ends the connection was written: whatever the client sent after is not processed.
    private var closing = false
    /// An HTTP/1.x connection: responses are serialized here as bytes. Otherwise an HTTP/2 stream, written as
    /// `HTTPServerResponsePart`s.
    private let http1: Bool
    /// How the body of the response being written goes to an HTTP/1.x client.
    private var framing = OutgoingHead.Framing.identity
    /// An HTTP/1.x response head not to be flushed on its own: it goes out with the first body bytes (one buffer,
    /// one pipeline write, one iovec for a small response) or with the end.
    private var unsentHead: ByteBuffer?
    /// Bytes written to the client and not flushed yet.
    private var unflushed = false
    /// Body bytes up to this size are copied behind their head (the response head to the client, the request head
    /// to a plain-HTTP upstream); bigger ones go as their own buffer.
    static let coalescedBodyLimit = 16 * 1024
    private static let chunkEnd: ByteBuffer = ByteBuffer(staticString: "0\r\n\r\n")
    private static let crlf: ByteBuffer = ByteBuffer(staticString: "\r\n")
    private static let continueHead: ByteBuffer = ByteBuffer(staticString: "HTTP/1.1 100 Continue\r\n\r\n")

    init(shared: ProxyShared, http1: Bool) {
        self.shared = shared
        self.http1 = http1
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
        if case .forwarding(let x) = state {
            state = .idle
            x.task?.cancel()
            x.upstream?.cancel()
            finish(x, status: x.headSent ? Int(x.record.status) : 499, error: "client_disconnected")
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is HTTPParserError || error is HTTPWireError {
            // Malformed HTTP: answer once, then close. Nothing of it was forwarded.
            if case .forwarding = state {
                cancelInFlight()
                context.close(promise: nil)
                return
            }
            if case .discarding = state {
                // This request was already answered (and its answer says whether the connection stays): one
                // answer per request, so just close.
                closing = true
                context.close(promise: nil)
                return
            }
            state = .discarding
            let status = (error as? HTTPWireError)?.status ?? 400
            let e = OpenAIError(status: status, message: "Malformed HTTP request: \(error)", type: "invalid_request_error",
                                code: "bad_http_request")
            writeError(context: context, e, version: .http1_1, keepAlive: false)
            return
        }
        cancelInFlight()
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        receive(context: context, unwrapInboundIn(data))
    }

    /// A request part from the HTTP/1 decoder in front of this handler, which calls it directly.
    func receive(_ part: ProxyRequestPart) {
        guard let context else { return }
        receive(context: context, part)
    }

    private func receive(context: ChannelHandlerContext, _ part: ProxyRequestPart) {
        guard !closing else { return }
        if isForwarding || !queued.isEmpty {
            enqueue(context: context, part)
        } else {
            handle(context: context, part)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            switch state {
            case .idle where queued.isEmpty:
                context.close(promise: nil)
            default:
                quiescing = true  // `connection: close` on the current response, then close
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func enqueue(context: ChannelHandlerContext, _ part: ProxyRequestPart) {
        let part = part.compacted()
        queuedBytes += part.heldBytes
        queued.append(part)
        if !readingPaused && (queuedBytes > shared.config.maxBodyBytes || queued.count > Self.maxQueuedParts) {
            readingPaused = true
            context.channel.setOption(.autoRead, value: false).whenFailure { _ in }
        }
    }

    private var isForwarding: Bool {
        if case .forwarding = state { return true }
        return false
    }

    /// After `x`'s response completed on a connection that stays open: handles the requests the client
    /// pipelined meanwhile, until one is in flight.
    private func resumeQueued(context: ChannelHandlerContext, after x: Exchange) {
        if keepsConnection(x) { resumeQueued(context: context) }
    }

    /// Whether the connection stays open after `x`'s response (the client's keep-alive, unless shutting down or
    /// the body is delimited by the close).
    private func keepsConnection(_ x: Exchange) -> Bool { x.keepAlive && !quiescing && !x.closeAfter }

    private func resumeQueued(context: ChannelHandlerContext) {
        if closing { queued.removeAll() }
        while !queued.isEmpty {
            if isForwarding { return }
            let part = queued.removeFirst()
            queuedBytes -= part.heldBytes
            handle(context: context, part)
        }
        if readingPaused {
            readingPaused = false
            context.channel.setOption(.autoRead, value: true).whenFailure { _ in }
            context.read()
        }
    }

    private func handle(context: ChannelHandlerContext, _ part: ProxyRequestPart) {
        switch part {
        case .head(let head):
            onHead(context: context, head)
        case .body(let part):
            onBody(context: context, part)
        case .end:
            onEnd(context: context)
        }
    }

    // MARK: request

    private func onHead(context: ChannelHandlerContext, _ head: RequestHead) {
        let start = NIODeadline.now()
        var uri = head.uri
        // Byte-wise on the URI's UTF-8: Character-wise `firstIndex(of:)`, `hasPrefix` and `dropFirst` segment
        // graphemes (~13k instructions a request), and even the UTF-8 view's generic algorithms cost ~2k.
        let (pathLength, isV1, isOptimizerAPI) = uri.withUTF8 { b -> (Int, Bool, Bool) in
            let n = b.firstIndex(of: UInt8(ascii: "?")) ?? b.count
            let path = UnsafeBufferPointer(rebasing: b[..<n])
            let v1 = bytes(path, startWith: "/v1") && (n == 3 || path[3] == UInt8(ascii: "/"))
            return (n, v1, v1 && bytes(path, startWith: "/v1/optimizer/"))
        }
        let pathEnd = uri.utf8.index(uri.startIndex, offsetBy: pathLength)
        let path = uri[..<pathEnd]

        if isV1 {
            if isOptimizerAPI {
                state = .discarding
                return localAPI(context: context, head: head, path: path)
            }
            let afterPrefix = uri.utf8.index(uri.startIndex, offsetBy: 3)
            let upstreamPath = uri[afterPrefix...]  // keeps the query
            let endpoint = Endpoint.classify(method: head.method, path: uri[afterPrefix..<pathEnd])
            let length = head.first("content-length").flatMap(Int.init)
            if let length, length > shared.config.maxBodyBytes {
                reject(context: context, .bodyTooLarge(limit: shared.config.maxBodyBytes), head: head)
                return
            }
            if head.version.minor >= 1 && head.first("expect")?.lowercased() == "100-continue" {
                if http1 {
                    context.writeAndFlush(NIOAny(Self.continueHead), promise: nil)
                } else {
                    context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version,
                                                                                 status: .continue))), promise: nil)
                }
            }
            state = .receiving(Receiving(head: head, endpoint: endpoint, upstreamPath: upstreamPath,
                                         expectedLength: length ?? 0, start: start))
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

    private func localAPI(context: ChannelHandlerContext, head: RequestHead, path: Substring) {
        switch (head.method, path) {
        case (.GET, "/v1/optimizer/savings"):
            writeJSON(context: context, status: .ok,
                      body: shared.accountant.ledger.json(droppedRecords: shared.accountant.droppedRecords), head: head)
        case (.GET, "/v1/optimizer/requests"):
            let query = head.uri.split(separator: "?", maxSplits: 1).dropFirst().first ?? ""
            var limit = 50
            for pair in query.split(separator: "&") where pair.hasPrefix("limit=") {
                guard let n = Int(pair.dropFirst(6)), n >= 0 else {
                    return writeError(context: context, .badRequest("limit must be a whole number >= 0", param: "limit"),
                                      version: head.version, keepAlive: head.isKeepAlive)
                }
                limit = n
            }
            writeJSON(context: context, status: .ok, body: shared.accountant.recent.json(limit: limit), head: head)
        default:
            writeError(context: context, .notFound(method: head.method.rawValue, path: String(path)),
                       version: head.version, keepAlive: head.isKeepAlive)
        }
    }

    private func onBody(context: ChannelHandlerContext, _ part: ByteBuffer) {
        guard case .receiving(let r) = state else { return }
        if r.body == nil {
            let expected = r.expectedLength
            if expected > part.readableBytes && expected <= shared.config.maxBodyBytes {
                // More parts follow: one buffer of the announced size, so the parts are copied once, not
                // re-copied each time the buffer doubles.
                var whole = context.channel.allocator.buffer(capacity: expected)
                var part = part
                whole.writeBuffer(&part)
                r.body = whole
            } else {
                r.body = part  // the whole body in one read: no copy at all
            }
        } else {
            var part = part
            r.body!.writeBuffer(&part)  // appended in place: the buffer is referenced only here
        }
        if r.body!.readableBytes > shared.config.maxBodyBytes {
            reject(context: context, .bodyTooLarge(limit: shared.config.maxBodyBytes), head: r.head)
        }
    }

    private func onEnd(context: ChannelHandlerContext) {
        // Moved out of `state` (not copied); every path below sets the next state.
        var taken = State.idle
        swap(&taken, &state)
        switch consume taken {
        case .discarding:
            state = .idle
        case .receiving(let r):
            let (head, endpoint, upstreamPath, start) = (r.head, r.endpoint, r.upstreamPath, r.start)
            var body: ByteBuffer? = nil
            swap(&body, &r.body)  // moved out: the exchange becomes the body's only holder
            nextID &+= 1
            let x = Exchange(id: nextID, head: head, endpoint: endpoint, start: start,
                             application: head.first("x-app-id") ?? shared.config.applicationID,
                             requestID: shared.requestIDs.next())
            let runtime = shared.runtime.load(ordering: .acquiring)
            x.runtime = runtime
            if shared.config.traceContext {
                if traceIDs == nil { traceIDs = TraceIDGenerator() }
                x.record.trace = TraceContext.start(traceparent: head.first("traceparent"),
                                                    tracestate: head.first("tracestate"),
                                                    ids: &traceIDs!)
            }
            var outgoing = body
            if endpoint.readsBody {
                let view: RequestView
                do {
                    view = try RequestView.parse(body ?? ByteBuffer())
                } catch {
                    state = .idle
                    writeError(context: context, .invalidJSON(error), version: head.version, keepAlive: head.isKeepAlive)
                    x.record.status = 400
                    finish(x, status: 400, error: "invalid_json")
                    return
                }
                let plan = shared.planner.plan(endpoint: endpoint.rawValue, view: view, app: x.record.application,
                                               policy: runtime.policy, budgets: shared.budgets)
                x.record.requestedModel = view.model
                x.record.servedModel = plan.servedModel
                x.record.stream = view.stream
                x.record.tokensSaved = plan.tokensSaved
                x.record.compression = plan.compression
                x.record.rule = plan.rule
                if let rejection = plan.rejection {
                    state = .idle
                    let e = OpenAIError(status: rejection.status, message: rejection.message, type: rejection.type,
                                        code: rejection.code)
                    writeError(context: context, e, version: head.version, keepAlive: head.isKeepAlive,
                               extraHeaders: [("retry-after", String(rejection.retryAfterSeconds)),
                                              ("x-auto-optimizer-rule", plan.decision?.ruleHeaderValue ?? "default")])
                    x.view = consume view
                    x.plan = consume plan
                    finish(x, status: rejection.status, error: rejection.code)
                    return
                }
                if !plan.patch.isEmpty {
                    outgoing = plan.patch.apply(to: view.body, allocator: context.channel.allocator)
                    x.sentBody = outgoing
                }
                // Moved, not copied, into the exchange (a copy retains and releases each of their references).
                x.view = consume view
                x.plan = consume plan
            } else {
                x.plan = shared.planner.planUnread(path: String(upstreamPath), app: x.record.application,
                                                   policy: runtime.policy)
                x.record.rule = x.plan?.rule
            }
            x.upstreamPath = upstreamPath
            x.outgoing = outgoing
            state = .forwarding(x)
            if http1, let upgrade = head.upgrade {
                startTunnel(context: context, x, upgrade: upgrade)
                return
            }
            forward(context: context, x)
        case .forwarding(let x):
            state = .forwarding(x)
        case .idle:
            return
        }
    }

    private func reject(context: ChannelHandlerContext, _ error: OpenAIError, head: RequestHead) {
        state = .discarding
        // The rest of the body is not read: close after answering.
        writeError(context: context, error, version: head.version, keepAlive: false)
    }

    // MARK: upstream

    /// Sends the exchange to the upstream of its current attempt (the policy's upstream, then its fallbacks).
    private func forward(context: ChannelHandlerContext, _ x: Exchange) {
        let runtime = x.runtime!
        let name = x.plan?.decision?.upstream(forAttempt: x.attempt) ?? runtime.upstreams.keys.first ?? ""
        guard let upstream = runtime.upstreams[name] else {
            state = .idle
            writeError(context: context, .badGateway("the policy names an unknown upstream '\(name)'"),
                       version: x.version, keepAlive: x.keepAlive)
            finish(x, status: 502, error: "unknown_upstream")
            resumeQueued(context: context, after: x)
            return
        }
        x.upstreamName = name
        x.record.upstream = name
        x.record.attempts = x.attempt
        if x.record.trace != nil {
            x.record.serverAddress = upstream.url.host
            x.record.serverPort = upstream.url.port
        }
        // The upstream's spans become children of the sidecar's span (tracestate passes through as sent).
        let traceparent = x.record.trace?.upstreamTraceparent
        let body = x.outgoing
        if let pool = upstream.pool(for: context.eventLoop) {
            // Plain HTTP: our own keep-alive pool on this event loop.
            var uri = upstream.url.basePath + x.upstreamPath
            if uri.isEmpty || uri.first == "?" { uri = "/" + uri }
            let needsLength = body != nil || x.method == .POST || x.method == .PUT || x.method == .PATCH
            // A small body goes out behind the head, in one buffer: one pipeline write and one iovec instead of
            // two (a copy of a few KiB costs less than a second trip through the pipeline).
            let bodyBytes = body?.readableBytes ?? 0
            let coalesce = bodyBytes > 0 && bodyBytes <= Self.coalescedBodyLimit
            var head = context.channel.allocator.buffer(capacity: coalesce ? 512 + bodyBytes : 512)
            ForwardingHeaders.writeUpstreamRequestHead(
                &head, method: x.method, uri: uri, head: x.request, host: pool.hostHeader,
                contentLength: needsLength ? bodyBytes : nil, traceparent: traceparent,
                authorization: upstream.authorization)
            if coalesce, let body { head.writeImmutableBuffer(body) }
            x.dispatched = NIODeadline.now()
            if x.attempt == 1 { x.overhead = x.dispatched - x.bodyComplete }
            x.upstream = pool.execute(method: x.method, head: head, body: coalesce ? nil : body, id: x.id,
                                      handler: self)
            return
        }
        let headers = ForwardingHeaders.upstreamRequestHeaders(x.request.headers, traceparent: traceparent,
                                                               authorization: upstream.authorization)
        // HTTPS: AsyncHTTPClient (TLS with the system trust store, HTTP/2 via ALPN, pooled).
        let request: HTTPClient.Request
        do {
            request = try HTTPClient.Request(url: upstream.url.base + x.upstreamPath, method: x.method, headers: headers,
                                             body: body.map { .byteBuffer($0) })
        } catch {
            state = .idle
            writeError(context: context, .badRequest("The request URL cannot be forwarded: \(error)"),
                       version: x.version, keepAlive: x.keepAlive)
            finish(x, status: 400, error: "bad_url")
            resumeQueued(context: context, after: x)
            return
        }
        let delegate = UpstreamDelegate(handler: NIOLoopBound(self, eventLoop: context.eventLoop), id: x.id)
        x.dispatched = NIODeadline.now()
        if x.attempt == 1 { x.overhead = x.dispatched - x.bodyComplete }
        x.task = shared.client.execute(request: request, delegate: delegate,
                                       eventLoop: .delegate(on: context.eventLoop), logger: nil)
    }

    // MARK: upgrades (WebSocket), see UpgradeTunnel.swift

    /// Sends a WebSocket upgrade request to the policy's upstream on a connection of its own, then joins the two
    /// connections. The record is written with the answer when it is not a WebSocket, else when the session
    /// closes, with the usage the server's events reported (`WebSocketUsageObserver`). Upgrades are not retried on
    /// another upstream (the policy's fallbacks apply to requests the sidecar can replay).
    private func startTunnel(context: ChannelHandlerContext, _ x: Exchange, upgrade: String) {
        let runtime = x.runtime!
        let name = x.plan?.decision?.upstream(forAttempt: 1) ?? runtime.upstreams.keys.first ?? ""
        guard let upstream = runtime.upstreams[name] else {
            tunnelFailed(context: context, x, .badGateway("the policy names an unknown upstream '\(name)'"),
                         code: "unknown_upstream")
            return
        }
        x.upstreamName = name
        x.record.upstream = name
        x.record.attempts = 1
        // Realtime sessions name their model in the query (`?model=gpt-realtime`): the record's model for reports
        // and prices.
        if let model = URLQuery.value("model", in: x.upstreamPath) {
            x.record.requestedModel = model
            x.record.servedModel = model
        }
        if x.record.trace != nil {
            x.record.serverAddress = upstream.url.host
            x.record.serverPort = upstream.url.port
        }
        var tls: NIOSSLContext? = nil
        if upstream.url.scheme == "https" {
            do {
                tls = try shared.tunnelTLSContext()
            } catch {
                tunnelFailed(context: context, x, .badGateway("TLS setup for the upstream failed: \(error)"),
                             code: "upstream_error")
                return
            }
        }
        var uri = upstream.url.basePath + x.upstreamPath
        if uri.isEmpty || uri.first == "?" { uri = "/" + uri }
        var head = context.channel.allocator.buffer(capacity: 512)
        ForwardingHeaders.writeUpstreamRequestHead(
            &head, method: x.method, uri: uri, head: x.request, host: UpstreamPool.hostHeader(for: upstream.url),
            contentLength: x.outgoing?.readableBytes, traceparent: x.record.trace?.upstreamTraceparent,
            authorization: upstream.authorization, upgrade: upgrade)
        x.dispatched = NIODeadline.now()
        x.overhead = x.dispatched - x.bodyComplete
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let id = x.id
        let requestHead = head
        UpgradeTunnel.connect(to: upstream.url, on: context.eventLoop, tls: tls,
                              connectTimeout: shared.config.upstreamConnectTimeout).whenComplete { result in
            let me = handler.value
            guard let (x, context) = me.current(id) else {
                // The client went away while connecting.
                if case .success(let channel) = result { channel.close(promise: nil) }
                return
            }
            switch result {
            case .failure(let error):
                me.tunnelFailed(context: context, x, UpstreamErrors.map(error), code: "upstream_error")
            case .success(let channel):
                me.join(context: context, x, upstream: channel, head: requestHead)
            }
        }
    }

    private func tunnelFailed(context: ChannelHandlerContext, _ x: Exchange, _ error: OpenAIError, code: String) {
        state = .idle
        shared.logger.info("upgrade request failed", metadata: ["status": "\(error.status)", "error": "\(error.message)"])
        closing = true  // what the client sent after its upgrade request is not HTTP to answer
        writeError(context: context, error, version: x.version, keepAlive: false)
        finish(x, status: error.status, error: error.code ?? code)
    }

    /// Writes the request to the connected upstream and hands both connections to a `TunnelGlue` pair; this
    /// handler and the HTTP decoder leave the client's pipeline.
    private func join(context: ChannelHandlerContext, _ x: Exchange, upstream: any Channel, head: ByteBuffer) {
        state = .idle
        // The record ends with the answer when it is not a WebSocket, else with the session (its status 101, the
        // usage its server events reported).
        var observer = WebSocketUsageObserver()
        var finished = false
        // Until the answer's head is read: the answer from its first byte, in case it is a refusal (an ordinary
        // response the tunnel ends with).
        var refusal: RefusalTracker? = RefusalTracker()
        var gate: TunnelGlue?
        let (clientEnd, upstreamEnd) = TunnelGlue.pair(
            upstreamBytes: { bytes in
                let more = observer.observe(bytes)
                if x.firstChunk == nil {
                    x.firstChunk = NIODeadline.now()
                    x.upstreamDone = x.firstChunk
                }
                refusal?.feed(bytes)
                guard let status = observer.status else { return .more }
                if status == 101 {
                    if refusal != nil {
                        refusal = nil
                        gate?.answered(upgraded: true)
                    }
                    return more ? .more : .stop
                }
                if !finished {
                    finished = true
                    gate?.answered(upgraded: false)
                    self.finish(x, status: status, error: status >= 400 ? "http_\(status)" : "no_upgrade")
                }
                // A refusal: the connection ends with its answer (what the client sends next is not relayed).
                guard let answer = refusal, !answer.ended, !answer.failed else { return .last }
                return .more
            },
            upstreamClosed: {
                guard !finished else { return }
                finished = true
                guard let status = observer.status else {
                    self.finish(x, status: 502, error: "upstream_closed")
                    return
                }
                x.record.usage = observer.usage
                self.finish(x, status: status, error: nil)
            })
        do {
            try upstream.pipeline.syncOperations.addHandler(upstreamEnd)
            upstream.write(head, promise: nil)
            if let body = x.outgoing { upstream.write(body, promise: nil) }
            let pipeline = context.pipeline.syncOperations
            let decoder = try pipeline.handler(type: HTTP1RequestDecoder.self)
            if let early = decoder.takeTunnelBytes() { clientEnd.hold(early) }
            upstream.flush()
            gate = clientEnd
            try pipeline.addHandler(clientEnd, position: .last)
            pipeline.removeHandler(decoder, promise: nil)
            pipeline.removeHandler(context: context, promise: nil)
        } catch {
            upstream.close(promise: nil)
            tunnelFailed(context: context, x, .badGateway("cannot set up the tunnel: \(error)"), code: "upstream_error")
        }
    }

    /// Before any byte reached the client, a failed attempt (connect failure, timeout, reset, 429, 5xx) moves on
    /// to the next upstream of the chain after the policy's backoff. Returns false when no attempt is left.
    private func retry(context: ChannelHandlerContext, _ x: Exchange, reason: String) -> Bool {
        guard !x.headSent, x.attempt < (x.plan?.maxAttempts ?? 1) else { return false }
        x.task?.cancel()
        x.task = nil
        x.upstream?.cancel()
        x.upstream = nil
        // Nothing of the failed attempt's response may leak into the next one's.
        x.pendingHead = nil
        x.held = nil
        x.responseParts = []
        x.collectedBytes = 0
        x.collectResponse = false
        x.factsTap = nil
        x.tap = nil
        x.attempt += 1
        nextID &+= 1
        x.id = nextID  // callbacks of the abandoned attempt no longer match
        let delay = x.plan?.decision?.retry.delay(beforeAttempt: x.attempt) ?? .zero
        shared.logger.info("retrying on the next upstream", metadata: [
            "request_id": "\(x.record.requestID)", "failed": "\(x.upstreamName)", "reason": "\(reason)",
            "attempt": "\(x.attempt)",
        ])
        let nanos = Int64(delay.nanoseconds)
        if nanos <= 0 {
            forward(context: context, x)
        } else {
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            let id = x.id
            context.eventLoop.scheduleTask(in: .nanoseconds(nanos)) {
                let me = handler.value
                // Still the same exchange and attempt (the client may have gone away meanwhile).
                guard let (current, context) = me.current(id) else { return }
                me.forward(context: context, current)
            }
        }
        return true
    }

    private func current(_ id: UInt64) -> (Exchange, ChannelHandlerContext)? {
        guard case .forwarding(let x) = state, x.id == id, let context else { return nil }
        return (x, context)
    }

    func upstreamHead(id: UInt64, _ upstream: UpstreamHead) -> EventLoopFuture<Void>? {
        guard let (x, context) = current(id) else { return nil }
        let code = upstream.status
        if (code == 429 || code >= 500) && retry(context: context, x, reason: "HTTP \(code)") { return nil }
        let arrived = NIODeadline.now()
        x.record.status = code
        x.upstreamRequestID = upstream.first("x-request-id")
        let isStream = upstream.isEventStream
        x.isStream = isStream
        if isStream && x.plan?.injectedStreamUsage == true {
            // Usage the client did not ask for must come out of the stream: cut it out as it passes. What the
            // stream says (usage, ids, text) is read later from the upstream's bytes, on the accounting thread.
            x.tap = StreamTap(stripInjectedUsage: true, collectFacts: false)
        }
        // The tap shortens the body: its length is then framed anew.
        var head = upstream.clientHead(dropContentLength: x.tap != nil)
        if let decision = x.plan?.decision { head.add("x-auto-optimizer-rule", decision.ruleHeaderValue) }
        if isStream {
            x.collectResponse = true  // read later, on the accounting thread
        } else if x.endpoint.readsBody && code < 300 {
            if x.record.tokensSaved != 0 || x.record.servedModel != x.record.requestedModel {
                // Savings depend on this answer's usage: hold it so they can go in its headers.
                x.pendingHead = head
                x.overhead = x.overhead + (NIODeadline.now() - arrived)
                return nil
            }
            // Same model, same prompt: nothing saved, whatever the usage. Send at once, account later.
            x.collectResponse = true
            addAccountingHeaders(&head, x, costSaved: "0")
        }
        x.overhead = x.overhead + (NIODeadline.now() - arrived)
        head.add("x-auto-optimizer-overhead-ms", milliseconds: x.overhead)
        x.headSent = true
        sendHead(context: context, head, x, flush: isStream)
        return nil
    }

    func upstreamBody(id: UInt64, _ buffer: ByteBuffer) -> EventLoopFuture<Void>? {
        guard let (x, context) = current(id) else { return nil }
        if x.pendingHead != nil {
            var b = buffer
            if x.held == nil { x.held = b } else { x.held!.writeBuffer(&b) }
            return nil
        }
        var out = buffer
        if x.collectResponse {
            x.responseParts.append(buffer)
            x.collectedBytes += buffer.readableBytes
            if x.isStream && x.collectedBytes > Self.maxHeldStreamBytes { x.readStreamFactsNow() }
        } else if x.factsTap != nil {
            _ = x.factsTap!.observe(buffer)
        }
        if x.tap != nil {
            out = x.tap!.observe(buffer)
            if out.readableBytes == 0 { return nil }
        }
        if x.firstChunk == nil { x.firstChunk = NIODeadline.now() }
        // Each upstream read goes out at once (SSE chunks are never batched). When the client's socket is full, the
        // write's future tells the upstream side to stop reading until it drains.
        if context.channel.isWritable {
            sendBody(context: context, out, promise: nil)
            return nil
        }
        let promise = context.eventLoop.makePromise(of: Void.self)
        sendBody(context: context, out, promise: promise)
        return promise.futureResult
    }

    func upstreamEnd(id: UInt64) {
        guard let (x, context) = current(id) else { return }
        state = .idle
        x.upstreamDone = NIODeadline.now()
        if var head = x.pendingHead {
            let begin = NIODeadline.now()
            let facts = x.held.map { ResponseFacts.fromBody($0, textOnlyWithoutUsage: true) } ?? ResponseFacts()
            x.facts = facts
            x.record.usage = facts.usage
            shared.accountant.price(&x.record)
            addAccountingHeaders(&head, x, costSaved: x.record.costSavedUSD.map(USD.format) ?? "unknown")
            x.overhead = x.overhead + (NIODeadline.now() - begin)
            head.add("x-auto-optimizer-overhead-ms", milliseconds: x.overhead)
            sendHead(context: context, head, x, flush: false)
            x.headSent = true
            if let held = x.held {
                x.firstChunk = NIODeadline.now()
                sendBody(context: context, held, flush: false, promise: nil)
            }
        } else if x.tap != nil {
            let rest = x.tap!.finish()
            if rest.readableBytes > 0 { sendBody(context: context, rest, flush: false, promise: nil) }
        }
        sendEnd(context: context, keepAlive: keepsConnection(x))
        finish(x, status: x.record.status, error: x.record.status >= 400 ? "http_\(x.record.status)" : nil)
        resumeQueued(context: context, after: x)
    }

    func upstreamError(id: UInt64, _ error: any Error) {
        guard let (x, context) = current(id) else { return }
        if retry(context: context, x, reason: "\(error)") { return }
        state = .idle
        x.upstreamDone = NIODeadline.now()
        if x.headSent {
            // Bytes already reached the client: the only honest signal left is to cut the response short.
            shared.logger.warning("upstream failed mid-response", metadata: ["error": "\(error)"])
            context.close(promise: nil)
            finish(x, status: x.record.status, error: "upstream_reset")
            return
        }
        let e = UpstreamErrors.map(error)
        shared.logger.info("upstream request failed", metadata: ["status": "\(e.status)", "error": "\(error)"])
        writeError(context: context, e, version: x.version, keepAlive: x.keepAlive)
        finish(x, status: e.status, error: e.code ?? "upstream_error")
        resumeQueued(context: context, after: x)
    }

    // MARK: writing responses

    /// Writes `x`'s response head to the client (with `connection: close` when the connection ends after it).
    private func sendHead(context: ChannelHandlerContext, _ head: OutgoingHead, _ x: Exchange, flush: Bool) {
        sendHead(context: context, head, version: x.version, keepAlive: keepsConnection(x),
                 bodyless: x.method == .HEAD, flush: flush)
        if framing == .close { x.closeAfter = true }
    }

    private func sendHead(context: ChannelHandlerContext, _ head: OutgoingHead, version: HTTPVersion,
                          keepAlive: Bool, bodyless: Bool, flush: Bool)
    {
        if http1 {
            framing = head.framing(version: version, bodyless: bodyless)
            // A head kept back for the body gets room for a typical completion behind it.
            let bytes = head.serialize(version: version, framing: framing, keepAlive: keepAlive,
                                       allocator: context.channel.allocator, room: flush ? 0 : 2048)
            writeUnsentHead(context: context)
            if flush {
                context.writeAndFlush(NIOAny(bytes), promise: nil)
                unflushed = false
            } else {
                unsentHead = bytes
            }
            return
        }
        var headers = head.headers
        if !keepAlive { headers.replaceOrAdd(name: "connection", value: "close") }
        let part = wrapOutboundOut(.head(HTTPResponseHead(
            version: version, status: HTTPResponseStatus(statusCode: head.status, reasonPhrase: head.reason),
            headers: headers)))
        if flush { context.writeAndFlush(part, promise: nil) } else { context.write(part, promise: nil) }
    }

    /// Writes body bytes (framed as the head announced), flushed unless `flush` is false.
    private func sendBody(context: ChannelHandlerContext, _ buffer: ByteBuffer, flush: Bool = true,
                          promise: EventLoopPromise<Void>?)
    {
        guard http1 else {
            let part = wrapOutboundOut(.body(.byteBuffer(buffer)))
            if flush { context.writeAndFlush(part, promise: promise) } else { context.write(part, promise: promise) }
            return
        }
        let n = buffer.readableBytes
        switch framing {
        case .none:
            promise?.succeed()
            return
        case .identity, .close:
            var out = buffer
            if var head = unsentHead, n <= Self.coalescedBodyLimit {
                unsentHead = nil
                head.writeImmutableBuffer(buffer)
                out = head
            } else {
                writeUnsentHead(context: context)
            }
            if flush {
                context.writeAndFlush(NIOAny(out), promise: promise)
                unflushed = false
            } else {
                context.write(NIOAny(out), promise: promise)
                unflushed = true
            }
        case .chunked:
            writeUnsentHead(context: context)
            guard n > 0 else {
                if flush && unflushed {
                    context.flush()
                    unflushed = false
                }
                promise?.succeed()
                return
            }
            unflushed = !flush
            if n <= 2048 {
                // Small chunks (SSE events): one buffer, one iovec.
                var chunk = context.channel.allocator.buffer(capacity: n + 12)
                chunk.writeString(String(n, radix: 16))
                chunk.writeStaticString("\r\n")
                chunk.writeImmutableBuffer(buffer)
                chunk.writeStaticString("\r\n")
                if flush {
                    context.writeAndFlush(NIOAny(chunk), promise: promise)
                } else {
                    context.write(NIOAny(chunk), promise: promise)
                }
            } else {
                var size = context.channel.allocator.buffer(capacity: 10)
                size.writeString(String(n, radix: 16))
                size.writeStaticString("\r\n")
                context.write(NIOAny(size), promise: nil)
                context.write(NIOAny(buffer), promise: nil)
                if flush {
                    context.writeAndFlush(NIOAny(Self.crlf), promise: promise)
                } else {
                    context.write(NIOAny(Self.crlf), promise: promise)
                }
            }
        }
    }

    /// Ends the response (the last chunk when chunked) and flushes; unless the connection stays, closes it once
    /// that is written and stops processing what the client sends after.
    private func sendEnd(context: ChannelHandlerContext, keepAlive: Bool) {
        var promise: EventLoopPromise<Void>?
        if !keepAlive {
            closing = true
            let channel = context.channel
            promise = context.eventLoop.makePromise(of: Void.self)
            promise!.futureResult.whenComplete { _ in channel.close(promise: nil) }
        }
        guard http1 else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: promise)
            return
        }
        writeUnsentHead(context: context)
        if framing == .chunked {
            context.writeAndFlush(NIOAny(Self.chunkEnd), promise: promise)
        } else if promise != nil {
            context.writeAndFlush(NIOAny(ByteBuffer()), promise: promise)
        } else if unflushed {
            context.flush()
        }
        unflushed = false
        framing = .identity
    }

    /// Writes (without flushing) a head kept back for the body.
    private func writeUnsentHead(context: ChannelHandlerContext) {
        guard let head = unsentHead else { return }
        unsentHead = nil
        context.write(NIOAny(head), promise: nil)
        unflushed = true
    }

    /// Takes the exchange, not its record: a class's stored struct passed by value is copied first (every one of
    /// its references retained and released).
    private func addAccountingHeaders(_ headers: inout OutgoingHead, _ x: Exchange, costSaved: String) {
        headers.add("x-auto-optimizer-original-model", x.record.requestedModel ?? "")
        headers.add("x-auto-optimizer-served-model", x.record.servedModel ?? "")
        headers.add("x-auto-optimizer-tokens-saved", decimal: x.record.tokensSaved)
        headers.add("x-auto-optimizer-cost-saved-usd", costSaved)
        if let c = x.record.compression {
            headers.add(
                "x-auto-optimizer-compression",
                "\(c.technique); ratio=\(Self.fixed3(c.ratio)); quality=\(Self.fixed3(c.qualityScore))"
                    + "; tokens=\(c.originalTokens)->\(c.compressedTokens)\(c.applied ? "" : "; guarded")")
        }
    }

    static func fixed3(_ x: Double) -> String {
        let m = Int((x * 1000).rounded())
        let frac = String(m % 1000)
        return "\(m / 1000).\(String(repeating: "0", count: 3 - frac.count))\(frac)"
    }

    /// A stream's bytes are held for the accounting thread up to this much; a longer stream is read as it passes.
    static let maxHeldStreamBytes = 1 << 20

    /// Completes the record and hands it to the accountant (counting and sinks happen off the event loop).
    private func finish(_ x: Exchange, status: Int, error: String?) {
        let end = NIODeadline.now()
        if x.facts == nil, let t = x.factsTap { x.facts = t.facts }
        x.record.status = status
        x.record.errorType = error
        x.record.responseID = x.facts?.id ?? x.upstreamRequestID
        x.record.responseModel = x.facts?.model
        x.record.finishReasons = x.facts?.finishReasons ?? []
        if x.record.usage == nil { x.record.usage = x.facts?.usage }
        x.record.timings.total = .nanoseconds((end - x.start).nanoseconds)
        x.record.timings.timeToFirstChunk = x.firstChunk.map { .nanoseconds(($0 - x.start).nanoseconds) }
        if let done = x.upstreamDone {
            x.record.timings.upstream = .nanoseconds((done - x.dispatched).nanoseconds)
        }
        x.record.timings.overhead = .nanoseconds(x.overhead.nanoseconds)
        if x.record.trace != nil { x.record.endedAtUnixNano = wallClockUnixNano() }
        // The record, the request view and the held response move to the draft (the exchange is done with them):
        // copying would retain and release each of their references.
        var record = RequestRecord(requestID: "", application: "", endpoint: "")
        swap(&record, &x.record)
        let sent = x.plan?.promptChanged == true ? x.sentBody : nil
        let completionText = x.facts?.completionText ?? ""
        var parts: [ByteBuffer] = []
        swap(&parts, &x.responseParts)
        let draft = Accountant.Draft(
            record: consume record, original: x.view.take(), sent: sent, completionText: completionText,
            response: consume parts, responseIsStream: x.isStream)
        shared.accountant.submit(draft)
    }

    // MARK: local responses

    private func writeJSON(context: ChannelHandlerContext, status: HTTPResponseStatus, body: String,
                           head: RequestHead)
    {
        var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
        buffer.writeString(body)
        writeResponse(context: context, status: status, body: buffer, version: head.version,
                      keepAlive: head.isKeepAlive, omitBody: head.method == .HEAD)
    }

    private func writeError(context: ChannelHandlerContext, _ error: OpenAIError, version: HTTPVersion,
                            keepAlive: Bool, extraHeaders: [(String, String)] = [])
    {
        writeResponse(context: context, status: HTTPResponseStatus(statusCode: error.status),
                      body: error.body(allocator: context.channel.allocator), version: version, keepAlive: keepAlive,
                      omitBody: false, extraHeaders: extraHeaders)
    }

    private func writeResponse(context: ChannelHandlerContext, status: HTTPResponseStatus, body: ByteBuffer,
                               version: HTTPVersion, keepAlive: Bool, omitBody: Bool,
                               extraHeaders: [(String, String)] = [])
    {
        let keepAlive = keepAlive && !quiescing
        var head = OutgoingHead(status: Int(status.code), reason: status.reasonPhrase)
        for (name, value) in extraHeaders { head.add(name: name, value: value) }
        head.add("content-type", "application/json")
        head.add("content-length", String(body.readableBytes))
        head.add("x-auto-optimizer-overhead-ms", "0.000")
        sendHead(context: context, head, version: version, keepAlive: keepAlive, bodyless: omitBody, flush: false)
        if !omitBody { sendBody(context: context, body, flush: false, promise: nil) }
        sendEnd(context: context, keepAlive: keepAlive)
    }
}

/// One request in flight: what the sidecar decided, what came back, and its clocks. Event-loop confined.
final class Exchange {
    /// Identifies the current upstream attempt (changes on retry so stale callbacks are ignored).
    var id: UInt64
    var attempt = 1
    var runtime: Runtime?
    var upstreamName = ""
    var upstreamPath: Substring = ""
    var outgoing: ByteBuffer?
    let keepAlive: Bool
    let version: HTTPVersion
    let method: HTTPMethod
    /// The client's request head (its headers are forwarded).
    let request: RequestHead
    let endpoint: Endpoint
    let start: NIODeadline
    let bodyComplete: NIODeadline
    var dispatched: NIODeadline
    var upstreamDone: NIODeadline?
    var firstChunk: NIODeadline?
    /// Time inside the sidecar so far, upstream excluded.
    var overhead: TimeAmount = .zero
    var task: HTTPClient.Task<Void>?
    var upstream: UpstreamExchange?
    var headSent = false
    var view: RequestView?
    var plan: RequestPlan?
    var sentBody: ByteBuffer?
    var tap: StreamTap?
    var pendingHead: OutgoingHead?
    /// The response's body is delimited by closing the connection (HTTP/1.0 client, no length).
    var closeAfter = false
    var held: ByteBuffer?
    /// Response bytes kept for the accounting thread to read (usage, ids, text) off the hot path.
    var collectResponse = false
    var responseParts: [ByteBuffer] = []
    var collectedBytes = 0
    /// Reads a long stream's facts as it passes, once holding it for the accounting thread would cost too much
    /// memory.
    var factsTap: StreamTap?
    var isStream = false
    var facts: ResponseFacts?
    var upstreamRequestID: String?
    var record: RequestRecord

    init(id: UInt64, head: RequestHead, endpoint: Endpoint, start: NIODeadline, application: String,
         requestID: String)
    {
        self.id = id
        self.keepAlive = head.isKeepAlive
        self.version = head.version
        self.method = head.method
        self.request = head
        self.endpoint = endpoint
        self.start = start
        self.bodyComplete = NIODeadline.now()
        self.dispatched = bodyComplete
        self.record = RequestRecord(requestID: requestID, application: application, endpoint: endpoint.rawValue)
    }
}

extension Exchange {
    /// Stops holding the stream: what is held is read now, the rest as it passes.
    func readStreamFactsNow() {
        var t = StreamTap(stripInjectedUsage: false)
        for part in responseParts { _ = t.observe(part) }
        responseParts = []
        collectResponse = false
        factsTap = t
    }
}

/// Wall clock, nanoseconds since the Unix epoch (vDSO clock_gettime: no system call).
func wallClockUnixNano() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
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
        handler.value.upstreamHead(id: id, .parsed(head)) ?? task.eventLoop.makeSucceededVoidFuture()
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
        if let e = error as? UpstreamFailure {
            switch e {
            case .connectTimeout, .readTimeout: return .gatewayTimeout(e.description)
            default: return .badGateway(e.description)
            }
        }
        return .badGateway(String(describing: error))
    }
}
