import CHints

/// The mergeable ranks of one encoding: token bytes -> rank, and rank -> token bytes.
///
/// Parsed by hand from the `.tiktoken` format (base64 token, a space, the decimal rank, a newline) into one
/// contiguous byte buffer plus an open-addressing hash table (linear probing, multiplicative hashing) whose
/// slots hold the first 8 bytes of the token inline, so a lookup of a short piece touches one cache line.
/// Immutable after `init`; the raw buffers are owned by this object and freed in `deinit`.
final class Vocabulary: @unchecked Sendable {
    static let absent: UInt32 = .max
    static let maxTokenLength = 0xFFF

    /// Concatenated token bytes, in rank order.
    let tokenBytes: UnsafeMutablePointer<UInt8>
    let tokenBytesCount: Int
    /// rank -> offset of the token in `tokenBytes`; `offsets[rank + 1] - offsets[rank]` is its length
    /// (length 0: no token of that rank).
    let offsets: UnsafeMutablePointer<UInt32>
    /// Ranks are `0..<rankLimit`.
    let rankLimit: Int
    /// Number of tokens.
    let count: Int
    /// Rank of each single byte.
    let byteRanks: UnsafeMutablePointer<UInt32>
    /// Rank of each byte pair `a << 8 | b` (`absent` when the pair is not a token): 256 KB, read directly by the
    /// merges instead of hashing (every multi-token piece starts with all its adjacent pairs).
    let pairRanks: UnsafeMutablePointer<UInt32>

    /// Slot: `key8` = the first (up to) 8 bytes, little-endian, zero padded;
    /// `meta` = offset (bits 0-31) | length (bits 32-43) | rank (bits 44-63). Length 0 = empty slot.
    /// Slot `i` is `slots[2 * i]` (key8) and `slots[2 * i + 1]` (meta): one cache line per probe.
    private let slots: UnsafeMutablePointer<UInt64>
    private let shift: UInt64
    private let mask: Int
    /// One bit per 2^21 remixed hashes, set for every token (256 KB, stays in cache while the 8 MB table does
    /// not): a clear bit answers "not a token" without touching the table, which is what most lookups of merge
    /// candidates and of multi-token pieces ask (~10% false positives at o200k's size).
    private let filter: UnsafeMutablePointer<UInt64>
    static let filterBits = 21

    @inline(__always)
    static func filterIndex(_ hash: UInt64) -> Int {
        Int(truncatingIfNeeded: ((hash ^ (hash >> 29)) &* 0xBF58_476D_1CE4_E5B9) >> UInt64(64 - filterBits))
    }

    /// Parses a `.tiktoken` file's bytes.
    init(parsing data: UnsafeRawBufferPointer, name: String) throws(TokenizerError) {
        let bytes = data.bindMemory(to: UInt8.self)
        let n = bytes.count
        // One line per token; the decoded token is at most 3/4 of its base64 text.
        var lines = 0
        // Eight bytes at a time: a newline is a zero byte of `word ^ 0x0A0A...`, and the high bit of each byte of `t`
        // is set exactly when that byte of `x` is not zero (no carry crosses bytes: each lane adds at most 0xFE).
        var k = 0
        if let base = data.baseAddress {
            while k &+ 8 <= n {
                let x = base.loadUnaligned(fromByteOffset: k, as: UInt64.self) ^ 0x0A0A_0A0A_0A0A_0A0A
                let t = ((x & 0x7F7F_7F7F_7F7F_7F7F) &+ 0x7F7F_7F7F_7F7F_7F7F) | x
                lines &+= (~t & 0x8080_8080_8080_8080).nonzeroBitCount
                k &+= 8
            }
        }
        while k < n {
            if bytes[k] == 0x0A { lines += 1 }
            k += 1
        }
        if n > 0, bytes[n - 1] != 0x0A { lines += 1 }
        guard lines > 0 else {
            throw TokenizerError(code: .vocabularyMalformed, message: "\(name): empty vocabulary file")
        }

        let storage = UnsafeMutablePointer<UInt8>.allocate(capacity: n)
        var decodedRanks = [UInt32]()
        var decodedOffsets = [UInt32]()
        decodedRanks.reserveCapacity(lines)
        decodedOffsets.reserveCapacity(lines + 1)
        var out = 0
        var maxRank: UInt32 = 0
        var i = 0
        var lineNumber = 0
        let table = Base64.decodeTable
        func malformed(_ what: String) -> TokenizerError {
            TokenizerError(code: .vocabularyMalformed, message: "\(name): line \(lineNumber + 1): \(what)")
        }
        var parsed = false
        defer { if !parsed { storage.deallocate() } }
        while i < n {
            if bytes[i] == 0x0A {  // tolerate empty lines
                i += 1
                lineNumber += 1
                continue
            }
            // base64 token
            decodedOffsets.append(UInt32(out))
            // Whole groups of four base64 digits first, three bytes each (a group with padding, a space, a newline
            // or an invalid byte has a table value with the high bits set: it is left to the byte loop below).
            while i &+ 4 <= n {
                let a = table[Int(bytes[i])], b = table[Int(bytes[i &+ 1])]
                let c = table[Int(bytes[i &+ 2])], d = table[Int(bytes[i &+ 3])]
                if (a | b | c | d) & 0xC0 != 0 { break }
                storage[out] = a << 2 | b >> 4
                storage[out &+ 1] = b << 4 | c >> 2
                storage[out &+ 2] = c << 6 | d
                out &+= 3
                i &+= 4
            }
            var acc: UInt32 = 0
            var bits = 0
            while i < n, bytes[i] != 0x20 {
                let b = bytes[i]
                i += 1
                if b == 0x3D { continue }  // '=' padding
                let v = table[Int(b)]
                if v == 0xFF { throw malformed("invalid base64 byte \(b)") }
                acc = (acc << 6) | UInt32(v)
                bits += 6
                if bits >= 8 {
                    bits -= 8
                    storage[out] = UInt8(truncatingIfNeeded: acc >> UInt32(bits))
                    out += 1
                }
            }
            let length = out - Int(decodedOffsets[decodedOffsets.count - 1])
            if i >= n { throw malformed("missing rank") }
            if length == 0 || length > Self.maxTokenLength { throw malformed("token length \(length)") }
            i += 1  // space
            var rank: UInt32 = 0
            var digits = 0
            while i < n, bytes[i] != 0x0A {
                let d = bytes[i] &- 0x30
                if bytes[i] == 0x0D, i + 1 < n, bytes[i + 1] == 0x0A {
                    i += 1
                    break
                }
                if d > 9 || digits >= 7 { throw malformed("invalid rank") }
                rank = rank * 10 + UInt32(d)
                digits += 1
                i += 1
            }
            if digits == 0 { throw malformed("missing rank") }
            i += 1  // newline
            lineNumber += 1
            decodedRanks.append(rank)
            maxRank = max(maxRank, rank)
        }
        guard maxRank < (1 << 20) else {
            throw TokenizerError(code: .vocabularyMalformed, message: "\(name): rank \(maxRank) too large")
        }
        decodedOffsets.append(UInt32(out))
        parsed = true

        tokenBytes = storage
        tokenBytesCount = out
        count = decodedRanks.count
        rankLimit = Int(maxRank) + 1

        // rank -> (offset, length): tokens are stored in file order; rebuild in rank order for decoding.
        let byRankOffset = UnsafeMutablePointer<UInt32>.allocate(capacity: rankLimit + 1)
        let byRankLength = UnsafeMutablePointer<UInt32>.allocate(capacity: rankLimit)
        byRankLength.initialize(repeating: 0, count: rankLimit)
        byRankOffset.initialize(repeating: 0, count: rankLimit + 1)
        for t in 0..<count {
            let r = Int(decodedRanks[t])
            byRankOffset[r] = decodedOffsets[t]
            byRankLength[r] = decodedOffsets[t + 1] - decodedOffsets[t]
        }
        // Ranks in the official files are in file order, so offsets[rank + 1] - offsets[rank] is the length; for
        // other orders (or holes), copy the tokens into rank order.
        var inOrder = true
        for r in 0..<rankLimit
        where byRankLength[r] == 0
            || byRankOffset[r] + byRankLength[r] != (r + 1 < rankLimit ? byRankOffset[r + 1] : UInt32(out))
        {
            inOrder = false
            break
        }
        offsets = .allocate(capacity: rankLimit + 1)
        if inOrder {
            for r in 0..<rankLimit { offsets[r] = byRankOffset[r] }
            offsets[rankLimit] = UInt32(out)
        } else {
            // Re-layout: copy tokens into rank order (holes get length 0).
            let copy = UnsafeMutablePointer<UInt8>.allocate(capacity: max(out, 1))
            copy.update(from: storage, count: out)
            var o: UInt32 = 0
            for r in 0..<rankLimit {
                offsets[r] = o
                let len = Int(byRankLength[r])
                (storage + Int(o)).update(from: copy + Int(byRankOffset[r]), count: len)
                o += UInt32(len)
            }
            offsets[rankLimit] = o
            copy.deallocate()
        }
        byRankOffset.deallocate()
        byRankLength.deallocate()

        // Hash table at load factor <= 0.5.
        var bits: UInt64 = 4
        while (1 << bits) < count * 2 { bits += 1 }
        let capacity = 1 << Int(bits)
        shift = 64 - bits
        mask = capacity - 1
        slots = .allocate(capacity: 2 * capacity)
        slots.initialize(repeating: 0, count: 2 * capacity)
        filter = .allocate(capacity: 1 << (Self.filterBits - 6))
        filter.initialize(repeating: 0, count: 1 << (Self.filterBits - 6))
        byteRanks = .allocate(capacity: 256)
        byteRanks.initialize(repeating: Self.absent, count: 256)

        // Inserted in rank order, the slot of the token `ahead` ranks on asked for in advance (its hash kept in a
        // ring): the table (8 MB for o200k) is far bigger than the caches, and waiting for one slot's miss at a time
        // was ~9 ms of o200k's ~50 ms load (which the sidecar's first request pays on its accounting worker).
        let ahead = 16
        let ring = UnsafeMutablePointer<(key8: UInt64, hash: UInt64)>.allocate(capacity: ahead)
        ring.initialize(repeating: (0, 0), count: ahead)  // read (and ignored) for ranks without a token too
        defer { ring.deallocate() }
        do {
            let (tokens, starts, table, tableShift) = (tokenBytes, offsets, slots, shift)
            let end = UnsafePointer(tokens + tokenBytesCount)
            func prepare(_ r: Int) {
                let offset = Int(starts[r])
                let length = Int(starts[r + 1]) - offset
                guard length > 0 else { return }
                let hashed = Vocabulary.hash(UnsafePointer(tokens + offset), length, end)
                ring[r % ahead] = hashed
                ao_prefetch(table + 2 &* Int(truncatingIfNeeded: hashed.hash >> tableShift))
            }
            for r in 0..<min(ahead, rankLimit) { prepare(r) }
            for r in 0..<rankLimit {
                let offset = Int(offsets[r])
                let length = Int(offsets[r + 1]) - offset
                let (key8, hash) = ring[r % ahead]
                if r + ahead < rankLimit { prepare(r + ahead) }
                if length == 0 { continue }
                let p = UnsafePointer(tokenBytes + offset)
                if length == 1 { byteRanks[Int(p[0])] = UInt32(r) }
                var slot = Int(truncatingIfNeeded: hash >> shift)
                while true {
                    let meta = slots[2 &* slot &+ 1]
                    if meta == 0 {
                        slots[2 &* slot] = key8
                        slots[2 &* slot &+ 1] = UInt64(offset) | UInt64(length) << 32 | UInt64(r) << 44
                        let f = Self.filterIndex(hash)
                        filter[f >> 6] |= 1 << UInt64(f & 63)
                        break
                    }
                    if slots[2 &* slot] == key8, Int((meta >> 32) & 0xFFF) == length,
                        memcmpEqual(p, UnsafePointer(tokenBytes + Int(meta & 0xFFFF_FFFF)), length)
                    {
                        break  // duplicate token: keep the first (lowest-rank) one
                    }
                    slot = (slot + 1) & mask
                }
            }
        }
        pairRanks = .allocate(capacity: 1 << 16)
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 2) { pair in
            let p = UnsafePointer(pair.baseAddress!)
            for a in 0..<256 {
                for b in 0..<256 {
                    pair[0] = UInt8(a)
                    pair[1] = UInt8(b)
                    pairRanks[a << 8 | b] = rank(p, 2, p + 2)
                }
            }
        }
        for b in 0..<256 where byteRanks[b] == Self.absent {
            throw TokenizerError(code: .vocabularyMalformed, message: "\(name): no token for byte \(b)")
        }
    }

    /// The rank of the two bytes at `p` as one token, or `absent`.
    @inline(__always)
    func pairRank(_ p: UnsafePointer<UInt8>) -> UInt32 {
        pairRanks[Int(p[0]) &<< 8 | Int(p[1])]
    }

    deinit {
        tokenBytes.deallocate()
        offsets.deallocate()
        slots.deallocate()
        filter.deallocate()
        byteRanks.deallocate()
        pairRanks.deallocate()
    }

    /// The rank of the token `p[0..<length]`, or `absent`. `end` bounds the readable memory after `p`
    /// (a word load past `p + length` is done only when `p + 8 <= end`).
    ///
    /// `filtered`: ask the bit filter first. Worth it where most lookups miss (the merge loop's candidates); a
    /// whole pre-tokenizer piece mostly is a token, and there the filter only adds a memory access.
    @inline(__always)
    func rank(_ p: UnsafePointer<UInt8>, _ length: Int, _ end: UnsafePointer<UInt8>, filtered: Bool = true) -> UInt32 {
        if length > Self.maxTokenLength { return Self.absent }
        let (key8, hash) = Self.hash(p, length, end)
        if filtered {
            let f = Self.filterIndex(hash)
            if filter[f >> 6] & (1 << UInt64(f & 63)) == 0 { return Self.absent }
        }
        var slot = Int(truncatingIfNeeded: hash >> shift)
        while true {
            let meta = slots[2 &* slot &+ 1]
            if meta == 0 { return Self.absent }
            if slots[2 &* slot] == key8, Int((meta >> 32) & 0xFFF) == length {
                if length <= 8
                    || memcmpEqual(p + 8, UnsafePointer(tokenBytes + Int(meta & 0xFFFF_FFFF) + 8), length - 8)
                {
                    return UInt32(truncatingIfNeeded: meta >> 44)
                }
            }
            slot = (slot + 1) & mask
        }
    }

    /// The bytes of the token of `rank`, or nil.
    func bytes(ofRank rank: Int) -> UnsafeBufferPointer<UInt8>? {
        guard rank >= 0, rank < rankLimit else { return nil }
        let offset = Int(offsets[rank])
        let length = Int(offsets[rank + 1]) - offset
        guard length > 0 else { return nil }
        return UnsafeBufferPointer(start: tokenBytes + offset, count: length)
    }

    @inline(__always)
    static func hash(_ p: UnsafePointer<UInt8>, _ length: Int, _ end: UnsafePointer<UInt8>) -> (
        key8: UInt64, hash: UInt64
    ) {
        var key8: UInt64
        if length >= 8 {
            key8 = UInt64(littleEndian: UnsafeRawPointer(p).loadUnaligned(as: UInt64.self))
        } else if p + 8 <= end {
            key8 =
                UInt64(littleEndian: UnsafeRawPointer(p).loadUnaligned(as: UInt64.self))
                & ((1 << (UInt64(length) &* 8)) &- 1)
        } else {
            key8 = 0
            for k in 0..<length { key8 |= UInt64(p[k]) << (UInt64(k) &* 8) }
        }
        var h = (key8 ^ UInt64(length)) &* 0x9E37_79B9_7F4A_7C15
        if length > 8 {
            var k = 8
            while k + 8 <= length {
                let w = UInt64(littleEndian: UnsafeRawPointer(p + k).loadUnaligned(as: UInt64.self))
                h = (h ^ (h >> 29) ^ w) &* 0xBF58_476D_1CE4_E5B9
                k += 8
            }
            if k < length {
                var w: UInt64 = 0
                for j in k..<length { w |= UInt64(p[j]) << (UInt64(j - k) &* 8) }
                h = (h ^ (h >> 29) ^ w) &* 0xBF58_476D_1CE4_E5B9
            }
            h ^= h >> 32
            h = h &* 0x9E37_79B9_7F4A_7C15
        }
        return (key8, h)
    }
}

@inline(__always)
func memcmpEqual(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ count: Int) -> Bool {
    var k = 0
    while k + 8 <= count {
        if UnsafeRawPointer(a + k).loadUnaligned(as: UInt64.self)
            != UnsafeRawPointer(b + k).loadUnaligned(as: UInt64.self)
        {
            return false
        }
        k += 8
    }
    while k < count {
        if a[k] != b[k] { return false }
        k += 1
    }
    return true
}

enum Base64 {
    /// byte -> 6-bit value, 0xFF for bytes outside the standard alphabet.
    static let decodeTable: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()
}
