import NIOCore

/// A set of byte-range replacements on a request body. Every byte outside the replaced ranges is kept as it was.
public struct BodyPatch: Sendable {
    public struct Edit: Sendable {
        public var range: Range<Int>
        public var bytes: [UInt8]
    }

    public private(set) var edits: [Edit] = []

    public init() {}

    public var isEmpty: Bool { edits.isEmpty }

    /// Replaces `range` (offsets from the start of the body) with `bytes`. An empty range inserts.
    public mutating func replace(_ range: Range<Int>, with bytes: [UInt8]) {
        edits.append(Edit(range: range, bytes: bytes))
    }

    /// Applies the edits to `body`. Edits must not overlap; they may be given in any order.
    public func apply(to body: ByteBuffer, allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        if edits.isEmpty { return body }
        let sorted = edits.sorted { $0.range.lowerBound < $1.range.lowerBound }
        var size = body.readableBytes
        for e in sorted { size += e.bytes.count - e.range.count }
        var out = allocator.buffer(capacity: size)
        var cursor = 0
        let base = body.readerIndex
        for e in sorted {
            precondition(e.range.lowerBound >= cursor, "overlapping body edits")
            if e.range.lowerBound > cursor {
                out.writeImmutableBuffer(body.getSlice(at: base + cursor, length: e.range.lowerBound - cursor)!)
            }
            out.writeBytes(e.bytes)
            cursor = e.range.upperBound
        }
        if cursor < body.readableBytes {
            out.writeImmutableBuffer(body.getSlice(at: base + cursor, length: body.readableBytes - cursor)!)
        }
        return out
    }
}

extension RequestView {
    /// Sets `model` to `newModel`: every `model` value is replaced (duplicate keys included); if the request has no
    /// `model` key one is inserted first in the object.
    public func patchModel(_ newModel: String, into patch: inout BodyPatch) {
        var literal = [UInt8]()
        JSONString.append(newModel, to: &literal)
        if modelValueRanges.isEmpty {
            setTopLevel("model", rawJSON: literal, into: &patch)
        } else {
            for r in modelValueRanges { patch.replace(r, with: literal) }
        }
    }

    /// Replaces the content of message `index` with the string `text` (array content becomes a plain string).
    public func patchMessageContent(_ index: Int, text: String, into patch: inout BodyPatch) {
        var literal = [UInt8]()
        JSONString.append(text, to: &literal)
        patchMessageContent(index, literal: literal, into: &patch)
    }

    /// Replaces the content of message `index` with the string whose UTF-8 bytes are `utf8`. Bytes that are not
    /// valid UTF-8 are repaired (U+FFFD), as `String(decoding:as:)` would: the upstream never gets invalid JSON text.
    public func patchMessageContent(_ index: Int, utf8: UnsafeRawBufferPointer, into patch: inout BodyPatch) {
        var literal = [UInt8]()
        if JSONScanner.isValidUTF8(utf8) {
            JSONString.append(utf8: utf8, to: &literal)
        } else {
            JSONString.append(String(decoding: utf8, as: UTF8.self), to: &literal)
        }
        patchMessageContent(index, literal: literal, into: &patch)
    }

    /// Puts the JSON string `literal` (quotes included) in place of message `index`'s content.
    private func patchMessageContent(_ index: Int, literal: [UInt8], into patch: inout BodyPatch) {
        let m = messages[index]
        if let r = m.contentRange {
            patch.replace(r, with: literal)
        } else {
            // No content key: insert one right after the message's `{`.
            let comma = m.range.count > 2 && !isEmptyObject(m.range)
            var member = Array("\"content\":".utf8) + literal
            if comma { member.append(UInt8(ascii: ",")) }
            patch.replace((m.range.lowerBound + 1)..<(m.range.lowerBound + 1), with: member)
        }
    }

    /// Sets a top-level key to raw JSON: replaces the value of its last occurrence, or inserts the member first.
    public func setTopLevel(_ key: String, rawJSON: [UInt8], into patch: inout BodyPatch) {
        if let f = field(key) {
            patch.replace(f.valueRange, with: rawJSON)
            return
        }
        var member = [UInt8]()
        JSONString.append(key, to: &member)
        member.append(UInt8(ascii: ":"))
        member.append(contentsOf: rawJSON)
        if !fields.isEmpty { member.append(UInt8(ascii: ",")) }
        let open = openingBraceOffset()
        patch.replace((open + 1)..<(open + 1), with: member)
    }

    /// Convenience: the body with `model` replaced (see `patchModel`).
    public func replacingModel(with newModel: String) -> ByteBuffer {
        var patch = BodyPatch()
        patchModel(newModel, into: &patch)
        return patch.apply(to: body)
    }

    private func openingBraceOffset() -> Int {
        body.withUnsafeReadableBytes { raw in
            var i = 0
            while i < raw.count && raw[i] != UInt8(ascii: "{") { i += 1 }
            return i
        }
    }

    private func isEmptyObject(_ range: Range<Int>) -> Bool {
        body.withUnsafeReadableBytes { raw in
            for i in (range.lowerBound + 1)..<(range.upperBound - 1) {
                let c = raw[i]
                if !(c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09) { return false }
            }
            return true
        }
    }
}
