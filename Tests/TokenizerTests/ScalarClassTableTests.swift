import Foundation
import Testing

@testable import Tokenizer

/// The shipped scalar-class snapshot (`Sources/Tokenizer/Resources/scalar-classes.bin`) against the classes computed
/// from this runtime's Unicode properties. To regenerate the snapshot (after a change to ``ScalarClass/compute(_:)``):
/// `AO_REGENERATE_SCALAR_CLASSES=1 swift test --filter ScalarClassTableTests`, then rebuild.
@Suite struct ScalarClassTableTests {
    static let count = Int(ScalarClassTable.tableLimit)

    static func computed() -> [UInt8] {
        var table = [UInt8](repeating: 0, count: count)
        table.withUnsafeMutableBufferPointer { ScalarClassTable.compute(into: $0) }
        return table
    }

    @Test func shippedSnapshotEqualsTheComputedClasses() throws {
        let expected = Self.computed()
        if ProcessInfo.processInfo.environment["AO_REGENERATE_SCALAR_CLASSES"] == "1" {
            let target = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("../../Sources/Tokenizer/Resources/scalar-classes.bin").standardizedFileURL
            let snapshot = expected.withUnsafeBufferPointer { ScalarClassTable.snapshot(of: $0) }
            try Data(snapshot).write(to: target)
            Issue.record("wrote \(target.path) (\(snapshot.count) bytes); rebuild and run the tests again")
            return
        }
        let shared = ScalarClassTable.shared
        #expect(shared.fromSnapshot, "the snapshot is missing or malformed: the table was computed at start")
        let url = try #require(ScalarClassTable.snapshotURL)
        let data = try Data(contentsOf: url)
        var expanded = [UInt8](repeating: 0xFF, count: Self.count)
        let ok = data.withUnsafeBytes { raw in
            expanded.withUnsafeMutableBufferPointer { ScalarClassTable.expand(snapshot: raw, into: $0) }
        }
        #expect(ok)
        var differing = 0
        var first: Int?
        for i in 0..<Self.count where expanded[i] != expected[i] || shared.classes[i] != expected[i] {
            differing += 1
            if first == nil { first = i }
        }
        #expect(differing == 0, "\(differing) scalars differ, the first U+\(String(first ?? 0, radix: 16, uppercase: true))")
    }

    @Test func snapshotRoundTripsAndRejectsDamage() {
        let table = Self.computed()
        let snapshot = table.withUnsafeBufferPointer { ScalarClassTable.snapshot(of: $0) }
        func expands(_ bytes: [UInt8], count: Int = ScalarClassTableTests.count) -> [UInt8]? {
            var out = [UInt8](repeating: 0xFF, count: count)
            let ok = bytes.withUnsafeBytes { raw in
                out.withUnsafeMutableBufferPointer { ScalarClassTable.expand(snapshot: raw, into: $0) }
            }
            return ok ? out : nil
        }
        #expect(expands(snapshot) == table)
        // A flipped class byte, a truncated file, a wrong size, a wrong magic, nothing at all.
        var flipped = snapshot
        flipped[8] ^= 0x01
        #expect(expands(flipped) == nil)
        #expect(expands(Array(snapshot.dropLast(4))) == nil)
        #expect(expands(snapshot, count: Self.count - 1) == nil)
        var magic = snapshot
        magic[0] = 0x58
        #expect(expands(magic) == nil)
        #expect(expands([]) == nil)
        // Runs that do not add up to the size, with a valid checksum: rejected too.
        var short = Array(snapshot.dropLast(32 + 4))
        short.append(contentsOf: SHA256.hash(short))
        #expect(expands(short) == nil)
    }
}
