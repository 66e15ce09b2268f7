import Foundation

/// English word frequencies (wordfreq's Zipf scale: log10 of occurrences per billion words, plus 9) for
/// self-information: the rarer a word, the more of the text's meaning it carries. "the" is 7.7, "physics" 4.6,
/// "röntgen" 2.0; a word not in the table is rarer than every listed one.
///
/// Lookups go by ``WordHash`` (64-bit FNV-1a of the lowercased word) in an open-addressed table: no allocation, no
/// string building on the hot path.
public final class Lexicon: Sendable {
    /// Keys (0 = empty slot) and Zipf values times 10.
    private let keys: [UInt64]
    private let values: [UInt8]
    private let mask: Int
    public let count: Int
    /// The words of Zipf >= 5.0 ("the", "of", "first", "new"; a few hundred), in a table small enough to stay in
    /// cache: the compressor asks this for every word next to a name.
    private let frequent: WordSet
    static let frequentZipf10: UInt8 = 50

    /// The Zipf value assumed for words that are not in the table.
    public static let unknownZipf: Double = 2.0

    /// Builds a lexicon from `word<TAB>zipf` lines.
    public init(tsv: [UInt8]) {
        var entries: [(UInt64, UInt8)] = []
        entries.reserveCapacity(tsv.count / 12)
        var i = 0
        let n = tsv.count
        while i < n {
            var j = i
            while j < n && tsv[j] != 0x09 && tsv[j] != 0x0A { j += 1 }
            let wordEnd = j
            var value = 0.0
            if j < n && tsv[j] == 0x09 {
                j += 1
                var whole = 0.0
                var frac = 0.0
                var scale = 0.1
                var seenDot = false
                while j < n && tsv[j] != 0x0A {
                    let c = tsv[j]
                    if c == UInt8(ascii: ".") {
                        seenDot = true
                    } else if c >= 0x30 && c <= 0x39 {
                        if seenDot {
                            frac += Double(c - 0x30) * scale
                            scale /= 10
                        } else {
                            whole = whole * 10 + Double(c - 0x30)
                        }
                    }
                    j += 1
                }
                value = whole + frac
            }
            if wordEnd > i {
                let h = tsv.withUnsafeBufferPointer { WordHash.of($0.baseAddress! + i, wordEnd - i) }
                entries.append((h, UInt8(max(0, min(255, (value * 10).rounded())))))
            }
            i = j + 1
        }
        var size = 1
        while size < entries.count * 2 { size <<= 1 }
        var keys = [UInt64](repeating: 0, count: size)
        var values = [UInt8](repeating: 0, count: size)
        let mask = size - 1
        for (h, v) in entries {
            var slot = Int(truncatingIfNeeded: h) & mask
            while keys[slot] != 0 && keys[slot] != h { slot = (slot + 1) & mask }
            if keys[slot] == 0 {  // first (most frequent) spelling wins
                keys[slot] = h
                values[slot] = v
            }
        }
        self.keys = keys
        self.values = values
        self.mask = mask
        self.count = entries.count
        var frequentHashes: [UInt64] = []
        for slot in keys.indices where keys[slot] != 0 && values[slot] >= Self.frequentZipf10 {
            frequentHashes.append(keys[slot])
        }
        self.frequent = WordSet(hashes: frequentHashes)
    }

    /// The Zipf value of the word with hash `h`, or nil when it is not listed.
    @inline(__always)
    public func zipf(_ h: UInt64) -> Double? {
        let v = zipf10(h)
        return v == 0 ? nil : Double(v) / 10
    }

    /// The Zipf value times 10 (0: not listed).
    /// Whether the word with hash `h` has a Zipf value of at least 5.0 (same as `zipf10(h) >= 50`).
    @inline(__always)
    public func isFrequent(_ h: UInt64) -> Bool { frequent.contains(h) }

    @inline(__always)
    public func zipf10(_ h: UInt64) -> UInt8 {
        keys.withUnsafeBufferPointer { k in
            var slot = Int(truncatingIfNeeded: h) & mask
            while true {
                let key = k[slot]
                if key == h { return values[slot] }
                if key == 0 { return 0 }
                slot = (slot + 1) & mask
            }
        }
    }

    /// Self-information of a word on a 0...8 scale (8 minus its Zipf value): ~0.3 for "the", 6 for unknown words.
    @inline(__always)
    public func information(_ h: UInt64) -> Double {
        max(0, 8 - (zipf(h) ?? Self.unknownZipf))
    }

    /// The shipped table (`Resources/wordfreq-en.tsv`, 40,000 words), loaded on first use; empty when missing.
    public static let shared: Lexicon = {
        guard let url = Bundle.module.url(forResource: "wordfreq-en", withExtension: "tsv", subdirectory: "Resources"),
            let data = try? Data(contentsOf: url)
        else { return Lexicon(tsv: []) }
        return Lexicon(tsv: [UInt8](data))
    }()
}

/// Hashes of words as the compressor compares them: ASCII letters lowercased, other bytes as they are.
public enum WordHash {
    @inline(__always)
    public static func of(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for i in 0..<n {
            var c = p[i]
            if c >= 0x41 && c <= 0x5A { c |= 0x20 }
            h = (h ^ UInt64(c)) &* 0x0000_0100_0000_01B3
        }
        return h == 0 ? 1 : h
    }

    public static func of(_ s: String) -> UInt64 {
        var copy = s
        return copy.withUTF8 { b in b.count == 0 ? of(UnsafePointer(bitPattern: 1)!, 0) : of(b.baseAddress!, b.count) }
    }

    /// The hash of the word's light stem: lowercased, a trailing possessive `'s` dropped, plurals folded
    /// ("cities" -> "city", "prizes" -> "prize", "glass" stays), and the regular verb endings -ed, -ied and -ing
    /// ("filmed" -> "film", "married" -> "marry", "stopped" -> "stop", "singing" -> "sing"; "need", "thing" stay).
    /// Used to match question terms in the text.
    @inline(__always)
    public static func stem(_ p: UnsafePointer<UInt8>, _ n0: Int) -> UInt64 {
        var n = n0
        if n > 2 && p[n - 2] == UInt8(ascii: "'") && (p[n - 1] | 0x20) == UInt8(ascii: "s") { n -= 2 }
        if n > 4 && (p[n - 3] | 0x20) == UInt8(ascii: "i") && (p[n - 2] | 0x20) == UInt8(ascii: "e")
            && (p[n - 1] | 0x20) == UInt8(ascii: "s")
        {
            // "cities" -> "city"
            var h = of(p, n - 3)
            h = (h ^ UInt64(UInt8(ascii: "y"))) &* 0x0000_0100_0000_01B3
            return h == 0 ? 1 : h
        }
        @inline(__always) func lower(_ k: Int) -> UInt8 { p[k] | 0x20 }
        if n > 4 && lower(n - 3) == UInt8(ascii: "i") && lower(n - 2) == UInt8(ascii: "e")
            && lower(n - 1) == UInt8(ascii: "d")
        {
            // "married" -> "marry"
            var h = of(p, n - 3)
            h = (h ^ UInt64(UInt8(ascii: "y"))) &* 0x0000_0100_0000_01B3
            return h == 0 ? 1 : h
        }
        var m = n
        if n > 4 && lower(n - 2) == UInt8(ascii: "e") && lower(n - 1) == UInt8(ascii: "d")
            && lower(n - 3) != UInt8(ascii: "e")
        {
            m = n - 2  // "filmed" -> "film"
        } else if n > 5 && lower(n - 3) == UInt8(ascii: "i") && lower(n - 2) == UInt8(ascii: "n")
            && lower(n - 1) == UInt8(ascii: "g")
        {
            m = n - 3  // "singing" -> "sing"
        }
        if m < n {
            // A doubled final consonant goes too ("stopped" -> "stop"), but not l, s, z ("called", "passed").
            let a = lower(m - 1)
            let vowel = a == 0x61 || a == 0x65 || a == 0x69 || a == 0x6F || a == 0x75
            if m > 2 && a == lower(m - 2) && !vowel && a != UInt8(ascii: "l") && a != UInt8(ascii: "s")
                && a != UInt8(ascii: "z")
            {
                m -= 1
            }
            return of(p, m)
        }
        if n > 3 && (p[n - 1] | 0x20) == UInt8(ascii: "s") && (p[n - 2] | 0x20) != UInt8(ascii: "s")
            && (p[n - 2] | 0x20) != UInt8(ascii: "u") && (p[n - 2] | 0x20) != UInt8(ascii: "i")
        {
            n -= 1
        }
        return of(p, n)
    }
}

/// Function words that never count as question terms.
enum StopWords {
    static let list: [String] = """
        a about above after again against all am an and any are as at be because been before being below between \
        both but by can cannot could did do does doing down during each few for from further had has have having he \
        her here hers herself him himself his how i if in into is it its itself me more most my myself no nor not of \
        off on once only or other ought our ours ourselves out over own same she should so some such than that the \
        their theirs them themselves then there these they this those through to too under until up very was we were \
        what when where which while who whom why will with would you your yours yourself yourselves whose also \
        s t get got gets name named
        """.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)

    static let hashes: Set<UInt64> = Set(list.map { WordHash.of($0) })
}
