import CLZ4
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One encoded OTLP export request and how many spans it holds.
public struct SpanBatch: Sendable, Equatable {
    public var payload: [UInt8]
    public var spanCount: Int

    public init(payload: [UInt8], spanCount: Int) {
        self.payload = payload
        self.spanCount = spanCount
    }
}

/// LZ4 block compression (liblz4) for spool segments.
public enum LZ4 {
    public static func compress(_ input: [UInt8]) -> [UInt8] {
        let bound = Int(LZ4_compressBound(Int32(input.count)))
        var out = [UInt8](repeating: 0, count: max(bound, 1))
        let n = input.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                src.baseAddress!.withMemoryRebound(to: CChar.self, capacity: src.count) { s in
                    dst.baseAddress!.withMemoryRebound(to: CChar.self, capacity: dst.count) { d in
                        LZ4_compress_default(s, d, Int32(src.count), Int32(dst.count))
                    }
                }
            }
        }
        out.removeSubrange(Int(max(n, 0))...)
        return out
    }

    /// nil when `input` is not a valid LZ4 block of exactly `originalSize` bytes.
    public static func decompress(_ input: [UInt8], originalSize: Int) -> [UInt8]? {
        guard originalSize >= 0, !input.isEmpty else { return originalSize == 0 ? [] : nil }
        var out = [UInt8](repeating: 0, count: max(originalSize, 1))
        let n = input.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                src.baseAddress!.withMemoryRebound(to: CChar.self, capacity: src.count) { s in
                    dst.baseAddress!.withMemoryRebound(to: CChar.self, capacity: dst.count) { d in
                        LZ4_decompress_safe(s, d, Int32(src.count), Int32(originalSize))
                    }
                }
            }
        }
        guard n == Int32(originalSize) else { return nil }
        out.removeSubrange(originalSize...)
        return out
    }
}

/// A directory of LZ4-compressed span batches waiting for the collector, oldest first; bounded in bytes (the
/// oldest segments go first, counted). Each segment is one file `seg-<sequence>.lz4`: magic `AOS1`, span count,
/// uncompressed length (u32 LE each), then the LZ4 block. Files are written to a temporary name and renamed, so a
/// crash leaves whole segments or none. A segment is deleted only after the collector acknowledged it: delivery is
/// at least once. One process owns a directory at a time (`flock` on `LOCK`). Not thread-safe: used by the
/// exporter's single task.
public final class SpanSpool {
    public let directory: URL
    public let maxBytes: Int
    private var segments: [(seq: UInt64, url: URL, bytes: Int, spans: Int)] = []
    private var nextSeq: UInt64 = 1
    private var lockFD: Int32 = -1
    public private(set) var totalBytes = 0
    /// Spans dropped because the spool was full (or a segment was unreadable).
    public private(set) var droppedSpans = 0

    static let magic: [UInt8] = Array("AOS1".utf8)

    public init(directory: String, maxBytes: Int) throws(TelemetryError) {
        self.directory = URL(fileURLWithPath: directory, isDirectory: true)
        self.maxBytes = maxBytes
        do {
            try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        } catch {
            throw TelemetryError(code: .spool, message: "cannot create spool directory \(directory)", cause: error)
        }
        let lockPath = self.directory.appendingPathComponent("LOCK").path
        lockFD = open(lockPath, O_CREAT | O_RDWR, 0o644)
        guard lockFD >= 0, flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            if lockFD >= 0 { close(lockFD) }
            throw TelemetryError(code: .spool, message: "spool directory \(directory) is in use by another process")
        }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names {
            if name.hasSuffix(".tmp") {
                try? FileManager.default.removeItem(at: self.directory.appendingPathComponent(name))
                continue
            }
            guard name.hasPrefix("seg-"), name.hasSuffix(".lz4"),
                  let seq = UInt64(name.dropFirst(4).dropLast(4)) else { continue }
            let url = self.directory.appendingPathComponent(name)
            let size = (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
            let spans = Self.readHeader(url)?.spans ?? 0
            segments.append((seq, url, size, spans))
            totalBytes += size
            nextSeq = max(nextSeq, seq + 1)
        }
        segments.sort { $0.seq < $1.seq }
    }

    deinit {
        if lockFD >= 0 { close(lockFD) }
    }

    public var isEmpty: Bool { segments.isEmpty }
    public var segmentCount: Int { segments.count }
    public var spanCount: Int { segments.reduce(0) { $0 + $1.spans } }

    /// Writes `batch` as the newest segment, dropping the oldest ones while over `maxBytes`.
    public func append(_ batch: SpanBatch) throws(TelemetryError) {
        let compressed = LZ4.compress(batch.payload)
        var file = Self.magic
        Self.appendU32(UInt32(batch.spanCount), to: &file)
        Self.appendU32(UInt32(batch.payload.count), to: &file)
        file.append(contentsOf: compressed)
        let seq = nextSeq
        nextSeq += 1
        let name = String(format: "seg-%020llu.lz4", seq)
        let url = directory.appendingPathComponent(name)
        let tmp = directory.appendingPathComponent(name + ".tmp")
        do {
            try Data(file).write(to: tmp)
            try FileManager.default.moveItem(at: tmp, to: url)
        } catch {
            try? FileManager.default.removeItem(at: tmp)
            droppedSpans += batch.spanCount
            throw TelemetryError(code: .spool, message: "cannot write spool segment \(url.path)", cause: error)
        }
        segments.append((seq, url, file.count, batch.spanCount))
        totalBytes += file.count
        while totalBytes > maxBytes, segments.count > 1 {
            let old = segments.removeFirst()
            try? FileManager.default.removeItem(at: old.url)
            totalBytes -= old.bytes
            droppedSpans += old.spans
        }
    }

    /// The oldest segment, decoded (unreadable segments are deleted and counted as dropped).
    public func peek() -> SpanBatch? {
        while let first = segments.first {
            if let batch = Self.read(first.url) { return batch }
            remove(first.seq)
            droppedSpans += first.spans
        }
        return nil
    }

    /// Deletes the oldest segment (after its export succeeded).
    public func removeOldest() {
        if let first = segments.first { remove(first.seq) }
    }

    private func remove(_ seq: UInt64) {
        guard let i = segments.firstIndex(where: { $0.seq == seq }) else { return }
        let s = segments.remove(at: i)
        try? FileManager.default.removeItem(at: s.url)
        totalBytes -= s.bytes
    }

    static func readHeader(_ url: URL) -> (spans: Int, rawLength: Int)? {
        guard let h = FileHandle(forReadingAtPath: url.path) else { return nil }
        defer { try? h.close() }
        guard let d = try? h.read(upToCount: 12), d.count == 12, Array(d.prefix(4)) == magic else { return nil }
        let b = Array(d)
        return (Int(u32(b, 4)), Int(u32(b, 8)))
    }

    static func read(_ url: URL) -> SpanBatch? {
        guard let d = FileManager.default.contents(atPath: url.path), d.count >= 12 else { return nil }
        let b = [UInt8](d)
        guard Array(b.prefix(4)) == magic else { return nil }
        let spans = Int(u32(b, 4))
        let raw = Int(u32(b, 8))
        guard let payload = LZ4.decompress(Array(b[12...]), originalSize: raw) else { return nil }
        return SpanBatch(payload: payload, spanCount: spans)
    }

    static func appendU32(_ v: UInt32, to out: inout [UInt8]) {
        for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) }
    }

    static func u32(_ b: [UInt8], _ at: Int) -> UInt32 {
        UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
    }
}
