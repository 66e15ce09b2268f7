import Foundation
import NIOCore
import NIOHTTP1
import NIOWebSocket
import Wire

/// The mock's WebSocket endpoint, for the sidecar's upgrade tunnel: `GET /v1/realtime` (and `/v1/responses`) with
/// `Upgrade: websocket` becomes a small Realtime-style session. On open it sends `session.created` (with the
/// `model` of the query); a text message of type `response.create` gets `response.created`, six
/// `response.output_text.delta` events, `response.output_text.done` and `response.done` with usage; any other
/// text or binary message is echoed back as it came; pings get pongs; a close is answered and ends the session.
/// Other paths are not upgraded (the request is then answered as plain HTTP). The first offered
/// `Sec-WebSocket-Protocol` is accepted.
enum MockWebSocket {
    static let deltas = ["Hello", " from", " the", " mock", " realtime", " server."]

    static func upgrader(state: MockState) -> NIOWebSocketServerUpgrader {
        NIOWebSocketServerUpgrader(
            maxFrameSize: 1 << 24,
            automaticErrorHandling: true,
            shouldUpgrade: { channel, head in
                let uri = head.uri
                let path = uri[..<(uri.firstIndex(of: "?") ?? uri.endIndex)]
                guard path == "/v1/realtime" || path == "/v1/responses" else {
                    return channel.eventLoop.makeSucceededFuture(nil)
                }
                state.record(RecordedRequest(method: head.method.rawValue, uri: uri,
                                             headers: head.headers.map { ($0.name, $0.value) }, body: nil))
                var headers = HTTPHeaders()
                if let offered = head.headers.first(name: "sec-websocket-protocol"),
                   let first = offered.split(separator: ",").first
                {
                    headers.add(name: "Sec-WebSocket-Protocol", value: first.trimmingCharacters(in: .whitespaces))
                }
                headers.add(name: "x-mock-upstream", value: "websocket")
                return channel.eventLoop.makeSucceededFuture(headers)
            },
            upgradePipelineHandler: { channel, head in
                let model = URLQuery.value("model", in: head.uri) ?? "gpt-realtime"
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 4096,
                                                    maxAccumulatedFrameSize: 1 << 24),
                        MockWebSocketHandler(model: model),
                    ])
                }
            })
    }
}

final class MockWebSocketHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let model: String
    private var eventNumber = 0
    private var responses = 0
    private var closing = false

    init(model: String) { self.model = model }

    func handlerAdded(context: ChannelHandlerContext) {
        sendEvent(context: context, #"{"type":"session.created","event_id":"\#(nextEventID())","session":{"id":"sess_mock","object":"realtime.session","type":"realtime","model":\#(JSONString.quoted(model))}}"#)
        context.flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            let payload = frame.unmaskedData
            let text = payload.getString(at: payload.readerIndex, length: payload.readableBytes) ?? ""
            if text.contains(#""type":"response.create""#) || text.contains(#""type": "response.create""#) {
                respond(context: context)
            } else {
                context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: payload)), promise: nil)
            }
        case .binary:
            context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, data: frame.unmaskedData)),
                          promise: nil)
        case .ping:
            context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)),
                          promise: nil)
        case .connectionClose:
            guard !closing else {
                context.close(promise: nil)
                return
            }
            closing = true
            var data = frame.unmaskedData
            let code = data.readSlice(length: min(2, data.readableBytes)) ?? ByteBuffer()
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: code)))
                .whenComplete { _ in context.close(promise: nil) }
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    private func respond(context: ChannelHandlerContext) {
        responses += 1
        let id = "resp_mock_\(responses)"
        sendEvent(context: context, #"{"type":"response.created","event_id":"\#(nextEventID())","response":{"id":"\#(id)","object":"realtime.response","status":"in_progress","output":[]}}"#)
        for d in MockWebSocket.deltas {
            sendEvent(context: context, #"{"type":"response.output_text.delta","event_id":"\#(nextEventID())","response_id":"\#(id)","item_id":"item_\#(id)","output_index":0,"content_index":0,"delta":\#(JSONString.quoted(d))}"#)
        }
        let text = MockWebSocket.deltas.joined()
        sendEvent(context: context, #"{"type":"response.output_text.done","event_id":"\#(nextEventID())","response_id":"\#(id)","item_id":"item_\#(id)","output_index":0,"content_index":0,"text":\#(JSONString.quoted(text))}"#)
        sendEvent(context: context, #"{"type":"response.done","event_id":"\#(nextEventID())","response":{"id":"\#(id)","object":"realtime.response","status":"completed","output":[],"usage":{"total_tokens":21,"input_tokens":12,"output_tokens":9}}}"#)
    }

    private func nextEventID() -> String {
        eventNumber += 1
        return "event_mock_\(eventNumber)"
    }

    private func sendEvent(context: ChannelHandlerContext, _ json: String) {
        var buffer = context.channel.allocator.buffer(capacity: json.utf8.count)
        buffer.writeString(json)
        context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: buffer)), promise: nil)
    }
}
