#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A strict RFC 8259 JSON validator over raw bytes that records where values are, without building a tree.
///
/// The sidecar never decodes and re-encodes a request: it validates it once, remembers byte ranges of the few fields
/// it reads, and splices replacements into those ranges. Everything else (key order, number spellings, escapes,
/// unknown fields) reaches the upstream exactly as the client wrote it.
public struct JSONSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Byte offset (from the start of the document) where the problem was found.
    public var offset: Int
    /// What is wrong, in words a client developer understands.
    public var reason: String

    public init(offset: Int, reason: String) {
        self.offset = offset
        self.reason = reason
    }

    public var description: String { "\(reason) at byte \(offset)" }
}

/// The kind of a JSON value, as seen from its first byte.
public enum JSONKind: Sendable, Equatable {
    case object, array, string, number, bool, null
}


struct JSONScanner {
    let bytes: UnsafeRawBufferPointer
    var index: Int
    let end: Int
    var depth: Int = 0
    static let maxDepth = 512


    init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
        self.index = 0
        self.end = bytes.count
    }

    func error(_ reason: String, at offset: Int? = nil) -> JSONSyntaxError {
        JSONSyntaxError(offset: offset ?? index, reason: reason)
    }

    func unexpected() -> JSONSyntaxError {
        if index >= end { return error("unexpected end of JSON input") }
        let c = bytes[index]
        if c >= 0x20 && c < 0x7F {
            return error("unexpected character '\(Character(Unicode.Scalar(c)))'")
        }
        return error("unexpected byte 0x\(String(c, radix: 16))")
    }


    mutating func skipWhitespace() {
        while index < end {
            let c = bytes[index]
            if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { index += 1 } else { return }
        }
    }

    /// Peeks the next non-whitespace byte without consuming it.

    mutating func peek() -> UInt8? {
        skipWhitespace()
        return index < end ? bytes[index] : nil
    }

    mutating func expect(_ byte: UInt8) throws(JSONSyntaxError) {
        skipWhitespace()
        guard index < end, bytes[index] == byte else { throw unexpected() }
        index += 1
    }

    /// Validates one value of any kind and returns its kind; `index` ends just after it.
    ///
    /// `alreadyValid`: the bytes are part of a document validated before (a `JSONNode`'s): strings, objects and
    /// arrays are then skipped looking only at string ends and brackets (a third of the work; the accounting walks
    /// a response's members this way after one validating pass). On bytes that are not valid JSON after all it
    /// still stays within `end` and throws rather than reading past it.
    mutating func skipValue(alreadyValid: Bool = false) throws(JSONSyntaxError) -> JSONKind {
        skipWhitespace()
        guard index < end else { throw unexpected() }
        switch bytes[index] {
        case UInt8(ascii: "{"):
            if alreadyValid { try skipValidatedContainer() } else { try skipObject() }
            return .object
        case UInt8(ascii: "["):
            if alreadyValid { try skipValidatedContainer() } else { try skipArray() }
            return .array
        case UInt8(ascii: "\""):
            _ = try skipString(alreadyValid: alreadyValid)
            return .string
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            try skipNumber()
            return .number
        default:
            throw unexpected()
        }
    }

    /// Moves past the validated object or array whose opening bracket is at `index`.
    mutating func skipValidatedContainer() throws(JSONSyntaxError) {
        var depth = 0
        while index < end {
            switch bytes[index] {
            case UInt8(ascii: "\""):
                _ = try skipString(alreadyValid: true)
                continue
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
                if depth == 0 {
                    index += 1
                    return
                }
            default:
                break
            }
            index += 1
        }
        throw error("unterminated object or array")
    }

    /// Whether any of eight bytes is a quote or a backslash (exact: no false answers either way).
    @inline(__always)
    static func hasQuoteOrBackslash(_ x: UInt64) -> Bool {
        (SWAR.bytesEqual(x, 0x22) | SWAR.bytesEqual(x, 0x5C)) != 0
    }

    mutating func literal(_ word: StaticString) throws(JSONSyntaxError) {
        let n = word.utf8CodeUnitCount
        guard end - index >= n else { throw error("invalid literal") }
        let w = word.utf8Start
        for k in 0..<n where bytes[index + k] != w[k] {
            throw error("invalid literal", at: index + k)
        }
        index += n
    }

    mutating func enter() throws(JSONSyntaxError) {
        depth += 1
        if depth > Self.maxDepth { throw error("nesting deeper than \(Self.maxDepth) levels") }
    }

    mutating func skipObject() throws(JSONSyntaxError) {
        try walkObject { _, s throws(JSONSyntaxError) in _ = try s.skipValue() }
    }

    func unexpectedKey() -> JSONSyntaxError {
        index < end ? error("expected a string key in object") : unexpected()
    }

    /// After a member or element: consumes `,` (returns false) or the closing byte (returns true).
    mutating func endOfContainer(_ close: UInt8) throws(JSONSyntaxError) -> Bool {
        skipWhitespace()
        guard index < end else { throw unexpected() }
        let c = bytes[index]
        if c == UInt8(ascii: ",") {
            index += 1
            return false
        }
        if c == close {
            index += 1
            return true
        }
        throw close == UInt8(ascii: "}") ? error("expected ',' or '}' in object") : error("expected ',' or ']' in array")
    }

    mutating func skipArray() throws(JSONSyntaxError) {
        try walkArray { s throws(JSONSyntaxError) in _ = try s.skipValue() }
    }

    /// Validates a string starting at the opening quote (with `alreadyValid`, only finds its end, see
    /// ``skipValue(alreadyValid:)``). Returns whether it contains escapes.
    mutating func skipString(alreadyValid: Bool = false) throws(JSONSyntaxError) -> Bool {
        index += 1  // opening quote
        var escaped = false
        let base = bytes.baseAddress
        while index < end {
            // Eight bytes at a time that need no closer look: plain ASCII (no quote, backslash, control character or
            // non-ASCII byte), or in a validated string anything but a quote or backslash.
            if let base {
                while index + 8 <= end {
                    let w = base.loadUnaligned(fromByteOffset: index, as: UInt64.self)
                    guard alreadyValid ? !Self.hasQuoteOrBackslash(w) : Self.isPlainASCII(w) else { break }
                    index += 8
                }
            }
            guard index < end else { break }
            let c = bytes[index]
            if c == UInt8(ascii: "\"") {
                index += 1
                return escaped
            } else if c == UInt8(ascii: "\\") {
                escaped = true
                if alreadyValid { index += 2 } else { try skipEscape() }
            } else if alreadyValid || (c >= 0x20 && c < 0x80) {
                index += 1
            } else if c < 0x20 {
                throw error("unescaped control character in string")
            } else {
                try skipUTF8()
            }
        }
        index = min(index, end)
        throw error("unterminated string")
    }

    mutating func skipEscape() throws(JSONSyntaxError) {
        index += 1
        guard index < end else { throw error("unterminated string") }
        switch bytes[index] {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
            UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
            index += 1
        case UInt8(ascii: "u"):
            guard end - index >= 5 else { throw error("truncated \\u escape") }
            for k in 1...4 where hexValue(bytes[index + k]) == nil {
                throw error("invalid \\u escape", at: index + k)
            }
            index += 5
        default:
            throw error("invalid escape sequence")
        }
    }

    /// Eight bytes that are all plain ASCII inside a JSON string: no quote, backslash, control character or
    /// non-ASCII byte (may answer false for plain bytes next to a special one; never true for a special one).
    @inline(__always)
    static func isPlainASCII(_ x: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let q = x ^ (ones &* 0x22)
        let b = x ^ (ones &* 0x5C)
        let special = ((q &- ones) & ~q) | ((b &- ones) & ~b) | ((x &- ones &* 0x20) & ~x) | x
        return special & 0x8080_8080_8080_8080 == 0
    }

    /// Whether `bytes` are valid UTF-8, by the same rules as strings in a JSON document (RFC 3629).
    static func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var s = JSONScanner(bytes)
        while s.index < s.end {
            if s.bytes[s.index] < 0x80 {
                s.index += 1
            } else {
                do { try s.skipUTF8() } catch { return false }
            }
        }
        return true
    }

    /// Validates one multi-byte UTF-8 sequence (RFC 3629: no overlongs, no surrogates, at most U+10FFFF).

    mutating func skipUTF8() throws(JSONSyntaxError) {
        let c = bytes[index]
        let n: Int
        var lower: UInt8 = 0x80
        var upper: UInt8 = 0xBF
        switch c {
        case 0xC2...0xDF: n = 1
        case 0xE0:
            n = 2
            lower = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: n = 2
        case 0xED:
            n = 2
            upper = 0x9F
        case 0xF0:
            n = 3
            lower = 0x90
        case 0xF1...0xF3: n = 3
        case 0xF4:
            n = 3
            upper = 0x8F
        default: throw error("invalid UTF-8")
        }
        guard end - index > n else { throw error("invalid UTF-8") }
        let b1 = bytes[index + 1]
        guard b1 >= lower && b1 <= upper else { throw error("invalid UTF-8", at: index + 1) }
        for k in stride(from: 2, through: n, by: 1) where bytes[index + k] & 0xC0 != 0x80 {
            throw error("invalid UTF-8", at: index + k)
        }
        index += n + 1
    }

    mutating func skipNumber() throws(JSONSyntaxError) {
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < end else { throw error("invalid number") }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else if isDigit(bytes[index]) {
            while index < end && isDigit(bytes[index]) { index += 1 }
        } else {
            throw error("invalid number")
        }
        if index < end && bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard index < end && isDigit(bytes[index]) else { throw error("invalid number: digit expected after '.'") }
            while index < end && isDigit(bytes[index]) { index += 1 }
        }
        if index < end && (bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E")) {
            index += 1
            if index < end && (bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-")) { index += 1 }
            guard index < end && isDigit(bytes[index]) else { throw error("invalid number: digit expected in exponent") }
            while index < end && isDigit(bytes[index]) { index += 1 }
        }
    }

    /// True when the string at `range` (quotes included) equals `key` byte for byte (no escapes in `key`).

    func stringEquals(_ range: Range<Int>, _ key: StaticString) -> Bool {
        let n = key.utf8CodeUnitCount
        guard range.count == n + 2 else { return false }
        let k = key.utf8Start
        for j in 0..<n where bytes[range.lowerBound + 1 + j] != k[j] { return false }
        return true
    }

    /// Decodes the string at `range` (quotes included).
    func decodeString(_ range: Range<Int>, escaped: Bool) -> String {
        JSONStringRef(range: range, escaped: escaped).decode(bytes)
    }
}


func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }


func hexValue(_ c: UInt8) -> UInt32? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(c - UInt8(ascii: "0"))
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt32(c - UInt8(ascii: "a") + 10)
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt32(c - UInt8(ascii: "A") + 10)
    default: return nil
    }
}

/// JSON string escaping and unescaping.
public enum JSONString {
    /// Decodes the inside of a JSON string (no quotes). Lone surrogates become U+FFFD.
    public static func decode(_ raw: UnsafeRawBufferPointer, hasEscapes: Bool) -> String {
        // Callers that do not know say `hasEscapes: true`; most strings have none and need no scratch array.
        if raw.isEmpty { return "" }
        if !hasEscapes || memchr(raw.baseAddress!, 0x5C, raw.count) == nil { return String(decoding: raw, as: UTF8.self) }
        return String(decoding: decodeBytes(raw, hasEscapes: true), as: UTF8.self)
    }

    /// Decodes the inside of a JSON string (no quotes) into its UTF-8 bytes. Lone surrogates become U+FFFD. The
    /// runs between escapes are copied whole.
    public static func decodeBytes(_ raw: UnsafeRawBufferPointer, hasEscapes: Bool) -> [UInt8] {
        let n = raw.count
        guard n > 0, let base = raw.baseAddress else { return [] }
        if !hasEscapes { return Array(raw) }
        return [UInt8](unsafeUninitializedCapacity: n) { out, count in
            // The decoded text is never longer than its escaped form (an escape of 2, 6 or 12 bytes gives 1 to 4).
            let dst = out.baseAddress!
            var o = 0
            var i = 0
            while i < n {
                // Copy up to the next backslash at once.
                let rest = n - i
                let hit = memchr(base + i, 0x5C, rest)
                let run = hit.map { UnsafeRawPointer($0) - (base + i) } ?? rest
                if run > 0 {
                    (dst + o).initialize(from: (base + i).assumingMemoryBound(to: UInt8.self), count: run)
                    o += run
                    i += run
                }
                if i >= n { break }
                // An escape (the scanner has validated the string, so it is complete).
                guard i + 1 < n else { break }
                let e = raw[i + 1]
                i += 2
                switch e {
                case UInt8(ascii: "b"): dst[o] = 0x08; o += 1
                case UInt8(ascii: "f"): dst[o] = 0x0C; o += 1
                case UInt8(ascii: "n"): dst[o] = 0x0A; o += 1
                case UInt8(ascii: "r"): dst[o] = 0x0D; o += 1
                case UInt8(ascii: "t"): dst[o] = 0x09; o += 1
                case UInt8(ascii: "u"):
                    guard i + 4 <= n else { i = n; break }
                    var u = hex4(raw, i)
                    i += 4
                    if (0xD800...0xDBFF).contains(u), i + 6 <= n, raw[i] == UInt8(ascii: "\\"),
                        raw[i + 1] == UInt8(ascii: "u")
                    {
                        let low = hex4(raw, i + 2)
                        if (0xDC00...0xDFFF).contains(low) {
                            u = 0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00)
                            i += 6
                        }
                    }
                    let scalar = Unicode.Scalar(u) ?? "\u{FFFD}"
                    for b in UTF8.encode(scalar)! {
                        dst[o] = b
                        o += 1
                    }
                default: dst[o] = e; o += 1  // \" \\ \/
                }
            }
            count = o
        }
    }

    static func hex4(_ raw: UnsafeRawBufferPointer, _ i: Int) -> UInt32 {
        var v: UInt32 = 0
        for k in 0..<4 { v = v << 4 | (hexValue(raw[i + k]) ?? 0) }
        return v
    }

    /// Appends `value` as a JSON string literal (with quotes). Non-ASCII stays raw UTF-8; `"`, `\` and control
    /// characters are escaped.
    public static func append(_ value: some StringProtocol, to out: inout [UInt8]) {
        var s = String(value)
        s.withUTF8 { append(utf8: UnsafeRawBufferPointer($0), to: &out) }
    }

    /// Appends UTF-8 bytes as a JSON string literal (with quotes); runs that need no escaping are copied whole.
    public static func append(utf8 bytes: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        out.reserveCapacity(out.count + bytes.count + 2)
        out.append(UInt8(ascii: "\""))
        let p = UnsafeBufferPointer(start: bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), count: bytes.count)
        var start = 0
        var i = 0
        let n = p.count
        while i < n {
            if i + 8 <= n && JSONScanner.isPlainASCII(bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)) {
                i += 8
                continue
            }
            let c = p[i]
            if c >= 0x20 && c != UInt8(ascii: "\"") && c != UInt8(ascii: "\\") {
                i += 1
                continue
            }
            if i > start { out.append(contentsOf: UnsafeBufferPointer(rebasing: p[start..<i])) }
            out.append(0x5C)
            switch c {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case 0x0A: out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(UInt8(ascii: "r"))
            case 0x09: out.append(UInt8(ascii: "t"))
            default:
                out.append(UInt8(ascii: "u"))
                out.append(0x30)
                out.append(0x30)
                out.append(hexDigit(c >> 4))
                out.append(hexDigit(c & 0xF))
            }
            i += 1
            start = i
        }
        if n > start { out.append(contentsOf: UnsafeBufferPointer(rebasing: p[start..<n])) }
        out.append(UInt8(ascii: "\""))
    }

    @inline(__always)
    static func hexDigit(_ v: UInt8) -> UInt8 { v < 10 ? 0x30 + v : UInt8(ascii: "a") + v - 10 }

    /// `value` as a JSON string literal, quotes included.
    public static func quoted(_ value: some StringProtocol) -> String {
        var out = [UInt8]()
        out.reserveCapacity(value.utf8.count + 2)
        append(value, to: &out)
        return String(decoding: out, as: UTF8.self)
    }
}

/// Validation of JSON embedded in other text (prompt compression minifies JSON it finds in messages).
public enum JSONValidation {
    /// The end offset of the one JSON value at the start of `bytes` (leading whitespace allowed), or nil when
    /// no valid value starts there. Bytes after the value are not looked at.
    public static func valueEnd(_ bytes: UnsafeRawBufferPointer) -> Int? {
        var scanner = JSONScanner(bytes)
        do {
            _ = try scanner.skipValue()
            return scanner.index
        } catch {
            return nil
        }
    }
}

// MARK: - Walking while validating

extension JSONScanner {
    /// Walks the object whose `{` is at `index`, validating it: `body` gets each member's key and the scanner at
    /// the member's value, and must consume exactly that value (``skipValue(alreadyValid:)``, ``readString()``,
    /// ``readInt()`` or a nested walk). `index` ends just after the `}`. One pass: a reader that walks into the
    /// values it wants and skips the others reads every byte once, where taking `JSONNode`s and then walking them
    /// reads each nested byte once per level.
    @inline(__always)
    mutating func walkObject(_ body: (JSONKey, inout JSONScanner) throws(JSONSyntaxError) -> Void)
        throws(JSONSyntaxError)
    {
        try enter()
        index += 1  // {
        if peek() == UInt8(ascii: "}") {
            index += 1
            depth -= 1
            return
        }
        while true {
            skipWhitespace()
            guard index < end, bytes[index] == UInt8(ascii: "\"") else { throw unexpectedKey() }
            let keyStart = index
            let escaped = try skipString()
            let key = JSONKey(raw: UnsafeRawBufferPointer(rebasing: bytes[(keyStart + 1)..<(index - 1)]), escaped: escaped)
            try expect(UInt8(ascii: ":"))
            skipWhitespace()
            try body(key, &self)
            if try endOfContainer(UInt8(ascii: "}")) { break }
        }
        depth -= 1
    }

    /// Walks the JSON object that `bytes` holds whole (whitespace around it allowed), validating it (see
    /// ``walkObject(_:)``). False when the bytes are not one valid JSON object; `body` may have been called for
    /// the members before the fault.
    static func walkDocument(_ bytes: UnsafeRawBufferPointer,
                             _ body: (JSONKey, inout JSONScanner) throws(JSONSyntaxError) -> Void) -> Bool
    {
        var s = JSONScanner(bytes)
        do throws(JSONSyntaxError) {
            s.skipWhitespace()
            guard s.index < s.end, bytes[s.index] == UInt8(ascii: "{") else { return false }
            try s.walkObject(body)
            s.skipWhitespace()
            return s.index == s.end
        } catch {
            return false
        }
    }

    /// Walks the array whose `[` is at `index`, validating it; `body` consumes one element per call (see
    /// ``walkObject(_:)``).
    @inline(__always)
    mutating func walkArray(_ body: (inout JSONScanner) throws(JSONSyntaxError) -> Void) throws(JSONSyntaxError) {
        try enter()
        index += 1  // [
        if peek() == UInt8(ascii: "]") {
            index += 1
            depth -= 1
            return
        }
        while true {
            skipWhitespace()
            try body(&self)
            if try endOfContainer(UInt8(ascii: "]")) { break }
        }
        depth -= 1
    }

    /// The value at `index` walked as an object when it is one, else validated and skipped.
    @inline(__always)
    mutating func walkObjectOrSkip(_ body: (JSONKey, inout JSONScanner) throws(JSONSyntaxError) -> Void)
        throws(JSONSyntaxError)
    {
        skipWhitespace()
        if index < end && bytes[index] == UInt8(ascii: "{") { try walkObject(body) } else { _ = try skipValue() }
    }

    /// The value at `index` walked as an array when it is one, else validated and skipped.
    @inline(__always)
    mutating func walkArrayOrSkip(_ body: (inout JSONScanner) throws(JSONSyntaxError) -> Void)
        throws(JSONSyntaxError)
    {
        skipWhitespace()
        if index < end && bytes[index] == UInt8(ascii: "[") { try walkArray(body) } else { _ = try skipValue() }
    }

    /// Consumes the value at `index`; when it is a string, where it is (quotes included) and whether it has escapes.
    mutating func readString() throws(JSONSyntaxError) -> JSONStringRef? {
        skipWhitespace()
        guard index < end, bytes[index] == UInt8(ascii: "\"") else {
            _ = try skipValue()
            return nil
        }
        let start = index
        let escaped = try skipString()
        return JSONStringRef(range: start..<index, escaped: escaped)
    }

    /// Consumes the value at `index`; its value when it is a number written as a plain integer that fits an `Int`.
    mutating func readInt() throws(JSONSyntaxError) -> Int? {
        skipWhitespace()
        let start = index
        guard try skipValue() == .number else { return nil }
        return JSONNumber.int(bytes, start..<index)
    }
}

/// A string value found by a walk: its range in the walked bytes (quotes included) and whether it has escapes.
struct JSONStringRef {
    let range: Range<Int>
    let escaped: Bool

    func decode(_ bytes: UnsafeRawBufferPointer) -> String {
        JSONString.decode(UnsafeRawBufferPointer(rebasing: bytes[(range.lowerBound + 1)..<(range.upperBound - 1)]),
                          hasEscapes: escaped)
    }
}

enum JSONNumber {
    /// The value of the number at `range` of `bytes` when it is written as a plain integer that fits an `Int`.
    static func int(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
        var i = range.lowerBound
        let end = range.upperBound
        let negative = i < end && bytes[i] == UInt8(ascii: "-")
        if negative { i += 1 }
        guard i < end else { return nil }
        var n = 0
        while i < end {
            let d = Int(bytes[i]) &- Int(UInt8(ascii: "0"))
            guard d >= 0 && d <= 9 else { return nil }
            let (m, o1) = n.multipliedReportingOverflow(by: 10)
            let (a, o2) = negative ? m.subtractingReportingOverflow(d) : m.addingReportingOverflow(d)
            if o1 || o2 { return nil }
            n = a
            i += 1
        }
        return n
    }
}
