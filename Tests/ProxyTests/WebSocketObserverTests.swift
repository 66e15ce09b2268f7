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

    @Test func readsNothingItCannotReadFaithfully() {
        // Not a WebSocket: the answer's status, nothing more.
        var refused = WebSocketUsageObserver()
        let refusedMore = refused.observe(ByteBuffer(string: "HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}"))
        #expect(!refusedMore)
        #expect(refused.status == 404 && refused.usage == nil)
        // An extension (permessage-deflate) transforms the frames: not read.
        var deflated = WebSocketUsageObserver()
        let head = Self.head.replacingOccurrences(of: "\r\n\r\n", with: "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
        let deflatedMore = deflated.observe(ByteBuffer(bytes: Array(head.utf8) + Self.frame(0x1, Self.done)))
        #expect(!deflatedMore)
        #expect(deflated.status == 101 && deflated.usage == nil)
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
