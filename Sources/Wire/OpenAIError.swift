import NIOCore

/// An error in OpenAI's wire shape: `{"error":{"message":...,"type":...,"param":...,"code":...}}`.
public struct OpenAIError: Error, Sendable, Equatable {
    /// HTTP status to answer with.
    public var status: Int
    public var message: String
    /// OpenAI's error type, e.g. `invalid_request_error`, `server_error`.
    public var type: String
    public var param: String?
    public var code: String?

    public init(status: Int, message: String, type: String, param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    /// The JSON body.
    public var jsonBytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(message.utf8.count + 96)
        out.append(contentsOf: Array("{\"error\":{\"message\":".utf8))
        JSONString.append(message, to: &out)
        out.append(contentsOf: Array(",\"type\":".utf8))
        JSONString.append(type, to: &out)
        out.append(contentsOf: Array(",\"param\":".utf8))
        if let param { JSONString.append(param, to: &out) } else { out.append(contentsOf: Array("null".utf8)) }
        out.append(contentsOf: Array(",\"code\":".utf8))
        if let code { JSONString.append(code, to: &out) } else { out.append(contentsOf: Array("null".utf8)) }
        out.append(contentsOf: Array("}}".utf8))
        return out
    }

    public func body(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        let bytes = jsonBytes
        var buffer = allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        return buffer
    }
}

extension OpenAIError {
    public static func invalidJSON(_ error: JSONSyntaxError) -> OpenAIError {
        OpenAIError(
            status: 400,
            message: "We could not parse the JSON body of your request: \(error.reason) at byte \(error.offset). "
                + "The OpenAI API expects a JSON payload.",
            type: "invalid_request_error", code: "invalid_json")
    }

    public static func bodyTooLarge(limit: Int) -> OpenAIError {
        OpenAIError(status: 413, message: "The request body is larger than the sidecar's limit of \(limit) bytes.",
                    type: "invalid_request_error", code: "request_too_large")
    }

    public static func notFound(method: String, path: String) -> OpenAIError {
        OpenAIError(status: 404, message: "Invalid URL (\(method) \(path))", type: "invalid_request_error",
                    code: "unknown_url")
    }

    public static func badGateway(_ detail: String) -> OpenAIError {
        OpenAIError(status: 502, message: "The upstream could not be reached: \(detail)", type: "server_error",
                    code: "upstream_unreachable")
    }

    public static func gatewayTimeout(_ detail: String) -> OpenAIError {
        OpenAIError(status: 504, message: "The upstream did not answer in time: \(detail)", type: "server_error",
                    code: "upstream_timeout")
    }

    public static func badRequest(_ message: String, param: String? = nil, code: String? = nil) -> OpenAIError {
        OpenAIError(status: 400, message: message, type: "invalid_request_error", param: param, code: code)
    }

    public static func unavailable(_ message: String) -> OpenAIError {
        OpenAIError(status: 503, message: message, type: "server_error", code: "unavailable")
    }
}
