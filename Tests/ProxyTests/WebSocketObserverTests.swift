import CZlib
import Foundation
import NIOCore
import Testing
import Wire

@testable import Proxy

/// The tunnel's reader of a WebSocket session's server side: usage from `response.done` / `response.completed`
/// events, whatever way the bytes are cut into reads, and nothing read where it cannot be read faithfully.
@Suite("Proxy: WebSocket usage observer")
struct WebSocketObserverTests {
    static let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"

    /// One frame as a server (or, with `mask`, a client) writes it.
    static func frame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, mask: [UInt8]? = nil, rsv: UInt8 = 0)
        -> [UInt8]
    {
        var out: [UInt8] = [(fin ? 0x80 : 0) | rsv | opcode]
        let m: UInt8 = mask == nil ? 0 : 0x80
        if payload.count < 126 {
            out.append(m | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            out.append(m | 126)
            out += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            out.append(m | 127)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8((payload.count >> shift) & 0xFF)) }
        }
        if let mask {
            out += mask
            out += payload.enumerated().map { $0.element ^ mask[$0.offset & 3] }
        } else {
            out += payload
        }
        return out
    }

    static func text(_ s: String) -> [UInt8] { Array(s.utf8) }

    static let done = text(#"{"type":"response.done","event_id":"e1","response":{"id":"r1","status":"completed","usage":{"total_tokens":21,"input_tokens":12,"output_tokens":9,"input_token_details":{"cached_tokens":4,"audio_tokens":0}}}}"#)
    static let completed = text(#"{"response":{"usage":{"input_tokens":5,"output_tokens":2,"output_tokens_details":{"reasoning_tokens":1}}},"type":"response.completed"}"#)
    static let other = text(#"{"type":"response.output_text.delta","delta":"hi","response":{"usage":{"input_tokens":999}}}"#)

    /// A session's server bytes: text events (one fragmented, with a ping between its fragments), a binary
    /// message, a 70 KB event (64-bit length), a close.
    static func session() -> [UInt8] {
        var bytes = Array(head.utf8)
        bytes += frame(0x1, text(#"{"type":"session.created"}"#))
        bytes += frame(0x1, other)
        bytes += frame(0x1, Array(done[..<40]), fin: false)
        bytes += frame(0x9, text("ping"))
        bytes += frame(0x0, Array(done[40..<90]), fin: false)
        bytes += frame(0x0, Array(done[90...]))
        bytes += frame(0x2, Array(repeating: 7, count: 300), fin: false)
        bytes += frame(0x0, Array(repeating: 8, count: 70_000))
        let padded = text(#"{"type":"response.output_audio.delta","delta":""#) + Array(repeating: 0x41, count: 70_000) + text(#""}"#)
        bytes += frame(0x1, padded)
        bytes += frame(0x1, completed, mask: [1, 2, 3, 4])
        bytes += frame(0x8, [0x03, 0xE8])
        return bytes
    }

    static func observe(_ bytes: [UInt8], cuts: [Int]) -> WebSocketUsageObserver {
        var o = WebSocketUsageObserver()
        var start = 0
        for cut in cuts + [bytes.count] where cut > start {
            _ = o.observe(ByteBuffer(bytes: bytes[start..<cut]))
            start = cut
        }
        return o
    }

    @Test func sumsUsageEventsHoweverTheBytesAreCut() {
        let bytes = Self.session()
        let want = Usage(promptTokens: 17, completionTokens: 11, cachedTokens: 4, reasoningTokens: 1)
        // Whole, then cut at every position of the first 600 bytes (head, headers, fragments), then in random
        // places.
        #expect(Self.observe(bytes, cuts: []).usage == want)
        for cut in 1..<600 {
            let o = Self.observe(bytes, cuts: [cut])
            #expect(o.usage == want && o.usageEvents == 2 && o.status == 101, "cut at \(cut)")
        }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let cuts = (0..<20).map { _ in Int.random(in: 1..<bytes.count, using: &rng) }.sorted()
            #expect(Self.observe(bytes, cuts: cuts).usage == want, "cuts \(cuts)")
        }
        var byteByByte = WebSocketUsageObserver()
        for b in bytes[..<2000] { _ = byteByByte.observe(ByteBuffer(bytes: [b])) }
        _ = byteByByte.observe(ByteBuffer(bytes: bytes[2000...]))
        #expect(byteByByte.usage == want)
    }

    /// permessage-deflate as a server writes it: raw DEFLATE per message, flushed, the final `00 00 ff ff` cut;
    /// the window kept between messages unless `reset`.
    final class Deflater {
        let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        let reset: Bool
        init(reset: Bool, windowBits: Int32 = 15) {
            self.reset = reset
            stream.initialize(to: z_stream())
            let rc = deflateInit2_(stream, 6, Z_DEFLATED, -windowBits, 8, Z_DEFAULT_STRATEGY, zlibVersion(),
                                   Int32(MemoryLayout<z_stream>.size))
            precondition(rc == Z_OK)
        }
        deinit {
            deflateEnd(stream)
            stream.deallocate()
        }
        func compress(_ input: [UInt8]) -> [UInt8] {
            var out = [UInt8](repeating: 0, count: input.count + 1024)
            var produced = 0
            input.withUnsafeBufferPointer { p in
                stream.pointee.next_in = UnsafeMutablePointer(mutating: p.baseAddress)
                stream.pointee.avail_in = UInt32(p.count)
                out.withUnsafeMutableBufferPointer { o in
                    stream.pointee.next_out = o.baseAddress
                    stream.pointee.avail_out = UInt32(o.count)
                    precondition(deflate(stream, Z_SYNC_FLUSH) == Z_OK)
                    produced = o.count - Int(stream.pointee.avail_out)
                }
            }
            precondition(Array(out[(produced - 4)..<produced]) == [0, 0, 0xFF, 0xFF])
            if reset { deflateReset(stream) }
            return Array(out[..<(produced - 4)])
        }
    }

    static let deflateHead = head.replacingOccurrences(
        of: "\r\n\r\n", with: "\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=15\r\n\r\n")

    /// A compressed session: text events, a compressed binary message between them (it feeds the window), a
    /// fragmented compressed event with a ping inside, an uncompressed event, repeated events (later ones refer
    /// back into earlier messages' window).
    static func deflatedSession(reset: Bool) -> [UInt8] {
        let d = Deflater(reset: reset)
        let head = reset ? deflateHead.replacingOccurrences(of: "server_max_window_bits=15",
                                                            with: "server_no_context_takeover; client_max_window_bits")
            : deflateHead
        var bytes = Array(head.utf8)
        bytes += frame(0x1, d.compress(text(#"{"type":"session.created"}"#)), rsv: 0x40)
        bytes += frame(0x1, d.compress(other), rsv: 0x40)
        bytes += frame(0x2, d.compress(Array(repeating: 7, count: 5000) + done), rsv: 0x40)
        let z = d.compress(done)
        bytes += frame(0x1, Array(z[..<(z.count / 2)]), fin: false, rsv: 0x40)
        bytes += frame(0x9, text("ping"))
        bytes += frame(0x0, Array(z[(z.count / 2)...]))
        bytes += frame(0x1, completed)  // uncompressed: RSV1 clear
        bytes += frame(0x1, d.compress(done), rsv: 0x40)
        bytes += frame(0x1, d.compress(completed), rsv: 0x40)
        bytes += frame(0x8, [0x03, 0xE8])
        return bytes
    }

    @Test(arguments: [false, true])
    func readsCompressedSessions(reset: Bool) {
        let bytes = Self.deflatedSession(reset: reset)
        let want = Usage(promptTokens: 12 * 2 + 5 * 2, completionTokens: 9 * 2 + 2 * 2, cachedTokens: 8,
                         reasoningTokens: 2)
        let whole = Self.observe(bytes, cuts: [])
        #expect(whole.usage == want && whole.usageEvents == 4 && whole.phase == .frames)
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<100 {
            let cuts = (0..<12).map { _ in Int.random(in: 1..<bytes.count, using: &rng) }.sorted()
            #expect(Self.observe(bytes, cuts: cuts).usage == want, "cuts \(cuts)")
        }
    }

    @Test func stopsOnCompressionItCannotFollow() {
        // Bytes that are not DEFLATE: reading stops, nothing is made up.
        var broken = WebSocketUsageObserver()
        let garbage: [UInt8] = [0xFF, 0xFF, 0xFF, 0x13, 0x37, 0x00, 0x42]
        let more = broken.observe(ByteBuffer(bytes: Array(Self.deflateHead.utf8) + Self.frame(0x1, garbage, rsv: 0x40)
            + Self.frame(0x1, Self.done)))
        #expect(!more && broken.usage == nil && broken.phase == .off)
        // RSV1 on a continuation frame, or RSV2: not permessage-deflate framing.
        let d = Deflater(reset: false)
        var cont = WebSocketUsageObserver()
        _ = cont.observe(ByteBuffer(bytes: Array(Self.deflateHead.utf8) + Self.frame(0x1, d.compress(Self.done), fin: false, rsv: 0x40)
            + Self.frame(0x0, [], rsv: 0x40)))
        #expect(cont.phase == .off && cont.usage == nil)
        var rsv2 = WebSocketUsageObserver()
        _ = rsv2.observe(ByteBuffer(bytes: Array(Self.deflateHead.utf8) + Self.frame(0x1, Self.done, rsv: 0x20)))
        #expect(rsv2.phase == .off)
        // A message that inflates past the limit is not read, but the window goes on: the next one is.
        let big = Self.text(#"{"type":"response.done","pad":""#) + Array(repeating: 0x41, count: WebSocketUsageObserver.maxMessage)
            + Self.text(#""}"#)
        let e = Deflater(reset: false)
        var large = WebSocketUsageObserver()
        let largeMore = large.observe(ByteBuffer(bytes: Array(Self.deflateHead.utf8) + Self.frame(0x1, e.compress(big), rsv: 0x40)
            + Self.frame(0x1, e.compress(Self.done), rsv: 0x40)))
        #expect(largeMore && large.usageEvents == 1 && large.usage?.promptTokens == 12)
    }

    @Test func readsNothingItCannotReadFaithfully() {
        // Not a WebSocket: the answer's status, nothing more.
        var refused = WebSocketUsageObserver()
        let refusedMore = refused.observe(ByteBuffer(string: "HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}"))
        #expect(!refusedMore)
        #expect(refused.status == 404 && refused.usage == nil)
        // An extension other than permessage-deflate (or one with parameters it does not know) transforms the
        // frames in ways it cannot follow: not read.
        for ext in ["x-webkit-deflate-frame", "permessage-deflate; foo=1", "permessage-deflate, permessage-deflate",
                    "permessage-deflate; server_max_window_bits=7"] {
            var other = WebSocketUsageObserver()
            let head = Self.head.replacingOccurrences(of: "\r\n\r\n", with: "\r\nSec-WebSocket-Extensions: \(ext)\r\n\r\n")
            let more = other.observe(ByteBuffer(bytes: Array(head.utf8) + Self.frame(0x1, Self.done)))
            #expect(!more, "\(ext)")
            #expect(other.status == 101 && other.usage == nil)
        }
        // RSV bits without a negotiated extension break the framing: reading stops there.
        var rsv = WebSocketUsageObserver()
        let rsvMore = rsv.observe(ByteBuffer(bytes: Array(Self.head.utf8) + Self.frame(0x1, Self.done, rsv: 0x40)
            + Self.frame(0x1, Self.done)))
        #expect(!rsvMore)
        #expect(rsv.usage == nil)
        // A message over the limit is skipped, the next one read.
        var large = WebSocketUsageObserver()
        let huge = Self.text(#"{"type":"response.done","pad":""#) + Array(repeating: 0x41, count: WebSocketUsageObserver.maxMessage) + Self.text(#""}"#)
        let largeMore = large.observe(ByteBuffer(bytes: Array(Self.head.utf8) + Self.frame(0x1, huge)
            + Self.frame(0x1, Self.done)))
        #expect(largeMore)
        #expect(large.usageEvents == 1 && large.usage?.promptTokens == 12)
        // Events that are not usage reports, or not JSON, add nothing.
        var others = WebSocketUsageObserver()
        _ = others.observe(ByteBuffer(bytes: Array(Self.head.utf8) + Self.frame(0x1, Self.other)
            + Self.frame(0x1, Self.text("response.done")) + Self.frame(0x2, Self.done)))
        #expect(others.usage == nil && others.usageEvents == 0)
    }
}
