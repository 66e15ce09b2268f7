/// A compiled shell-style pattern, matched against UTF-8 bytes.
///
/// Syntax: `*` any run of bytes (also empty), `?` exactly one byte, `[abc]` / `[a-z]` / `[!a-z]` one byte of
/// (not) the set, `\x` the byte `x` literally. Everything else matches itself; matching is case-sensitive.
/// Model names and app ids are ASCII, so "byte" is "character" for them.
///
/// Compilation picks the cheapest matcher: a pattern without metacharacters is an exact string compare,
/// `abc*` a prefix compare, `*abc` a suffix compare, `*abc*` a substring search, `ab*cd` prefix plus suffix;
/// only patterns with `?`, classes or several stars use the general backtracking matcher (linear in practice).
public struct Glob: Sendable, Hashable, CustomStringConvertible {
    enum Kind: Sendable, Hashable {
        case anything
        case exact(String)
        case prefix([UInt8])
        case suffix([UInt8])
        case contains([UInt8])
        case prefixSuffix([UInt8], [UInt8])
        case general([Token])
    }

    enum Token: Sendable, Hashable {
        case byte(UInt8)
        case one
        case run
        /// 256-bit set as four words.
        case set(UInt64, UInt64, UInt64, UInt64, negated: Bool)
    }

    /// The matcher's data in one object: copying a Glob is one retain, and the hot path reads fields in place.
    final class Storage: Sendable {
        let pattern: String
        let kind: Kind
        let tag: UInt8
        let head: [UInt8]
        let tail: [UInt8]
        let tokens: [Token]
        init(pattern: String, kind: Kind, tag: UInt8, head: [UInt8], tail: [UInt8], tokens: [Token]) {
            self.pattern = pattern
            self.kind = kind
            self.tag = tag
            self.head = head
            self.tail = tail
            self.tokens = tokens
        }
    }

    let storage: Storage
    /// The source pattern.
    public var pattern: String { storage.pattern }
    var kind: Kind { storage.kind }
    var tag: UInt8 { storage.tag }

    public static func == (a: Glob, b: Glob) -> Bool { a.pattern == b.pattern }
    public func hash(into hasher: inout Hasher) { hasher.combine(pattern) }

    /// Why a pattern does not compile.
    public struct SyntaxError: Error, Sendable, Hashable, CustomStringConvertible {
        /// 0-based byte offset in the pattern.
        public var offset: Int
        public var reason: String
        public var description: String { "\(reason) at offset \(offset)" }
    }

    /// Compiles `pattern`; throws on an unterminated `[`, an empty set `[]`, a reversed range `[z-a]` or a
    /// trailing `\`.
    public init(_ pattern: String) throws(SyntaxError) {
        let bytes = Array(pattern.utf8)
        var tokens: [Token] = []
        var i = 0
        while i < bytes.count {
            let c = bytes[i]
            switch c {
            case UInt8(ascii: "*"):
                if tokens.last != .run { tokens.append(.run) }
                i += 1
            case UInt8(ascii: "?"):
                tokens.append(.one)
                i += 1
            case UInt8(ascii: "\\"):
                guard i + 1 < bytes.count else { throw SyntaxError(offset: i, reason: "trailing '\\'") }
                tokens.append(.byte(bytes[i + 1]))
                i += 2
            case UInt8(ascii: "["):
                let start = i
                i += 1
                var negated = false
                if i < bytes.count, bytes[i] == UInt8(ascii: "!") || bytes[i] == UInt8(ascii: "^") {
                    negated = true
                    i += 1
                }
                var words: [UInt64] = [0, 0, 0, 0]
                var members = 0
                var closed = false
                while i < bytes.count {
                    var lo = bytes[i]
                    if lo == UInt8(ascii: "]") && members > 0 {
                        closed = true
                        i += 1
                        break
                    }
                    if lo == UInt8(ascii: "]") {
                        throw SyntaxError(offset: start, reason: "empty character set '[]'")
                    }
                    if lo == UInt8(ascii: "\\") {
                        guard i + 1 < bytes.count else { throw SyntaxError(offset: i, reason: "trailing '\\'") }
                        i += 1
                        lo = bytes[i]
                    }
                    var hi = lo
                    if i + 2 < bytes.count, bytes[i + 1] == UInt8(ascii: "-"), bytes[i + 2] != UInt8(ascii: "]") {
                        hi = bytes[i + 2]
                        guard hi >= lo else {
                            throw SyntaxError(offset: i, reason: "reversed range '\(Character(Unicode.Scalar(lo)))-\(Character(Unicode.Scalar(hi)))'")
                        }
                        i += 2
                    }
                    for b in lo...hi { words[Int(b >> 6)] |= 1 << UInt64(b & 63) }
                    members += 1
                    i += 1
                }
                guard closed else { throw SyntaxError(offset: start, reason: "unterminated '['") }
                tokens.append(.set(words[0], words[1], words[2], words[3], negated: negated))
            default:
                tokens.append(.byte(c))
                i += 1
            }
        }
        let kind = Self.classify(tokens, pattern: pattern)
        let parts: (UInt8, [UInt8], [UInt8], [Token])
        switch kind {
        case .anything: parts = (0, [], [], [])
        case .exact(let s): parts = (1, Array(s.utf8), [], [])
        case .prefix(let p): parts = (2, p, [], [])
        case .suffix(let p): parts = (3, [], p, [])
        case .contains(let m): parts = (4, m, [], [])
        case .prefixSuffix(let p, let q): parts = (5, p, q, [])
        case .general(let t): parts = (6, [], [], t)
        }
        self.storage = Storage(
            pattern: pattern, kind: kind, tag: parts.0, head: parts.1, tail: parts.2, tokens: parts.3)
    }

    /// True when the pattern has no metacharacters (it is an exact name).
    public var isLiteral: Bool {
        if case .exact = kind { return true }
        return false
    }

    /// The exact string when ``isLiteral``.
    public var literal: String? {
        if case .exact(let s) = kind { return s }
        return nil
    }

    public var description: String { pattern }

    static func classify(_ tokens: [Token], pattern: String) -> Kind {
        func literalBytes(_ slice: ArraySlice<Token>) -> [UInt8]? {
            var out: [UInt8] = []
            for t in slice {
                guard case .byte(let b) = t else { return nil }
                out.append(b)
            }
            return out
        }
        if tokens == [.run] { return .anything }
        if let all = literalBytes(tokens[...]) { return .exact(String(decoding: all, as: UTF8.self)) }
        let runs = tokens.indices.filter { tokens[$0] == .run }
        if runs.count == 1, let r = runs.first {
            if let head = literalBytes(tokens[..<r]), let tail = literalBytes(tokens[(r + 1)...]) {
                if tail.isEmpty { return .prefix(head) }
                if head.isEmpty { return .suffix(tail) }
                return .prefixSuffix(head, tail)
            }
        }
        if runs.count == 2, runs[0] == 0, runs[1] == tokens.count - 1, tokens.count > 2,
            let mid = literalBytes(tokens[1..<(tokens.count - 1)])
        {
            return .contains(mid)
        }
        return .general(tokens)
    }

    /// Whether `text` matches the whole pattern.
    @inlinable
    public func matches(_ text: String) -> Bool {
        _matches(text)
    }

    @usableFromInline
    func _matches(_ text: String) -> Bool {
        switch tag {
        case 0: return true
        default:
            // withUTF8 gives native strings' bytes in place and copies small (inline) strings to the stack: no
            // heap allocation either way.
            var copy = text
            return copy.withUTF8 { matchBytes($0) }
        }
    }

    func matchBytes(_ s: UnsafeBufferPointer<UInt8>) -> Bool {
        let st = storage
        let head = st.head
        let tail = st.tail
        switch st.tag {
        case 0: return true
        case 1: return head.elementsEqual(s)
        case 2: return Self.hasPrefix(s, head)
        case 3: return Self.hasSuffix(s, tail)
        case 4: return Self.contains(s, head)
        case 5: return s.count >= head.count + tail.count && Self.hasPrefix(s, head) && Self.hasSuffix(s, tail)
        default: return Self.matchGeneral(st.tokens, s)
        }
    }

    static func hasPrefix(_ s: UnsafeBufferPointer<UInt8>, _ p: [UInt8]) -> Bool {
        guard s.count >= p.count else { return false }
        for i in 0..<p.count where s[i] != p[i] { return false }
        return true
    }

    static func hasSuffix(_ s: UnsafeBufferPointer<UInt8>, _ p: [UInt8]) -> Bool {
        guard s.count >= p.count else { return false }
        let off = s.count - p.count
        for i in 0..<p.count where s[off + i] != p[i] { return false }
        return true
    }

    static func contains(_ s: UnsafeBufferPointer<UInt8>, _ m: [UInt8]) -> Bool {
        if m.isEmpty { return true }
        guard s.count >= m.count else { return false }
        var start = 0
        outer: while start + m.count <= s.count {
            for i in 0..<m.count where s[start + i] != m[i] {
                start += 1
                continue outer
            }
            return true
        }
        return false
    }

    static func tokenMatches(_ t: Token, _ b: UInt8) -> Bool {
        switch t {
        case .byte(let x): return x == b
        case .one: return true
        case .run: return true
        case .set(let w0, let w1, let w2, let w3, let negated):
            let word: UInt64
            switch b >> 6 {
            case 0: word = w0
            case 1: word = w1
            case 2: word = w2
            default: word = w3
            }
            return ((word >> UInt64(b & 63)) & 1 == 1) != negated
        }
    }

    /// Classic wildcard matching with one backtrack point (the last `*`): O(n*m) worst case, linear usually.
    static func matchGeneral(_ p: [Token], _ s: UnsafeBufferPointer<UInt8>) -> Bool {
        var pi = 0
        var si = 0
        var starP = -1
        var starS = 0
        while si < s.count {
            if pi < p.count, p[pi] == .run {
                starP = pi
                starS = si
                pi += 1
            } else if pi < p.count, tokenMatches(p[pi], s[si]) {
                pi += 1
                si += 1
            } else if starP >= 0 {
                pi = starP + 1
                starS += 1
                si = starS
            } else {
                return false
            }
        }
        while pi < p.count, p[pi] == .run { pi += 1 }
        return pi == p.count
    }
}
