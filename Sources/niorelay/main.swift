// niorelay: the floor of any SwiftNIO proxy, for the overhead benchmark (Benchmarks/overhead.sh, target `niorelay`).
//
// A plain TCP relay on SwiftNIO: every accepted connection gets its own connection to the upstream, and bytes go
// across unchanged (no HTTP parsing, no policy, no accounting), glued the way swift-nio-examples' connect-proxy
// does it: a read on one side is written to the other, flushed at the end of the read burst, and reading stops
// while the other side cannot take more. Any HTTP proxy built on SwiftNIO's channel pipeline does at least this
// per request, so its CPU time and added latency bound from below what the sidecar could reach on that stack.
//
//   niorelay --port 18090 --upstream-port 19002 [--host 127.0.0.1] [--threads 1]
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One side of a relayed connection; its partner is the other side's handler (both on one event loop).
final class GlueHandler: ChannelDuplexHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false

    static func matchedPair() -> (GlueHandler, GlueHandler) {
        let a = GlueHandler()
        let b = GlueHandler()
        a.partner = b
        b.partner = a
        return (a, b)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { partner?.context?.write(data, promise: nil) }

    func channelReadComplete(context: ChannelHandlerContext) { partner?.context?.flush() }

    func channelInactive(context: ChannelHandlerContext) { partner?.context?.close(promise: nil) }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { partner?.context?.close(promise: nil) }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            partner?.context?.close(mode: .output, promise: nil)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        guard context.channel.isWritable, let partner, partner.pendingRead else { return }
        partner.pendingRead = false
        partner.context?.read()
    }

    func read(context: ChannelHandlerContext) {
        if partner?.context?.channel.isWritable ?? false {
            context.read()
        } else {
            pendingRead = true
        }
    }
}

struct Options {
    var host = "127.0.0.1"
    var port = 18090
    var upstreamHost = "127.0.0.1"
    var upstreamPort = 19002
    var threads = 1

    static func parse(_ args: [String]) -> Options {
        var o = Options()
        var i = 0
        func value() -> String {
            i += 1
            guard i < args.count else { fail("missing value after \(args[i - 1])") }
            return args[i]
        }
        func number(_ s: String) -> Int {
            guard let n = Int(s), n > 0, n < 65536 else { fail("not a valid number: \(s)") }
            return n
        }
        while i < args.count {
            switch args[i] {
            case "--host": o.host = value()
            case "--port": o.port = number(value())
            case "--upstream-host": o.upstreamHost = value()
            case "--upstream-port": o.upstreamPort = number(value())
            case "--threads": o.threads = number(value())
            case "-h", "--help":
                print("usage: niorelay [--host H] [--port P] [--upstream-host H] [--upstream-port P] [--threads N]")
                exit(0)
            default: fail("unknown argument: \(args[i])")
            }
            i += 1
        }
        return o
    }
}

func fail(_ message: String) -> Never {
    let line = "niorelay: \(message)\n"
    _ = line.utf8CString.withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count - 1) }
    exit(2)
}

let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
let upstream: SocketAddress
do {
    upstream = try SocketAddress(ipAddress: options.upstreamHost, port: options.upstreamPort)
} catch {
    fail("bad upstream address: \(error)")
}

let bootstrap = ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 256)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
    .childChannelOption(.autoRead, value: true)
    .childChannelInitializer { child in
        // The upstream connection is made on the child's loop before the child is registered (so it reads nothing
        // before its partner exists).
        ClientBootstrap(group: child.eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connect(to: upstream)
            .flatMapThrowing { up in
                let (a, b) = GlueHandler.matchedPair()
                try child.pipeline.syncOperations.addHandler(a)
                try up.pipeline.syncOperations.addHandler(b)
            }
    }

do {
    let server = try await bootstrap.bind(host: options.host, port: options.port).get()
    print("niorelay listening on \(options.host):\(options.port) -> \(options.upstreamHost):\(options.upstreamPort)")
    try await server.closeFuture.get()
} catch {
    fail("\(error)")
}
