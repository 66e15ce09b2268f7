/// Hand-written scanners equivalent to tiktoken's pre-tokenization regexes (leftmost-first alternation with
/// backtracking, as fancy-regex runs them), over the UTF-8 bytes of a `String` (always valid UTF-8).
///
/// Each `next…(at:)` returns the end offset of the piece starting at `p`; both patterns match at every
/// position, so pieces tile the text.
struct PreTokenizer {
    let base: UnsafePointer<UInt8>
    let n: Int
    let classes: UnsafePointer<UInt8>

    init(base: UnsafePointer<UInt8>, count: Int) {
        self.base = base
        self.n = count
        self.classes = UnsafePointer(ScalarClassTable.shared.classes)
    }

    /// Class and UTF-8 length of the scalar at byte offset `i` (< n).
    @inline(__always)
    func info(_ i: Int) -> (cls: UInt8, len: Int) {
        let b0 = base[i]
        if b0 < 0x80 { return (classes[Int(b0)], 1) }
        var v: UInt32
        let len: Int
        if b0 < 0xE0 {
            v = UInt32(b0 & 0x1F) << 6 | UInt32(base[i + 1] & 0x3F)
            len = 2
        } else if b0 < 0xF0 {
            v = UInt32(b0 & 0x0F) << 12 | UInt32(base[i + 1] & 0x3F) << 6 | UInt32(base[i + 2] & 0x3F)
            len = 3
        } else {
            v = UInt32(b0 & 0x07) << 18 | UInt32(base[i + 1] & 0x3F) << 12
            v |= UInt32(base[i + 2] & 0x3F) << 6 | UInt32(base[i + 3] & 0x3F)
            len = 4
        }
        if v < ScalarClassTable.tableLimit { return (classes[Int(v)], len) }
        return (ScalarClass.compute(v), len)
    }

    /// End of the run of scalars, from `i`, whose class intersects `mask`.
    @inline(__always)
    func runEnd(_ i: Int, anyOf mask: UInt8) -> Int {
        var j = i
        while j < n {
            let (c, l) = info(j)
            if c & mask == 0 { break }
            j += l
        }
        return j
    }

    /// End of the run of scalars, from `i`, whose class does not intersect `mask`.
    @inline(__always)
    func runEnd(_ i: Int, noneOf mask: UInt8) -> Int {
        var j = i
        while j < n {
            let (c, l) = info(j)
            if c & mask != 0 { break }
            j += l
        }
        return j
    }

    /// End of a run of `\r`, `\n` (and `/` if `slash`) bytes from `i`.
    @inline(__always)
    func newlineRunEnd(_ i: Int, slash: Bool) -> Int {
        var j = i
        while j < n {
            let b = base[j]
            if b == 0x0A || b == 0x0D || (slash && b == 0x2F) { j += 1 } else { break }
        }
        return j
    }

    /// `'(?i:s|t|re|ve|m|ll|d)` at `w` (case-insensitive with Unicode simple case folding, as the regex crate
    /// does: `s` also matches U+017F LATIN SMALL LETTER LONG S): the end of the match, or -1.
    @inline(__always)
    func contractionEnd(_ w: Int) -> Int {
        guard w + 1 < n, base[w] == 0x27 else { return -1 }
        let c = base[w + 1]
        switch c | 0x20 {
        case 0x73, 0x74, 0x6D, 0x64:  // s t m d
            return w + 2
        case 0x72, 0x76:  // r v -> e
            if w + 2 < n, base[w + 2] | 0x20 == 0x65 { return w + 3 }
            return -1
        case 0x6C:  // l -> l
            if w + 2 < n, base[w + 2] | 0x20 == 0x6C { return w + 3 }
            return -1
        default:
            if c == 0xC5, w + 2 < n, base[w + 2] == 0xBF { return w + 3 }  // ſ
            return -1
        }
    }

    /// Whitespace tail shared by both patterns. Returns the end for a run starting at `p`:
    /// `lastNewline + 1` if the run holds `\r`/`\n` (`\s*[\r\n]`), the whole run at the end of the text,
    /// the run less its last scalar if it has two or more (`\s+(?!\S)`), else the single scalar.
    @inline(__always)
    func whitespaceEnd(_ p: Int, newlineFirst: Bool) -> Int {
        var j = p
        var lastNewline = -1
        var lastStart = p
        var scalars = 0
        while j < n {
            let (c, l) = info(j)
            if c & ScalarClass.whitespace == 0 { break }
            if c & ScalarClass.crlf != 0 { lastNewline = j }
            lastStart = j
            j += l
            scalars += 1
        }
        if newlineFirst {
            if lastNewline >= 0 { return lastNewline + 1 }
            if j == n { return n }
        } else {
            if j == n { return n }
            if lastNewline >= 0 { return lastNewline + 1 }
        }
        return scalars >= 2 ? lastStart : j
    }

    // MARK: cl100k_base

    /// `'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s`
    @inline(__always)
    func nextCl100k(at p: Int) -> Int {
        let b0 = base[p]
        if b0 == 0x27 {
            let e = contractionEnd(p)
            if e >= 0 { return e }
        }
        let (c0, l0) = info(p)
        if c0 & ScalarClass.letter != 0 {
            return runEnd(p + l0, anyOf: ScalarClass.letter)
        }
        if c0 & ScalarClass.notPrefix == 0, p + l0 < n {
            let (c1, l1) = info(p + l0)
            if c1 & ScalarClass.letter != 0 { return runEnd(p + l0 + l1, anyOf: ScalarClass.letter) }
        }
        if c0 & ScalarClass.number != 0 {
            var j = p + l0
            for _ in 0..<2 where j < n {
                let (c, l) = info(j)
                if c & ScalarClass.number == 0 { break }
                j += l
            }
            return j
        }
        if b0 == 0x20, p + 1 < n {
            let (c1, l1) = info(p + 1)
            if c1 & ScalarClass.notPunct == 0 {
                return newlineRunEnd(runEnd(p + 1 + l1, noneOf: ScalarClass.notPunct), slash: false)
            }
        }
        if c0 & ScalarClass.notPunct == 0 {
            return newlineRunEnd(runEnd(p + l0, noneOf: ScalarClass.notPunct), slash: false)
        }
        return whitespaceEnd(p, newlineFirst: false)
    }

    // MARK: o200k_base

    /// `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?`
    /// starting at `s`: the end, or -1.
    @inline(__always)
    func o200kLowerWord(from s: Int) -> Int {
        var u = s
        var lastLowerEnd = -1
        while u < n {
            let (c, l) = info(u)
            if c & ScalarClass.o200kUpper == 0 {
                if c & ScalarClass.o200kLower != 0 {
                    // The greedy upper run stops on an Ll: the lower run takes over from here. ASCII letters a-z
                    // first (the only ASCII scalars of the class), the general scan only past a non-ASCII byte.
                    var a = u + l
                    while a < n && base[a] &- 0x61 < 26 { a += 1 }
                    let w = a < n && base[a] >= 0x80 ? runEnd(a, anyOf: ScalarClass.o200kLower) : a
                    let e = contractionEnd(w)
                    return e >= 0 ? e : w
                }
                break
            }
            if c & ScalarClass.o200kLower != 0 { lastLowerEnd = u + l }
            u += l
        }
        // Backtrack the upper run to its last Lm/Lo/M scalar, which then is the whole lower run.
        guard lastLowerEnd >= 0 else { return -1 }
        let e = contractionEnd(lastLowerEnd)
        return e >= 0 ? e : lastLowerEnd
    }

    /// `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?`
    /// starting at `s`: the end, or -1.
    @inline(__always)
    func o200kUpperWord(from s: Int) -> Int {
        let u = runEnd(s, anyOf: ScalarClass.o200kUpper)
        if u == s { return -1 }
        let w = runEnd(u, anyOf: ScalarClass.o200kLower)
        let e = contractionEnd(w)
        return e >= 0 ? e : w
    }

    /// The common case of o200k's first alternative, all ASCII: an optional one-byte prefix (space, punctuation),
    /// at most one capital, then lowercase letters, ended by an ASCII byte that is neither a letter nor `'` (or the
    /// end of the text): the end, or -1 when the general scanner must decide (non-ASCII bytes, contractions, runs of
    /// capitals, digits, whitespace runs). Greedy `[a-z]+` stops only at a byte outside `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`,
    /// and a capital ("McDonald") is outside it, so the piece ends there as the regex's does.
    @inline(__always)
    func asciiWordEnd(_ p: Int) -> Int {
        var i = p
        let b0 = base[p]
        if b0 < 0x80 && classes[Int(b0)] & ScalarClass.notPrefix == 0 { i += 1 }
        guard i < n else { return -1 }
        var c = base[i]
        if c &- 0x41 < 26 {
            i += 1
            guard i < n else { return -1 }
            c = base[i]
        }
        guard c &- 0x61 < 26 else { return -1 }
        i += 1
        // Eight bytes at a time while all are lowercase ASCII letters (SWAR on the low seven bits, so no carry
        // crosses a byte: 0x80 marks a byte >= "a" after + 0x1F, a byte > "z" after + 0x05, and non-ASCII bytes
        // are masked out), then the first other byte's position.
        while i + 8 <= n {
            let w = UInt64(littleEndian: UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self))
            let y = w & 0x7F7F_7F7F_7F7F_7F7F
            let lower = (y &+ 0x1F1F_1F1F_1F1F_1F1F) & ~(y &+ 0x0505_0505_0505_0505) & ~w & 0x8080_8080_8080_8080
            let other = ~lower & 0x8080_8080_8080_8080
            if other != 0 {
                i += other.trailingZeroBitCount &>> 3
                let t = base[i]
                return t >= 0x80 || t == 0x27 ? -1 : i
            }
            i += 8
        }
        while i < n && base[i] &- 0x61 < 26 { i += 1 }
        if i == n { return n }
        let t = base[i]
        return t >= 0x80 || t == 0x27 ? -1 : i
    }

    /// The o200k pattern's seven alternatives:
    /// 1. `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?`
    /// 2. `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?`
    /// 3. `\p{N}{1,3}`  4. ` ?[^\s\p{L}\p{N}]+[\r\n/]*`  5. `\s*[\r\n]+`  6. `\s+(?!\S)`  7. `\s+`
    @inline(__always)
    func nextO200k(at p: Int) -> Int {
        let fast = asciiWordEnd(p)
        if fast >= 0 { return fast }
        let (c0, l0) = info(p)
        let canPrefix = c0 & ScalarClass.notPrefix == 0 && p + l0 < n
        if canPrefix || c0 & (ScalarClass.letter | ScalarClass.mark) != 0 {
            // Alternative 1, with the optional prefix taken first, then without it.
            if canPrefix {
                let e = o200kLowerWord(from: p + l0)
                if e >= 0 { return e }
            }
            if c0 & (ScalarClass.letter | ScalarClass.mark) != 0 {
                let e = o200kLowerWord(from: p)
                if e >= 0 { return e }
            }
            // Alternative 2.
            if canPrefix {
                let e = o200kUpperWord(from: p + l0)
                if e >= 0 { return e }
            }
            if c0 & (ScalarClass.letter | ScalarClass.mark) != 0 {
                let e = o200kUpperWord(from: p)
                if e >= 0 { return e }
            }
        }
        if c0 & ScalarClass.number != 0 {
            var j = p + l0
            for _ in 0..<2 where j < n {
                let (c, l) = info(j)
                if c & ScalarClass.number == 0 { break }
                j += l
            }
            return j
        }
        if base[p] == 0x20, p + 1 < n {
            let (c1, l1) = info(p + 1)
            if c1 & ScalarClass.notPunct == 0 {
                return newlineRunEnd(runEnd(p + 1 + l1, noneOf: ScalarClass.notPunct), slash: true)
            }
        }
        if c0 & ScalarClass.notPunct == 0 {
            return newlineRunEnd(runEnd(p + l0, noneOf: ScalarClass.notPunct), slash: true)
        }
        return whitespaceEnd(p, newlineFirst: true)
    }
}
