/// Receives the token ranks of a text, in order.
protocol TokenSink {
    mutating func emit(_ rank: UInt32)
    /// Pieces whose merge result only needs counting report `count` tokens at once.
    var wantsRanks: Bool { get }
    mutating func add(count: Int)
}

struct CountingSink: TokenSink {
    var count = 0
    @inline(__always) mutating func emit(_ rank: UInt32) { count += 1 }
    @inline(__always) var wantsRanks: Bool { false }
    @inline(__always) mutating func add(count: Int) { self.count += count }
}

struct CollectingSink: TokenSink {
    var ids: [Int] = []
    @inline(__always) mutating func emit(_ rank: UInt32) { ids.append(Int(rank)) }
    @inline(__always) var wantsRanks: Bool { true }
    @inline(__always) mutating func add(count: Int) {}
}

extension Vocabulary {
    /// Pieces up to this many bytes merge in place in a small array (tiktoken's own O(n^2) scan, which is
    /// fastest for short pieces); longer ones use a heap over a linked list, O(n log n).
    static let smallPieceLimit = 128

    /// Byte-pair encodes `piece[0..<length]` exactly as tiktoken's `byte_pair_encode`: a piece that is a
    /// token is that token; otherwise the adjacent pair of lowest rank merges first, the leftmost on ties.
    @inline(__always)
    func encodePiece<S: TokenSink>(
        _ piece: UnsafePointer<UInt8>, _ length: Int, _ end: UnsafePointer<UInt8>, into sink: inout S
    ) {
        if length == 1 {
            sink.emit(byteRanks[Int(piece[0])])
            return
        }
        if length == 2 {
            let r = pairRank(piece)
            if r != Self.absent {
                sink.emit(r)
            } else {
                sink.emit(byteRanks[Int(piece[0])])
                sink.emit(byteRanks[Int(piece[1])])
            }
            return
        }
        let whole = rank(piece, length, end)
        if whole != Self.absent {
            sink.emit(whole)
            return
        }
        merge(piece, length, end, into: &sink)
    }

    /// Merges a piece of 3 or more bytes that is not a token.
    @inline(__always)
    private func merge<S: TokenSink>(
        _ piece: UnsafePointer<UInt8>, _ length: Int, _ end: UnsafePointer<UInt8>, into sink: inout S
    ) {
        if length <= Self.smallPieceLimit {
            mergeSmall(piece, length, end, into: &sink)
        } else {
            mergeLarge(piece, length, end, into: &sink)
        }
    }

    /// See ``Encoding/tokenCounts(ofPieces:_:count:in:into:)``.
    func countPieces(
        _ base: UnsafePointer<UInt8>, _ end: UnsafePointer<UInt8>, _ starts: UnsafePointer<Int32>,
        _ ends: UnsafePointer<Int32>, _ count: Int, into counts: UnsafeMutablePointer<Int32>
    ) {
        // Pass 1: one-token pieces (independent lookups, no filter: a whole piece mostly is a token). -1: merge.
        for i in 0..<count {
            let s = Int(starts[i])
            let length = Int(ends[i]) - s
            if length <= 1 {
                counts[i] = Int32(length)
            } else if length == 2 {
                counts[i] = pairRank(base + s) != Self.absent ? 1 : 2
            } else {
                counts[i] = rank(base + s, length, end, filtered: false) != Self.absent ? 1 : -1
            }
        }
        // Pass 2: the rest, merged as `encodePiece` does.
        for i in 0..<count where counts[i] < 0 {
            let s = Int(starts[i])
            var sink = CountingSink()
            merge(base + s, Int(ends[i]) - s, end, into: &sink)
            counts[i] = Int32(sink.count)
        }
    }

    private func mergeSmall<S: TokenSink>(
        _ piece: UnsafePointer<UInt8>, _ length: Int, _ end: UnsafePointer<UInt8>, into sink: inout S
    ) {
        withUnsafeTemporaryAllocation(of: Int32.self, capacity: length + 1) { starts in
            withUnsafeTemporaryAllocation(of: UInt32.self, capacity: length) { ranks in
                // starts[0...parts] are the part boundaries; ranks[i] is the rank of parts i and i+1 merged.
                for i in 0...length { starts[i] = Int32(i) }
                for i in 0..<(length - 1) { ranks[i] = pairRank(piece + i) }
                var parts = length
                while true {
                    var minRank = Self.absent
                    var minIndex = -1
                    for i in 0..<(parts - 1) where ranks[i] < minRank {
                        minRank = ranks[i]
                        minIndex = i
                    }
                    if minIndex < 0 { break }
                    let i = minIndex
                    // Remove boundary i+1: parts i and i+1 become one.
                    var k = i + 1
                    while k < parts {
                        starts[k] = starts[k + 1]
                        k += 1
                    }
                    k = i + 1
                    while k < parts - 2 {
                        ranks[k] = ranks[k + 1]
                        k += 1
                    }
                    parts -= 1
                    if i + 1 < parts {
                        let a = Int(starts[i])
                        ranks[i] = rank(piece + a, Int(starts[i + 2]) - a, end)
                    } else {
                        ranks[i] = Self.absent
                    }
                    if i > 0 {
                        let a = Int(starts[i - 1])
                        ranks[i - 1] = rank(piece + a, Int(starts[i + 1]) - a, end)
                    }
                }
                if sink.wantsRanks {
                    for i in 0..<parts {
                        let a = Int(starts[i])
                        sink.emit(rank(piece + a, Int(starts[i + 1]) - a, end))
                    }
                } else {
                    sink.add(count: parts)
                }
            }
        }
    }

    /// Heap merge: nodes are named by their first byte's offset, so a heap key `rank << 32 | node` orders
    /// candidate pairs by rank, then leftmost. Stale heap entries (a node merged away, or its pair's rank
    /// changed) are skipped when popped.
    private func mergeLarge<S: TokenSink>(
        _ piece: UnsafePointer<UInt8>, _ length: Int, _ end: UnsafePointer<UInt8>, into sink: inout S
    ) {
        var next = [Int32](repeating: 0, count: length)
        var prev = [Int32](repeating: -1, count: length)
        var pairRank = [UInt32](repeating: Self.absent, count: length)
        var heap = MinHeap(capacity: length)
        next.withUnsafeMutableBufferPointer { next in
            prev.withUnsafeMutableBufferPointer { prev in
                pairRank.withUnsafeMutableBufferPointer { pairRank in
                    for i in 0..<length {
                        next[i] = Int32(i + 1)
                        prev[i] = Int32(i - 1)
                    }
                    for i in 0..<(length - 1) {
                        let r = self.pairRank(piece + i)
                        pairRank[i] = r
                        if r != Self.absent { heap.push(UInt64(r) << 32 | UInt64(i)) }
                    }
                    while let key = heap.pop() {
                        let i = Int(key & 0xFFFF_FFFF)
                        let r = UInt32(truncatingIfNeeded: key >> 32)
                        if pairRank[i] != r { continue }  // stale
                        let j = Int(next[i])
                        let nj = Int(next[j])
                        next[i] = Int32(nj)
                        if nj < length { prev[nj] = Int32(i) }
                        pairRank[j] = Self.absent
                        if nj < length {
                            let nr = rank(piece + i, Int(next[nj]) - i, end)
                            pairRank[i] = nr
                            if nr != Self.absent { heap.push(UInt64(nr) << 32 | UInt64(i)) }
                        } else {
                            pairRank[i] = Self.absent
                        }
                        let pi = Int(prev[i])
                        if pi >= 0 {
                            let pr = rank(piece + pi, nj - pi, end)
                            pairRank[pi] = pr
                            if pr != Self.absent { heap.push(UInt64(pr) << 32 | UInt64(pi)) }
                        }
                    }
                    var i = 0
                    var parts = 0
                    while i < length {
                        let e = Int(next[i])
                        if sink.wantsRanks { sink.emit(rank(piece + i, e - i, end)) }
                        parts += 1
                        i = e
                    }
                    if !sink.wantsRanks { sink.add(count: parts) }
                }
            }
        }
    }
}

/// A 4-ary min-heap of `UInt64` keys (shallower than a binary heap: fewer cache misses on big pieces).
struct MinHeap: ~Copyable {
    private var items: UnsafeMutablePointer<UInt64>
    private var capacity: Int
    private var count = 0

    init(capacity: Int) {
        self.capacity = max(capacity, 16)
        items = .allocate(capacity: self.capacity)
    }

    deinit { items.deallocate() }

    @inline(__always)
    mutating func push(_ key: UInt64) {
        if count == capacity {
            let bigger = UnsafeMutablePointer<UInt64>.allocate(capacity: capacity * 2)
            bigger.update(from: items, count: count)
            items.deallocate()
            items = bigger
            capacity *= 2
        }
        var i = count
        count += 1
        while i > 0 {
            let parent = (i - 1) >> 2
            let p = items[parent]
            if p <= key { break }
            items[i] = p
            i = parent
        }
        items[i] = key
    }

    @inline(__always)
    mutating func pop() -> UInt64? {
        guard count > 0 else { return nil }
        let top = items[0]
        count -= 1
        if count == 0 { return top }
        let last = items[count]
        let n = count
        var i = 0
        while true {
            let first = 4 * i + 1
            if first >= n { break }
            var child = first
            var best = items[first]
            let end = min(first + 4, n)
            var c = first + 1
            while c < end {
                let v = items[c]
                if v < best {
                    best = v
                    child = c
                }
                c += 1
            }
            if best >= last { break }
            items[i] = best
            i = child
        }
        items[i] = last
        return top
    }
}
