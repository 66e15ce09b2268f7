import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Wire

/// A request as the mock received it, for tests that check what reached the upstream.
struct RecordedRequest: Sendable {
    var method: String
    var uri: String
    var headers: [(String, String)]
    var body: ByteBuffer?
}

final class MockState: Sendable {
    let options: MockOptions
    private let recorded = NIOLockedValueBox(CircularBuffer<RecordedRequest>(initialCapacity: 64))
    static let capacity = 64

    init(options: MockOptions) { self.options = options }

    func record(_ r: RecordedRequest) {
        recorded.withLockedValue { ring in
            if ring.count >= Self.capacity { ring.removeFirst() }
            ring.append(r)
        }
    }

    func clear() { recorded.withLockedValue { $0.removeAll() } }

    func recordedJSON() -> String {
        let list = recorded.withLockedValue { Array($0) }
        let items = list.map { r -> String in
            let headers = r.headers.map { "[\(JSONString.quoted($0.0)),\(JSONString.quoted($0.1))]" }.joined(separator: ",")
            let body = r.body.map { Data($0.readableBytesView).base64EncodedString() } ?? ""
            return #"{"method":\#(JSONString.quoted(r.method)),"path":\#(JSONString.quoted(r.uri)),"headers":[\#(headers)],"body_base64":"\#(body)"}"#
        }
        return #"{"requests":[\#(items.joined(separator: ","))]}"#
    }
}

/// The mock upstream's HTTP/1.1 server.
public final class MockServer: Sendable {
    private let group: MultiThreadedEventLoopGroup
    private let channel: any Channel

    public var localAddress: SocketAddress? { channel.localAddress }

    private init(group: MultiThreadedEventLoopGroup, channel: any Channel) {
        self.group = group
        self.channel = channel
    }

    public static func start(host: String, port: Int, options: MockOptions, threads: Int = System.coreCount)
        async throws -> MockServer
    {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        let state = MockState(options: options)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = MockHandler(state: state)
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.configureHTTPServerPipeline(
                        withServerUpgrade: (upgraders: [MockWebSocket.upgrader(state: state)],
                                            completionHandler: { context in
                                                context.pipeline.syncOperations.removeHandler(handler, promise: nil)
                                            }),
                        withErrorHandling: true)
                    try pipeline.addHandler(handler)
                }
            }
        do {
            let channel = try await bootstrap.bind(host: host, port: port).get()
            return MockServer(group: group, channel: channel)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    public func shutdown() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }

    public func waitUntilClosed() async {
        try? await channel.closeFuture.get()
    }
}

final class MockHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let state: MockState
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    /// Bumped per request so scheduled stream writes of an old request stop.
    private var generation = 0

    init(state: MockState) { self.state = state }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = nil
        case .body(var part):
            if body == nil { body = part } else { body!.writeBuffer(&part) }
        case .end:
            guard let head else { return }
            self.head = nil
            handle(context: context, head: head, body: body)
            body = nil
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        generation += 1
        context.fireChannelInactive()
    }

    private func handle(context: ChannelHandlerContext, head: HTTPRequestHead, body: ByteBuffer?) {
        generation += 1
        let uri = head.uri
        let path = uri[..<(uri.firstIndex(of: "?") ?? uri.endIndex)]
        switch (head.method, path) {
        case (.GET, "/health"):
            return sendJSON(context: context, head: head, status: 200, body: #"{"status":"ok"}"#)
        case (.GET, "/mock/requests"):
            return sendJSON(context: context, head: head, status: 200, body: state.recordedJSON())
        case (.DELETE, "/mock/requests"):
            state.clear()
            return sendJSON(context: context, head: head, status: 200, body: #"{"cleared":true}"#)
        default:
            break
        }
        state.record(RecordedRequest(method: head.method.rawValue, uri: uri,
                                     headers: head.headers.map { ($0.name, $0.value) }, body: body))
        guard path.hasPrefix("/v1/") else {
            let r = MockResponder.error(404, "Invalid URL (\(head.method.rawValue) \(path))", code: "unknown_url")
            return send(context: context, head: head, r, options: state.options)
        }
        let options: MockOptions
        do {
            options = try state.options.applying(headers: head.headers.map { ($0.name, $0.value) })
        } catch {
            return send(context: context, head: head, MockResponder.error(400, error.message, code: "mock_option"),
                        options: state.options)
        }
        switch options.fault {
        case .reset:
            return reset(context: context)
        case .stall:
            return  // never answer; the connection stays open until the client gives up
        default:
            break
        }
        let response = MockResponder.respond(method: head.method.rawValue, path: path.dropFirst(3), body: body,
                                             options: options)
        if options.latencyMs > 0 {
            let gen = generation
            context.eventLoop.scheduleTask(in: .milliseconds(Int64(options.latencyMs))) { [self] in
                guard gen == self.generation, context.channel.isActive else { return }
                self.send(context: context, head: head, response, options: options)
            }
        } else {
            send(context: context, head: head, response, options: options)
        }
    }

    private func reset(context: ChannelHandlerContext) {
        // SO_LINGER 0 makes close() send a TCP RST instead of a FIN.
        if let provider = context.channel as? any SocketOptionProvider {
            let channel = context.channel
            provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in channel.close(promise: nil) }
        } else {
            context.close(promise: nil)
        }
    }

    private func sendJSON(context: ChannelHandlerContext, head: HTTPRequestHead, status: Int, body: String) {
        send(context: context, head: head, .json(status: status, body: body), options: state.options)
    }

    private func send(context: ChannelHandlerContext, head: HTTPRequestHead, _ response: MockResponse,
                      options: MockOptions)
    {
        switch response {
        case .json(let status, let body, let extra):
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "application/json")
            headers.add(name: "content-length", value: String(body.utf8.count))
            headers.add(name: "x-request-id", value: "req_mock")
            for (n, v) in extra { headers.add(name: n, value: v) }
            if !head.isKeepAlive { headers.add(name: "connection", value: "close") }
            var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
            buffer.writeString(body)
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version,
                                                                 status: .init(statusCode: status), headers: headers))),
                          promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !head.isKeepAlive {
                let channel = context.channel
                done.whenComplete { _ in channel.close(promise: nil) }
            }
        case .stream(let events):
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "text/event-stream; charset=utf-8")
            headers.add(name: "cache-control", value: "no-cache")
            headers.add(name: "x-request-id", value: "req_mock")
            if !head.isKeepAlive { headers.add(name: "connection", value: "close") }
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok,
                                                                         headers: headers))), promise: nil)
            let frames = events.map { "data: \($0)\n\n" } + ["data: [DONE]\n\n"]
            let interval: TimeAmount? = options.tokensPerSecond > 0
                ? .nanoseconds(Int64(1_000_000_000 / options.tokensPerSecond)) : nil
            streamFrames(context: context, frames: frames, index: 0, interval: interval, generation: generation,
                         resetAfter: options.fault == .resetMidStream ? 2 : nil, keepAlive: head.isKeepAlive)
        }
    }

    private func streamFrames(context: ChannelHandlerContext, frames: [String], index: Int, interval: TimeAmount?,
                              generation gen: Int, resetAfter: Int?, keepAlive: Bool)
    {
        var i = index
        while i < frames.count {
            guard gen == generation, context.channel.isActive else { return }
            if let resetAfter, i >= resetAfter { return reset(context: context) }
            var buffer = context.channel.allocator.buffer(capacity: frames[i].utf8.count)
            buffer.writeString(frames[i])
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            i += 1
            if let interval, i < frames.count {
                let next = i
                context.eventLoop.scheduleTask(in: interval) { [self] in
                    self.streamFrames(context: context, frames: frames, index: next, interval: interval,
                                      generation: gen, resetAfter: resetAfter, keepAlive: keepAlive)
                }
                return
            }
        }
        guard gen == generation, context.channel.isActive else { return }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
