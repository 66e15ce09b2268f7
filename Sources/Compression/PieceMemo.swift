#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Tokenizer

extension TextCompressor {
    /// What pieces of up to 16 bytes were found to be (tokens, kind, flags, word hashes), by their bytes: a
    /// two-way table (a piece goes to its slot or the slot's partner, `slot ^ 1`, whichever is free, else over the
    /// first: two pieces of one text that hash alike both stay, instead of evicting each other on every call),
    /// one per thread and encoding, kept across calls (``current(for:)``). Prose repeats most of its pieces (" the", ",", " of"):
    /// within one 8k-token retrieval prompt about two thirds of the pieces are found here, across prompts more, and
    /// a piece found here is neither byte-pair encoded nor classified again (the word cache of byte-pair tokenizers,
    /// with the classification kept beside the count). Only pieces whose classification reads nothing outside them
    /// are kept (numbers look at the digits around them); a piece's entry depends on its bytes and the encoding
    /// alone, so what a table holds never changes a result, only how fast it comes.
    final class PieceMemo {
        struct Entry {
            var w0: UInt64 = 0
            var w1: UInt64 = 0
            var hash: UInt64 = 0
            var stem: UInt64 = 0
            /// A negative count is a placeholder while the call that stored the entry counts its new pieces
            /// together (see ``TextCompressor/pieces(_:protecting:normalizing:total:)``); it is replaced before that call returns.
            var tokens: Int32 = 0
            var flags: Flags = []
            /// `breakStart - start` of a newline piece.
            var breakOffset: UInt8 = 0
            /// 0: empty.
            var length: UInt8 = 0
            var kind: Kind = .punct
        }

        /// 2^14 slots of 48 bytes (768 KiB a thread and encoding, allocated at a thread's first compression): an
        /// 8k-token prompt has ~2,500 distinct pieces, and prompts share most of theirs. Measured with one ~8k-token
        /// prompt compressed 200 times (median in-process time per prompt, direct-mapped then): 2^12 slots 1,022 us,
        /// 2^13 935 us, 2^14 883 us, 2^15 846 us.
        static let slotBits = 14

        private let entries: UnsafeMutablePointer<Entry>
        private let shift: UInt64

        init(bits: Int = PieceMemo.slotBits) {
            entries = .allocate(capacity: 1 << bits)
            entries.initialize(repeating: Entry(), count: 1 << bits)
            shift = UInt64(64 - bits)
        }

        deinit { entries.deallocate() }

        /// This thread's table for `encoding` (made at the first call on the thread; freed with the thread).
        static func current(for encoding: Encoding) -> PieceMemo {
            let set: PieceMemoSet
            if let p = pthread_getspecific(PieceMemoSet.key) {
                set = Unmanaged<PieceMemoSet>.fromOpaque(p).takeUnretainedValue()
            } else {
                set = PieceMemoSet()
                pthread_setspecific(PieceMemoSet.key, Unmanaged.passRetained(set).toOpaque())
            }
            return set.memo(for: encoding.name)
        }

        /// The piece's bytes `base[s..<s + length]` (`length` <= 16) as two little-endian words, zero-padded.
        @inline(__always)
        static func key(_ base: UnsafePointer<UInt8>, _ s: Int, _ length: Int, _ count: Int) -> (UInt64, UInt64) {
            if s + 16 <= count {
                let raw = UnsafeRawPointer(base + s)
                var w0 = UInt64(littleEndian: raw.loadUnaligned(as: UInt64.self))
                var w1 = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                if length < 8 {
                    w0 &= (1 &<< UInt64(length &* 8)) &- 1
                    w1 = 0
                } else if length < 16 {
                    w1 &= (1 &<< UInt64((length &- 8) &* 8)) &- 1
                }
                return (w0, w1)
            }
            var w0: UInt64 = 0
            var w1: UInt64 = 0
            for k in 0..<length {
                let v = UInt64(base[s + k])
                if k < 8 { w0 |= v &<< UInt64(k &* 8) } else { w1 |= v &<< UInt64((k &- 8) &* 8) }
            }
            return (w0, w1)
        }

        @inline(__always)
        func slot(_ key: (UInt64, UInt64), _ length: Int) -> Int {
            let h = (key.0 ^ (key.1 &* 0xC2B2_AE3D_27D4_EB4F) ^ UInt64(length)) &* 0x9E37_79B9_7F4A_7C15
            return Int(truncatingIfNeeded: h &>> shift)
        }

        /// The piece at `start..<end` if the slot or its partner holds these bytes.
        @inline(__always)
        func piece(at slot: Int, _ key: (UInt64, UInt64), _ length: Int, start: Int, end: Int) -> Piece? {
            var m = entries[slot]
            if Int(m.length) != length || m.w0 != key.0 || m.w1 != key.1 {
                m = entries[slot ^ 1]
                guard Int(m.length) == length, m.w0 == key.0, m.w1 == key.1 else { return nil }
            }
            var p = Piece(start: Int32(start), end: Int32(end), tokens: m.tokens, flags: m.flags, kind: m.kind)
            p.hash = m.hash
            p.stem = m.stem
            p.emitStart = Int32(start)
            p.emitEnd = Int32(end)
            p.breakStart = Int32(start) + Int32(m.breakOffset)
            return p
        }

        /// Stores `p` in the slot or its partner (a free one first); returns where.
        @inline(__always)
        func store(_ p: Piece, at slot: Int, _ key: (UInt64, UInt64), _ length: Int) -> Int {
            let slot = entries[slot].length != 0 && entries[slot ^ 1].length == 0 ? slot ^ 1 : slot
            entries[slot] = Entry(
                w0: key.0, w1: key.1, hash: p.hash, stem: p.stem, tokens: p.tokens, flags: p.flags,
                breakOffset: UInt8(p.breakStart - p.start), length: UInt8(length), kind: p.kind)
            return slot
        }

        /// Replaces the placeholder count `placeholder` at `slot` (if the slot still holds it) with `tokens`.
        @inline(__always)
        func resolve(_ slot: Int, placeholder: Int32, tokens: Int32) {
            if entries[slot].tokens == placeholder { entries[slot].tokens = tokens }
        }
    }

    /// A thread's piece tables, one per encoding.
    final class PieceMemoSet {
        private var tables: [PieceMemo?] = Array(repeating: nil, count: Encoding.Name.allCases.count)

        func memo(for name: Encoding.Name) -> PieceMemo {
            let i: Int
            switch name {
            case .o200kBase: i = 0
            case .cl100kBase: i = 1
            }
            if let m = tables[i] { return m }
            let m = PieceMemo()
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
