import NIOCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A lazy pointer into an already-validated JSON document: member and element lookups scan the bytes on demand,
/// nothing is decoded that is not read. Made from a `RequestView` field or by `JSONNode.parse`.
public struct JSONNode: Sendable {
    public let buffer: ByteBuffer
    /// The value's bytes, offsets from the buffer's reader index.
    public let range: Range<Int>
    public let kind: JSONKind

    /// A node for `range` of `buffer`, which must hold one already-validated JSON value of `kind`.
    public init(buffer: ByteBuffer, range: Range<Int>, kind: JSONKind) {
        self.buffer = buffer
        self.range = range
        self.kind = kind
    }

    /// Validates `buffer` as one JSON value.
    public static func parse(_ buffer: ByteBuffer) throws(JSONSyntaxError) -> JSONNode {
        let r: Result<JSONNode, JSONSyntaxError> = buffer.withUnsafeReadableBytes { raw in
            var s = JSONScanner(raw)
            do throws(JSONSyntaxError) {
                s.skipWhitespace()
                let start = s.index
                let kind = try s.skipValue()
                let end = s.index
                s.skipWhitespace()
                if s.index < s.end { throw s.error("unexpected data after the JSON value") }
                return .success(JSONNode(buffer: buffer, range: start..<end, kind: kind))
            } catch {
                return .failure(error)
            }
        }
        return try r.get()
    }

    private func withScanner<T>(_ body: (inout JSONScanner) -> T) -> T {
        buffer.withUnsafeReadableBytes { raw in
            var s = JSONScanner(raw)
            s.index = range.lowerBound
            return body(&s)
        }
    }

    /// The member `key` of an object (the last one if repeated), or nil.
    public subscript(key: String) -> JSONNode? {
        var found: JSONNode?
        var utf8 = key
        utf8.withUTF8 { keyBytes in
            forEachMember { k, value in
                if k.escaped ? k.string == key : k.raw.elementsEqual(keyBytes) {
                    found = value
                }
            }
        }
        return found
    }

    /// Calls `body` with each member of an object, in order, without collecting them or decoding keys (the
    /// allocation-free form of `members`, for the accounting path).
    public func forEachMember(_ body: (JSONKey, JSONNode) -> Void) {
        forEachMemberWithOffset { _, key, value in body(key, value) }
    }

    /// `forEachMember`, also giving where each member's key (its opening quote) starts, as an offset from the
    /// buffer's reader index like `range`.
    public func forEachMemberWithOffset(_ body: (Int, JSONKey, JSONNode) -> Void) {
        guard kind == .object else { return }
        withScanner { s in
            s.index += 1
            if s.peek() == UInt8(ascii: "}") { return }
            while true {
                s.skipWhitespace()
                let keyStart = s.index
                guard let escaped = try? s.skipString(alreadyValid: true) else { return }
                let keyEnd = s.index
                _ = try? s.expect(UInt8(ascii: ":"))
                s.skipWhitespace()
                let valueStart = s.index
                guard let kind = try? s.skipValue(alreadyValid: true) else { return }
                let key = JSONKey(raw: UnsafeRawBufferPointer(rebasing: s.bytes[(keyStart + 1)..<(keyEnd - 1)]),
                                  escaped: escaped)
                body(keyStart, key, JSONNode(buffer: buffer, range: valueStart..<s.index, kind: kind))
                guard let done = try? s.endOfContainer(UInt8(ascii: "}")), !done else { return }
            }
        }
    }

    /// The members of an object, in order (empty for other kinds).
    public var members: [(key: String, value: JSONNode)] {
        var out: [(key: String, value: JSONNode)] = []
        forEachMember { key, value in out.append((key.string, value)) }
        return out
    }

    /// Whether the value is an empty array or object (`[]`, `[ ]`).
    public var isEmptyContainer: Bool {
        guard kind == .array || kind == .object else { return false }
        return withScanner { s in
            s.index += 1
            s.skipWhitespace()
            return s.index == range.upperBound - 1
        }
    }

    /// The elements of an array (empty for other kinds).
    public var elements: [JSONNode] {
        var out: [JSONNode] = []
        forEachElement { out.append($0) }
        return out
    }

    /// Calls `body` with each element of an array, in order, without collecting them (the allocation-free form of
    /// `elements`).
    public func forEachElement(_ body: (JSONNode) -> Void) {
        guard kind == .array else { return }
        withScanner { s in
            s.index += 1
            if s.peek() == UInt8(ascii: "]") { return }
            while true {
                s.skipWhitespace()
                let start = s.index
                guard let kind = try? s.skipValue(alreadyValid: true) else { return }
                body(JSONNode(buffer: buffer, range: start..<s.index, kind: kind))
                guard let done = try? s.endOfContainer(UInt8(ascii: "]")), !done else { return }
            }
        }
    }

    /// The decoded string, for string values.
    public var string: String? {
        guard kind == .string else { return nil }
        return buffer.withUnsafeReadableBytes { raw in
            JSONString.decode(UnsafeRawBufferPointer(rebasing: raw[(range.lowerBound + 1)..<(range.upperBound - 1)]),
                              hasEscapes: true)
        }
    }

    /// The raw text of the value (numbers, literals, nested JSON).
    public var raw: String {
        buffer.getString(at: buffer.readerIndex + range.lowerBound, length: range.count) ?? ""
    }

    /// Integer value of a number written as a plain integer (read from the bytes, no String).
    public var int: Int? {
        guard kind == .number else { return nil }
        return buffer.withUnsafeReadableBytes { raw in JSONNumber.int(raw, range) }
    }

    public var bool: Bool? { kind == .bool ? raw == "true" : nil }

    public var isNull: Bool { kind == .null }
}

/// An object key as it appears in the document (between the quotes), valid only inside `forEachMember`.
public struct JSONKey {
    let raw: UnsafeRawBufferPointer
    let escaped: Bool

    /// The decoded key.
    public var string: String { JSONString.decode(raw, hasEscapes: escaped) }

    /// Whether the key is `name` (escaped keys are decoded first).
    public func `is`(_ name: StaticString) -> Bool {
        if escaped { return string == name.description }
        guard raw.count == name.utf8CodeUnitCount else { return false }
        return raw.count == 0 || memcmp(raw.baseAddress!, name.utf8Start, raw.count) == 0
    }
}
