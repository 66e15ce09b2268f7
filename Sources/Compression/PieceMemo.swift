extension TextCompressor {
    /// What one text's pieces of up to 16 bytes were found to be (tokens, kind, flags, word hashes), by their
    /// bytes: a direct-mapped table (a newer piece takes the slot of an older one that hashes alike), made for one
    /// call and freed with it. A prose text repeats most of its pieces (" the", ",", " Document"): about two thirds
    /// of an 8k-token retrieval prompt's pieces are found here instead of being byte-pair encoded and classified.
    struct PieceMemo {
        struct Entry {
            var w0: UInt64 = 0
            var w1: UInt64 = 0
            var hash: UInt64 = 0
            var stem: UInt64 = 0
            var tokens: Int32 = 0
            var flags: Flags = []
            /// `breakStart - start` of a newline piece.
            var breakOffset: UInt8 = 0
            /// 0: empty.
            var length: UInt8 = 0
            var kind: Kind = .punct
        }

        private let entries: UnsafeMutablePointer<Entry>?
        private let shift: UInt64

        /// Texts shorter than this repeat too few pieces to pay for the table.
        static let minimumBytes = 512

        /// A table of about one slot per eight bytes of text (256...4,096 slots), none for short texts.
        init(capacityFor bytes: Int) {
            guard bytes >= Self.minimumBytes else {
                entries = nil
                shift = 63
                return
            }
            var bits = 8
            while bits < 12 && (1 << bits) < bytes / 8 { bits += 1 }
            entries = .allocate(capacity: 1 << bits)
            entries!.initialize(repeating: Entry(), count: 1 << bits)
            shift = UInt64(64 - bits)
        }

        func deallocate() { entries?.deallocate() }

        var enabled: Bool { entries != nil }

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

        /// The piece at `start..<end` if the slot holds these bytes.
        @inline(__always)
        func piece(at slot: Int, _ key: (UInt64, UInt64), _ length: Int, start: Int, end: Int) -> Piece? {
            let m = entries![slot]
            guard Int(m.length) == length, m.w0 == key.0, m.w1 == key.1 else { return nil }
            var p = Piece(start: Int32(start), end: Int32(end), tokens: m.tokens, flags: m.flags, kind: m.kind)
            p.hash = m.hash
            p.stem = m.stem
            p.emitStart = Int32(start)
            p.emitEnd = Int32(end)
            p.breakStart = Int32(start) + Int32(m.breakOffset)
            return p
        }

        @inline(__always)
        func store(_ p: Piece, at slot: Int, _ key: (UInt64, UInt64), _ length: Int) {
            entries![slot] = Entry(
                w0: key.0, w1: key.1, hash: p.hash, stem: p.stem, tokens: p.tokens, flags: p.flags,
                breakOffset: UInt8(p.breakStart - p.start), length: UInt8(length), kind: p.kind)
        }
    }
}
