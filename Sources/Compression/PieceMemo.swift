#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CHints
import Tokenizer

extension TextCompressor {
    /// What pieces of up to 14 bytes were found to be (tokens, kind, flags, word hashes), by their bytes: a
    /// four-way table (a piece goes to the first free slot of its set of four, else over its own slot: pieces of
    /// one text that hash alike stay, instead of evicting each other on every call), one per thread, encoding and
    /// lexicon, kept across calls (``current(for:lexicon:)``). Prose repeats most of its pieces (" the", ",", " of"):
    /// within one 8k-token retrieval prompt about two thirds of the pieces are found here, across prompts more, and a
    /// piece found here is neither byte-pair encoded nor classified again (the word cache of byte-pair tokenizers,
    /// with the classification kept beside the count). A number's hash reads the digits around it, so its entry keeps
    /// the count and kind only and the hash is read again (``numberHash(_:_:_:digitsAt:)``); an entry depends
    /// on the piece's bytes, the encoding and the lexicon alone, so what a table holds never changes a result, only
    /// how fast it comes.
    ///
    /// An entry takes 32 bytes and a set two 64-byte cache lines. Beside the entries, each slot has a 16-bit tag
    /// (from the key's hash, 0 for an empty slot; 8 bytes a set, 32 KiB in all, which stays in the caches where the
    /// 512 KiB of entries do not): a lookup reads the set's tags first and then only the entry whose tag matches,
    /// and ``prefetch(_:)`` asks for that entry's line ahead of time, or for none when no tag matches (a new piece).
    /// On a sidecar's event loop the table is mostly out of the caches by the next request, and waiting for it was
    /// the largest single cost of compressing a prompt: with the first line of each set prefetched, the wait for a
    /// set's second line (its third and fourth pieces, and every slot a new piece is looked for in) remained.
    final class PieceMemo {
        /// `w0`, and `w1`'s low 48 bits: the piece's bytes (little-endian, zero-padded); `w1`'s top 16 bits:
        /// ``Meta``. `stem` holds, while the entry is pending (its count not known yet), the index of the new piece
        /// whose count and stem it takes (see ``TextCompressor/pieces(_:protecting:normalizing:total:)``).
        struct Entry {
            var w0: UInt64 = 0
            var w1: UInt64 = 0
            var hash: UInt64 = 0
            var stem: UInt64 = 0
        }

        /// The top 16 bits of `w1`: length (4 bits, 0: empty), tokens (4 bits; ``pending`` while the count is not
        /// known: a piece of up to 14 bytes has at most 14 tokens), kind (3 bits), then 5 bits: the flags
        /// ``classifyWithWords(_:_:_:_:tokens:)`` can set (leading space; then capital, frequent and number word for a
        /// word, terminal and question for punctuation) or, for a line break, its leading space and
        /// `breakStart - start`.
        enum Meta {
            static let lengthShift: UInt64 = 48
            static let tokensShift: UInt64 = 52
            static let kindShift: UInt64 = 56
            static let restShift: UInt64 = 59
            static let pending: UInt64 = 15
            /// The bits a lookup compares: the key bytes and the length.
            static let keyMask: UInt64 = (1 << 52) - 1
        }

        /// The longest piece kept.
        static let maxLength = 14

        /// 2^14 slots of 32 bytes (512 KiB a thread and encoding, allocated at a thread's first compression): an
        /// 8k-token prompt has ~2,300 distinct pieces of up to 14 bytes, and prompts share most of theirs. In pairs
        /// of slots, 26 of the suite's prompt's pieces found their pair taken by two others (7 with 2^15 slots), and
        /// as they evicted each other every call counted ~20 pieces again; byte-pair encoding them cost the sidecar
        /// ~3% of its CPU on that prompt (the vocabulary is out of the caches by then). In sets of four none is
        /// expected to overflow. (Measured earlier, direct-mapped, one ~8k-token prompt compressed 200 times, median
        /// in-process time: 2^12 slots 1,022 us, 2^13 935 us, 2^14 883 us, 2^15 846 us.)
        static let slotBits = 14

        private let entries: UnsafeMutablePointer<Entry>
        /// Per value of an entry's top 8 bits (kind, then the rest): the piece's ``Flags`` (low 16 bits) and kind (bits
        /// 16-23), so that a hit takes its flags from one load instead of a branch per flag (``flags(_:_:)``).
        private let decoded: UnsafeMutablePointer<UInt32>
        /// Per set, its four slots' tags (16 bits each, slot `4i + w` in bits `16w..<16w + 16` of `tags[i]`; 0: empty).
        private let tags: UnsafeMutablePointer<UInt64>
        private let shift: UInt64
        private let count: Int
        /// The word lists the entries' flags come from.
        let lexicon: ObjectIdentifier?
        /// This thread's last analysed texts for the same encoding and lexicon.
        let analyses = AnalysisCache()

        init(bits: Int = PieceMemo.slotBits, lexicon: Lexicon? = nil) {
            self.lexicon = lexicon.map { ObjectIdentifier($0) }
            count = 1 << bits
            entries = UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Entry>.stride, alignment: 64)
                .bindMemory(to: Entry.self, capacity: count)
            entries.initialize(repeating: Entry(), count: count)
            tags = UnsafeMutableRawPointer.allocate(byteCount: count / 4 * MemoryLayout<UInt64>.stride, alignment: 64)
                .bindMemory(to: UInt64.self, capacity: count / 4)
            tags.initialize(repeating: 0, count: count / 4)
            shift = UInt64(64 - bits)
            decoded = .allocate(capacity: 256)
            for v in 0..<256 {
                let kind = Kind(rawValue: UInt8(v & 7))
                decoded[v] = kind.map { UInt32(Self.flags(UInt8(v >> 3), $0).rawValue) | UInt32(v & 7) << 16 } ?? 0
            }
            long = .allocate(byteCount: 64 << Self.longBits, alignment: 64)
            long.initializeMemory(as: UInt8.self, repeating: 0, count: 64 << Self.longBits)
        }

        deinit {
            entries.deinitialize(count: count)
            UnsafeMutableRawPointer(entries).deallocate()
            UnsafeMutableRawPointer(tags).deallocate()
            decoded.deallocate()
            long.deallocate()
        }

        /// This thread's table for `encoding` and `lexicon` (made at the first call on the thread, made anew if
        /// another lexicon asks; freed with the thread).
        static func current(for encoding: Encoding, lexicon: Lexicon) -> PieceMemo {
            let set: PieceMemoSet
            if let p = pthread_getspecific(PieceMemoSet.key) {
                set = Unmanaged<PieceMemoSet>.fromOpaque(p).takeUnretainedValue()
            } else {
                set = PieceMemoSet()
                pthread_setspecific(PieceMemoSet.key, Unmanaged.passRetained(set).toOpaque())
            }
            return set.memo(for: encoding.name, lexicon: lexicon)
        }

        /// The piece's bytes `base[s..<s + length]` (`1...maxLength`) as two little-endian words, zero-padded, the
        /// length in the second's bits 48-51.
        @inline(__always)
        static func key(_ base: UnsafePointer<UInt8>, _ s: Int, _ length: Int, _ count: Int) -> (UInt64, UInt64) {
            var w0: UInt64 = 0
            var w1: UInt64 = 0
            if s + 16 <= count {
                let raw = UnsafeRawPointer(base + s)
                w0 = UInt64(littleEndian: raw.loadUnaligned(as: UInt64.self))
                w1 = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                if length < 8 {
                    w0 &= (1 &<< UInt64(length &* 8)) &- 1
                    w1 = 0
                } else {
                    w1 &= (1 &<< UInt64((length &- 8) &* 8)) &- 1
                }
            } else {
                for k in 0..<length {
                    let v = UInt64(base[s + k])
                    if k < 8 { w0 |= v &<< UInt64(k &* 8) } else { w1 |= v &<< UInt64((k &- 8) &* 8) }
                }
            }
            return (w0, w1 | UInt64(length) &<< Meta.lengthShift)
        }

        /// Where the key is looked for and stored: its own slot (bits 0..<16; its set is the four slots from
        /// `slot & ~3`) and its tag (15 bits, never 0, from bit 16: a probe fits an `Int32`).
        @inline(__always)
        func probe(_ key: (UInt64, UInt64)) -> Int {
            let h = (key.0 ^ (key.1 &* 0xC2B2_AE3D_27D4_EB4F)) &* 0x9E37_79B9_7F4A_7C15
            let tag = (h &>> 16) & 0x7FFF | 1
            return Int(truncatingIfNeeded: h &>> shift | tag &<< 16)
        }

        /// Bit 15 of a 16-bit lane of the probe's set's tags is set where the lane holds the probe's tag, and may be
        /// set in a lane above such a lane (the borrow of a zero lane): the lowest set lane is always a match, the
        /// others are checked against the entry's key.
        @inline(__always)
        private func matches(_ probe: Int) -> UInt64 {
            let x = tags[(probe & 0xFFFF) &>> 2] ^ (UInt64(truncatingIfNeeded: probe &>> 16) &* 0x0001_0001_0001_0001)
            return (x &- 0x0001_0001_0001_0001) & ~x & 0x8000_8000_8000_8000
        }

        /// Asks the memory system for all the tags (32 KiB) at once, without waiting for them: a long text's lookups
        /// read most of their lines, which by the next request on a sidecar's event loop are out of the caches; asked
        /// for together their misses overlap instead of each lookup waiting for its own.
        func prefetchTags() {
            let raw = UnsafeRawPointer(tags)
            for offset in stride(from: 0, to: count / 4 * MemoryLayout<UInt64>.stride, by: 64) {
                ao_prefetch(raw + offset)
            }
        }

        /// Asks the memory system for the line of the first entry whose tag matches the probe's, without waiting for
        /// it (for none when no tag matches: the piece is new, nothing to read).
        @inline(__always)
        @discardableResult
        func prefetch(_ probe: Int) -> UInt64 {
            let m = matches(probe)
            if m != 0 {
                ao_prefetch(UnsafeRawPointer(entries + (probe & 0xFFFF & ~3) + m.trailingZeroBitCount / 16))
            }
            return m
        }

        /// The piece at `start..<end` of `base[0..<count]` if the probe's set holds these bytes (the entries whose
        /// tags match are compared). Its `tokens` is `-(k + 1)` if the entry is pending on new piece `k`, whose stem
        /// the caller fills in.
        @inline(__always)
        func piece(
            at probe: Int, _ key: (UInt64, UInt64), _ base: UnsafePointer<UInt8>, _ count: Int, start: Int, end: Int
        ) -> Piece? {
            piece(at: probe, lanes: matches(probe), key, base, count, start: start, end: end)
        }

        /// ``piece(at:_:_:_:start:end:)`` with the lanes ``prefetch(_:)`` found for the probe. Tags stored since
        /// then are missed (the caller looks again on a miss: a piece repeated a few pieces after its first, new
        /// occurrence would otherwise be counted and stored again each time); a table's content never changes a
        /// result, only how fast it comes.
        @inline(__always)
        func piece(
            at probe: Int, lanes found: UInt64, _ key: (UInt64, UInt64), _ base: UnsafePointer<UInt8>, _ count: Int,
            start: Int, end: Int
        ) -> Piece? {
            let set = entries + (probe & 0xFFFF & ~3)
            var lanes = found
            var way = -1
            while lanes != 0 {
                let w = lanes.trailingZeroBitCount / 16
                if set[w].w0 == key.0 && set[w].w1 & Meta.keyMask == key.1 {
                    way = w
                    break
                }
                lanes &= lanes &- 1
            }
            if way < 0 { return nil }
            let m = set[way]
            let tokens = (m.w1 &>> Meta.tokensShift) & 15
            let d = decoded[Int(truncatingIfNeeded: m.w1 &>> Meta.kindShift)]
            let kind = Kind(rawValue: UInt8(truncatingIfNeeded: d &>> 16))!
            let rest = UInt8(truncatingIfNeeded: m.w1 &>> Meta.restShift)
            var p = Piece(
                start: Int32(start), end: Int32(end),
                tokens: tokens == Meta.pending ? -Int32(truncatingIfNeeded: m.stem &+ 1) : Int32(tokens),
                flags: Flags(rawValue: UInt16(truncatingIfNeeded: d)), kind: kind)
            switch kind {
            case .newline:
                p.breakStart = Int32(start) + Int32(rest &>> 1)
                p.emitStart = Int32(start)
                p.emitEnd = Int32(end)
            case .number:
                p.hash = TextCompressor.numberHash(
                    base, count, start,
                    digitsAt: TextCompressor.wordStart(base, start, end, leadingSpace: p.flags.contains(.leadingSpace)))
                p.stem = p.hash
            default:
                p.hash = m.hash
                p.stem = tokens == Meta.pending ? 0 : m.stem
            }
            return p
        }

        @inline(__always)
        static func flags(_ rest: UInt8, _ kind: Kind) -> Flags {
            var f = Flags(rawValue: UInt16(rest & 1) &* Flags.leadingSpace.rawValue)
            if kind == .word {
                if rest & 2 != 0 { f.insert(.capital) }
                if rest & 4 != 0 { f.insert(.frequent) }
                if rest & 8 != 0 { f.insert(.numberWord) }
            } else if kind != .newline {
                if rest & 4 != 0 { f.insert(.terminal) }
                if rest & 8 != 0 { f.insert(.question) }
            }
            return f
        }

        @inline(__always)
        static func rest(_ p: Piece) -> UInt64 {
            var r: UInt64 = p.flags.contains(.leadingSpace) ? 1 : 0
            if p.kind == .newline {
                r |= UInt64(p.breakStart - p.start) &<< 1
            } else if p.kind == .word {
                if p.flags.contains(.capital) { r |= 2 }
                if p.flags.contains(.frequent) { r |= 4 }
                if p.flags.contains(.numberWord) { r |= 8 }
            } else {
                if p.flags.contains(.terminal) { r |= 4 }
                if p.flags.contains(.question) { r |= 8 }
            }
            return r
        }

        /// Stores `p` (of at most ``maxLength`` bytes) in the first free slot of its probe's set, else in its own;
        /// returns where (the slot). A placeholder count (`p.tokens` = -(k + 1)) stores the entry pending on new piece
        /// `k`: its count and stem come with ``resolve(_:pending:tokens:stem:)``.
        @inline(__always)
        func store(_ p: Piece, at probe: Int, _ key: (UInt64, UInt64)) -> Int {
            var slot = probe & 0xFFFF
            let word = tags[slot &>> 2]
            for w in 0..<4 where (word &>> UInt64(16 * w)) & 0xFFFF == 0 {
                slot = (slot & ~3) + w
                break
            }
            let lane = UInt64(16 * (slot & 3))
            tags[slot &>> 2] = word & ~(0xFFFF &<< lane) | UInt64(truncatingIfNeeded: probe &>> 16) &<< lane
            let pending = p.tokens < 0
            let tokens = pending ? Meta.pending : UInt64(p.tokens)
            let meta = tokens &<< Meta.tokensShift | UInt64(p.kind.rawValue) &<< Meta.kindShift
                | Self.rest(p) &<< Meta.restShift
            let stem = pending ? UInt64(-p.tokens - 1) : (p.kind == .word ? p.stem : 0)
            entries[slot] = Entry(w0: key.0, w1: key.1 | meta, hash: p.kind == .word ? p.hash : 0, stem: stem)
            return slot
        }

        // Pieces longer than the table's (" organization's", " intergovernmental": ~12 in the suite's ~8k-token
        // prompt) are few, but byte-pair encoding one takes many merges against a vocabulary that is out of the caches
        // in a sidecar by then (~4 us each): their counts are kept apart, direct-mapped, 64 bytes an entry (the
        // bytes at 0, the length at 48 and the count at 52; only the piece's own bytes are compared), for pieces of
        // more than ``maxLength`` (at least 8: the slot reads a piece's first and last 8 bytes) and up to
        // ``longMaxLength`` bytes.
        static let longMaxLength = 48
        static let longBits = 10
        private let long: UnsafeMutableRawPointer

        @inline(__always)
        private func longEntry(_ base: UnsafePointer<UInt8>, _ s: Int, _ length: Int) -> UnsafeMutableRawPointer {
            let raw = UnsafeRawPointer(base + s)
            let first = raw.loadUnaligned(as: UInt64.self)
            let last = raw.loadUnaligned(fromByteOffset: length - 8, as: UInt64.self)
            let h = (first ^ (last &* 0xC2B2_AE3D_27D4_EB4F) ^ UInt64(length)) &* 0x9E37_79B9_7F4A_7C15
            return long + Int(truncatingIfNeeded: h &>> UInt64(64 - Self.longBits)) * 64
        }

        /// The count of the piece `base[s..<s + length]` (longer than ``maxLength``), if kept.
        @inline(__always)
        func longCount(_ base: UnsafePointer<UInt8>, _ s: Int, _ length: Int) -> Int32? {
            guard length <= Self.longMaxLength else { return nil }
            let e = longEntry(base, s, length)
            guard e.load(fromByteOffset: 48, as: Int32.self) == Int32(length), memcmp(e, base + s, length) == 0
            else { return nil }
            return e.load(fromByteOffset: 52, as: Int32.self)
        }

        /// Keeps the count of the piece `base[s..<s + length]` (longer than ``maxLength``) if it is at most
        /// ``longMaxLength`` bytes.
        func storeLong(_ base: UnsafePointer<UInt8>, _ s: Int, _ length: Int, tokens: Int32) {
            guard length <= Self.longMaxLength else { return }
            let e = longEntry(base, s, length)
            e.copyMemory(from: base + s, byteCount: length)
            e.storeBytes(of: Int32(length), toByteOffset: 48, as: Int32.self)
            e.storeBytes(of: tokens, toByteOffset: 52, as: Int32.self)
        }

        /// Gives the entry at `slot`, if it is still pending on new piece `k`, its count and stem.
        @inline(__always)
        func resolve(_ slot: Int, pending k: Int, tokens: Int32, stem: UInt64) {
            let m = entries[slot]
            guard (m.w1 &>> Meta.tokensShift) & 15 == Meta.pending, m.stem == UInt64(k) else { return }
            entries[slot].w1 = m.w1 & ~(15 &<< Meta.tokensShift) | UInt64(tokens) &<< Meta.tokensShift
            entries[slot].stem = stem
        }
    }

    /// A thread's piece tables, one per encoding.
    final class PieceMemoSet {
        private var tables: [PieceMemo?] = Array(repeating: nil, count: Encoding.Name.allCases.count)

        func memo(for name: Encoding.Name, lexicon: Lexicon) -> PieceMemo {
            let i: Int
            switch name {
            case .o200kBase: i = 0
            case .cl100kBase: i = 1
            }
            if let m = tables[i], m.lexicon == ObjectIdentifier(lexicon) { return m }
            let m = PieceMemo(lexicon: lexicon)
            tables[i] = m
            return m
        }

        static let key: pthread_key_t = {
            var key = pthread_key_t()
            #if canImport(Darwin)
            let rc = pthread_key_create(&key) { p in Unmanaged<PieceMemoSet>.fromOpaque(p).release() }
            #else
            let rc = pthread_key_create(&key) { p in
                if let p { Unmanaged<PieceMemoSet>.fromOpaque(p).release() }
            }
            #endif
            precondition(rc == 0, "pthread_key_create failed")
            return key
        }()
    }
}
