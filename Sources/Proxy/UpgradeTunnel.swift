import Foundation
import CZlib
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Wire

// HTTP/1.1 protocol upgrades (RFC 9110 section 7.8), in practice WebSocket: the OpenAI SDKs open their Realtime,
// Responses-over-WebSocket and similar sessions as `ws(s)://{base_url}/...`, so an application pointed at the sidecar
// sends them here. Such a request is forwarded on a connection of its own (not the keep-alive pool): the sidecar
// writes the request head (Host for the upstream, the policy's key, Upgrade and `Connection: upgrade` kept), then
// joins the client's and the upstream's connections and relays bytes both ways until either side closes. The
// upstream's answer (`101 Switching Protocols` with its `Sec-WebSocket-Accept`, or a refusal) reaches the client
// byte for byte, and so do the frames that follow; the server's frames are read as they pass for the usage its
// events report (`WebSocketUsageObserver`). The client's bytes wait for the 101; after a refusal they are dropped
// and the connection closes once the refusal's answer has been relayed (`RefusalTracker`), so nothing reaches the
// upstream around the policy.

extension RawRequestHead {
    /// The `Upgrade` header's value when this is an upgrade request the sidecar tunnels: HTTP/1.1, GET, with
    /// `upgrade` among the `Connection` tokens and `websocket` among the `Upgrade` tokens. Other upgrades (curl's
    /// `h2c`, say) are answered as the plain HTTP/1.1 requests they also are: the server may ignore an upgrade
    /// (RFC 9110 section 7.8), and a tunnel would take the connection's later requests past the sidecar.
    /// Read once per request (``RequestHead/upgrade``); most heads stop at the method.
    var websocketUpgrade: String? {
        guard method == .GET, minorVersion == 1, hasUpgradeHeader else { return nil }
        var hasToken = false
        for f in fields where withName(f, { HeaderBytes.equalsIgnoringCase($0, "connection") }) {
            withValue(f) { v in
                HeaderBytes.forEachToken(v) { t in
                    if HeaderBytes.equalsIgnoringCase(t, "upgrade") { hasToken = true }
                }
            }
        }
        guard hasToken, let value = first("upgrade") else { return nil }
        var websocket = false
        value.utf8.withContiguousStorageIfAvailable { v in
            HeaderBytes.forEachToken(UnsafeRawBufferPointer(v)) { t in
                if HeaderBytes.equalsIgnoringCase(t, "websocket") { websocket = true }
            }
        }
        return websocket ? value : nil
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
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
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

    /// What the upstream end's reader says of the bytes it was shown.
    enum Verdict {
        /// Relay them; show the next ones too.
        case more
        /// Relay them; show nothing more.
        case stop
        /// Relay them, then close both connections: they end the exchange (a refused upgrade's answer).
        case last
    }

    /// Whether this end relays what it reads. The client's end holds the client's bytes until the upstream has
    /// answered the upgrade (a WebSocket client sends nothing before the 101), then relays them, or drops them
    /// after a refusal: a request written after a refused upgrade must not reach the upstream around the
    /// sidecar's policy.
    private enum Gate {
        case holding
        case open
        case dropping
    }

    private var partner: TunnelGlue?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var gate: Gate
    private var held: [ByteBuffer] = []
    private var heldBytes = 0
    /// Client bytes held before the answer, at most (then reading pauses until the answer).
    static let maxHeld = 64 * 1024
    private var holdsEnough: Bool { gate == .holding && heldBytes >= Self.maxHeld }
    /// Called with what this end reads (the upstream end: the answer and the server's frames), before it is
    /// relayed, until it says `.stop` or `.last`.
    private var onBytes: ((ByteBuffer) -> Verdict)?
    /// Called once, when this end's channel closes.
    private var onClose: (() -> Void)?

    private init(gate: Gate, onBytes: ((ByteBuffer) -> Verdict)?, onClose: (() -> Void)?) {
        self.gate = gate
        self.onBytes = onBytes
        self.onClose = onClose
    }

    /// Two partnered ends: the client's (holding the client's bytes until ``answered(upgraded:)``) and the
    /// upstream's.
    static func pair(upstreamBytes: @escaping (ByteBuffer) -> Verdict, upstreamClosed: @escaping () -> Void)
        -> (client: TunnelGlue, upstream: TunnelGlue)
    {
        let client = TunnelGlue(gate: .holding, onBytes: nil, onClose: nil)
        let upstream = TunnelGlue(gate: .open, onBytes: upstreamBytes, onClose: upstreamClosed)
        client.partner = upstream
        upstream.partner = client
        return (client, upstream)
    }

    /// Client bytes that arrived with the upgrade request (before this end joined the pipeline): held like later
    /// ones.
    func hold(_ bytes: ByteBuffer) {
        held.append(bytes)
        heldBytes += bytes.readableBytes
    }

    /// The upstream answered the upgrade: held client bytes go to it (upgraded) or are dropped (refused).
    func answered(upgraded: Bool) {
        guard gate == .holding else { return }
        gate = upgraded ? .open : .dropping
        if upgraded {
            for b in held { partner?.partnerWrite(NIOAny(b)) }
            if !held.isEmpty { partner?.partnerFlush() }
        }
        held = []
        heldBytes = 0
        if pendingRead && (partner?.isWritable ?? true) {
            pendingRead = false
            context?.read()
        }
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

    /// Closes once what was written to this end has been sent.
    private func partnerFinished() {
        guard let context else { return }
        let sent = context.eventLoop.makePromise(of: Void.self)
        let channel = context.channel  // the callback is @Sendable: it holds the channel, not the context
        context.writeAndFlush(NIOAny(channel.allocator.buffer(capacity: 0)), promise: sent)
        sent.futureResult.whenComplete { _ in channel.close(promise: nil) }
    }

    private func partnerBecameWritable() {
        if pendingRead && !holdsEnough {
            pendingRead = false
            context?.read()
        }
    }

    private var isWritable: Bool { context?.channel.isWritable ?? false }

    // MARK: events of this end

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var last = false
        if let f = onBytes {
            switch f(unwrapInboundIn(data)) {
            case .more: break
            case .stop: onBytes = nil
            case .last:
                onBytes = nil
                last = true
            }
        }
        switch gate {
        case .open:
            partner?.partnerWrite(data)
        case .holding:
            hold(unwrapInboundIn(data))
        case .dropping:
            return
        }
        if last {
            partner?.partnerFinished()
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if gate == .open { partner?.partnerFlush() }
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
        if holdsEnough {
            pendingRead = true  // until the answer
        } else if partner?.isWritable ?? true {
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

/// Reads the upstream's side of a WebSocket session as it passes (it never changes a byte) for the usage the server
/// reports: the response head (status, negotiated extensions), then the frames, collecting each text message up to
/// `maxMessage` bytes and taking the usage of `response.done` / `response.completed` events. Compressed messages
/// (permessage-deflate, RFC 7692, which Python's `websockets` and browsers offer by default) are inflated to be read,
/// binary ones too when the server keeps its compression window between messages. It stops reading (`observe`
/// returns false) when the answer is not a WebSocket, when another extension transforms the frames, on bytes that
/// break the framing or the compression, or on a compressed message too large to follow; the relay goes on
/// regardless.
struct WebSocketUsageObserver {
    enum Phase {
        case head
        case frames
        case off
    }

    private(set) var phase = Phase.head
    /// The answer's status code, once its head was read.
    private(set) var status: Int?
    /// The sum of the usage events read so far.
    private(set) var usage: Usage?
    /// Usage events read.
    private(set) var usageEvents = 0

    /// Bytes of an incomplete head or frame header.
    private var pending = ByteBuffer()
    /// Payload bytes of the current frame still to come.
    private var remaining = 0
    private var mask: [UInt8]?
    private var maskOffset = 0
    /// The current frame's payload belongs to the text message being collected.
    private var frameCollects = false
    /// The current frame ends its message.
    private var frameFin = false
    /// Inside a text message (from its first frame until the frame with FIN).
    private var inText = false
    private var message: [UInt8] = []
    private var messageTooLarge = false
    /// The message being collected is text (not binary: a compressed binary message is inflated only to keep the
    /// compression window).
    private var messageIsText = false
    /// The message being collected is compressed (RSV1 on its first frame).
    private var messageCompressed = false
    /// permessage-deflate, when negotiated.
    private var inflater: MessageInflater?

    static let maxMessage = 1 << 22

    /// Observes the next bytes from the upstream. False once nothing more will be read.
    mutating func observe(_ bytes: ByteBuffer) -> Bool {
        var input = bytes
        if phase == .head {
            pending.writeBuffer(&input)
            let head: RawResponseHead?
            do {
                head = try ResponseParser.parseHead(&pending)
            } catch {
                phase = .off  // not a response head the sidecar can read (too large, malformed)
                return false
            }
            guard let head else { return true }
            input = pending
            pending = ByteBuffer()
            status = head.status
            guard head.status == 101 else {
                phase = .off
                return false
            }
            var extensions: [String] = []
            for f in head.fields where head.withName(f, { HeaderBytes.equalsIgnoringCase($0, "sec-websocket-extensions") }) {
                extensions.append(head.value(f))
            }
            if !extensions.isEmpty {
                // Only permessage-deflate can be followed; any other extension transforms frames unknowably.
                guard let deflate = PerMessageDeflate(accepted: extensions.joined(separator: ",")),
                    let inflater = MessageInflater(resetEachMessage: deflate.serverNoContextTakeover)
                else {
                    phase = .off
                    return false
                }
                self.inflater = inflater
            }
            phase = .frames
        }
        guard phase == .frames else { return false }
        while input.readableBytes > 0 {
            if remaining > 0 {
                let n = min(remaining, input.readableBytes)
                let chunk = input.readSlice(length: n)!
                if frameCollects && !messageTooLarge {
                    if message.count + n > Self.maxMessage {
                        messageTooLarge = true
                        message = []
                        if messageCompressed && !(inflater?.resetEachMessage ?? true) {
                            // Later messages may refer back into this one's window: nothing more can be read.
                            phase = .off
                            return false
                        }
                    } else {
                        appendPayload(chunk)
                    }
                }
                remaining -= n
                if remaining == 0 && !endOfFrame() { return false }
                continue
            }
            // A frame header: 2 bytes, then 2 or 8 of extended length, then 4 of mask key if masked.
            pending.writeBuffer(&input)
            guard readHeader() else { return phase != .off }
            input = pending
            pending = ByteBuffer()
        }
        return true
    }

    /// Reads a frame header from `pending` (leaving what follows it there); false when it is not complete yet or
    /// breaks the framing (then `phase` is `.off`).
    private mutating func readHeader() -> Bool {
        guard pending.readableBytes >= 2 else { return false }
        let b0 = pending.getInteger(at: pending.readerIndex, as: UInt8.self)!
        let b1 = pending.getInteger(at: pending.readerIndex + 1, as: UInt8.self)!
        let masked = b1 & 0x80 != 0
        let len7 = Int(b1 & 0x7F)
        let extra = len7 == 126 ? 2 : (len7 == 127 ? 8 : 0)
        let headerLength = 2 + extra + (masked ? 4 : 0)
        guard pending.readableBytes >= headerLength else { return false }
        pending.moveReaderIndex(forwardBy: 2)
        var length = len7
        if extra == 2 {
            length = Int(pending.readInteger(as: UInt16.self)!)
        } else if extra == 8 {
            let l = pending.readInteger(as: UInt64.self)!
            guard l <= UInt64(Int.max) else {
                phase = .off
                return false
            }
            length = Int(l)
        }
        mask = masked ? pending.readBytes(length: 4) : nil
        maskOffset = 0
        let opcode = b0 & 0x0F
        frameFin = b0 & 0x80 != 0
        // RSV1 marks the first frame of a compressed message when permessage-deflate was negotiated; any other
        // RSV bit, or RSV1 elsewhere, means frames this reader cannot follow.
        let compressed = b0 & 0x40 != 0
        if b0 & 0x30 != 0 || (compressed && (inflater == nil || (opcode != 0x1 && opcode != 0x2))) {
            phase = .off
            return false
        }
        switch opcode {
        case 0x1, 0x2:  // text or binary: a new message
            message.removeAll(keepingCapacity: message.capacity <= 1 << 16)
            messageTooLarge = false
            messageIsText = opcode == 0x1
            messageCompressed = compressed
            // Binary messages are not read, except compressed ones while the window carries over (the text
            // messages after them may refer back into them).
            inText = messageIsText || (compressed && !inflater!.resetEachMessage)
            frameCollects = inText
        case 0x0:  // continuation of the current message
            frameCollects = inText
        default:  // control frames (close, ping, pong) may come between fragments; not read
            frameCollects = false
            if opcode < 0x8 {
                phase = .off
                return false
            }
            remaining = length
            return true
        }
        remaining = length
        if remaining == 0 && !endOfFrame() { return false }
        return true
    }

    private mutating func appendPayload(_ chunk: ByteBuffer) {
        chunk.withUnsafeReadableBytes { p in
            if let mask {
                for b in p {
                    message.append(b ^ mask[maskOffset & 3])
                    maskOffset += 1
                }
            } else {
                message.append(contentsOf: p)
            }
        }
    }

    /// Ends the current frame; at the end of a collected message, reads it. False when reading stops (`phase`
    /// is then `.off`).
    private mutating func endOfFrame() -> Bool {
        guard frameCollects, frameFin else { return true }
        inText = false
        frameCollects = false
        guard !messageTooLarge else { return true }
        if messageCompressed {
            guard let inflater, let text = inflater.inflate(message, limit: Self.maxMessage) else {
                phase = .off  // not valid DEFLATE: the window is lost
                return false
            }
            if messageIsText && !text.isEmpty { read(text) }
            return true
        }
        if !message.isEmpty { read(message) }
        return true
    }

    private mutating func read(_ text: [UInt8]) {
        let found = text.withUnsafeBytes { ResponseFacts.sessionEventUsage($0) }
        if let found {
            usage = usage.map { $0 + found } ?? found
            usageEvents += 1
        }
    }
}

/// Follows the upstream's answer to an upgrade request from its first byte: when it is not a 101, it is an
/// ordinary HTTP response, and the tunnel ends with it (`ended`), or at once when it cannot be framed (`failed`).
struct RefusalTracker {
    private var parser = ResponseParser()
    private var buffer = ByteBuffer()
    private(set) var ended = false
    private(set) var failed = false

    mutating func feed(_ bytes: ByteBuffer) {
        guard !ended && !failed else { return }
        var b = bytes
        buffer.writeBuffer(&b)
        do {
            while let event = try parser.next(&buffer, noBody: false) {
                if event.isEnd {
                    ended = true
                    return
                }
            }
            buffer.discardReadBytes()
        } catch {
            failed = true  // a 101 (not a refusal), or bytes that are not HTTP
        }
    }
}

/// The server's acceptance of permessage-deflate (RFC 7692 section 7), from `Sec-WebSocket-Extensions`. Nil for
/// anything else (another extension, two of them, an unknown parameter).
struct PerMessageDeflate: Equatable {
    var serverNoContextTakeover = false

    init?(accepted header: String) {
        let extensions = header.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard extensions.count == 1 else { return nil }
        let parts = extensions[0].split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.first?.lowercased() == "permessage-deflate" else { return nil }
        for param in parts.dropFirst() {
            let kv = param.split(separator: "=", maxSplits: 1).map {
                $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            }
            switch kv[0].lowercased() {
            case "server_no_context_takeover":
                serverNoContextTakeover = true
            case "client_no_context_takeover":
                break
            case "server_max_window_bits", "client_max_window_bits":
                // Inflating with the largest window reads any smaller one.
                if kv.count == 2 {
                    guard let bits = Int(kv[1]), (8...15).contains(bits) else { return nil }
                }
            default:
                return nil
            }
        }
    }
}

/// Raw-DEFLATE decompression of one direction's permessage-deflate messages (zlib). Each message's payload lacks
/// the empty stored block's final `00 00 ff ff`, which is put back; the window carries over from message to message
/// unless `resetEachMessage`. Only the upstream's reads of one session use it (one event loop).
final class MessageInflater {
    let resetEachMessage: Bool
    private let stream: UnsafeMutablePointer<z_stream>
    /// Output read per message at most (a decompression bomb costs this much inflating, not more).
    static let maxInflated = 1 << 26

    init?(resetEachMessage: Bool) {
        self.resetEachMessage = resetEachMessage
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        guard inflateInit2_(stream, -15, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            stream.deallocate()
            return nil
        }
    }

    deinit {
        inflateEnd(stream)
        stream.deallocate()
    }

    /// Inflates one message. Nil when the data is not valid DEFLATE or inflates past ``maxInflated``; otherwise
    /// the message, empty when it is longer than `limit` (inflated all the same: later messages may refer back
    /// to it).
    func inflate(_ payload: [UInt8], limit: Int) -> [UInt8]? {
        var out: [UInt8] = []
        var total = 0
        var ok = true
        let chunk = 1 << 15
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: chunk) { buffer in
            let tail: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]
            for (k, input) in [payload, tail].enumerated() where ok {
                input.withUnsafeBufferPointer { p in
                    stream.pointee.next_in = UnsafeMutablePointer(mutating: p.baseAddress)
                    stream.pointee.avail_in = UInt32(p.count)
                    repeat {
                        stream.pointee.next_out = buffer.baseAddress
                        stream.pointee.avail_out = UInt32(chunk)
                        let rc = CZlib.inflate(stream, Z_SYNC_FLUSH)
                        let produced = chunk - Int(stream.pointee.avail_out)
                        total += produced
                        if total <= limit {
                            out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[..<produced]))
                        }
                        if rc == Z_STREAM_END {
                            // A final block (BFINAL) ended the stream: the next message starts a new one. Bytes
                            // after it within the message are not DEFLATE this reader can follow.
                            inflateReset(stream)
                            if k == 0 && stream.pointee.avail_in > 0 { ok = false }
                            break
                        }
                        if rc == Z_BUF_ERROR {
                            if produced == 0 { break }  // needs the next input
                        } else if rc != Z_OK {
                            ok = false
                            break
                        }
                        if total > Self.maxInflated {
                            ok = false
                            break
                        }
                    } while stream.pointee.avail_in > 0 || stream.pointee.avail_out == 0
                }
            }
        }
        stream.pointee.next_in = nil
        stream.pointee.avail_in = 0
        guard ok else { return nil }
        if resetEachMessage { inflateReset(stream) }
        return total <= limit ? out : []
    }
}
