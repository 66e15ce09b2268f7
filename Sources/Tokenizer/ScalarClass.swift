import Foundation

/// Character classes of the pre-tokenizer, one bit each, precomputed per Unicode scalar.
///
/// `\s` in tiktoken's regex engine (fancy-regex over Rust's regex crate) is the Unicode `White_Space`
/// property, which is what `Unicode.Scalar.Properties.isWhitespace` reports; `\p{L}`, `\p{N}` and `\p{M}`
/// are general categories.
enum ScalarClass {
    /// `\s` (Unicode White_Space).
    static let whitespace: UInt8 = 1 << 0
    /// Lu, Lt.
    static let upperTitle: UInt8 = 1 << 1
    /// Ll.
    static let lower: UInt8 = 1 << 2
    /// Lm, Lo.
    static let otherLetter: UInt8 = 1 << 3
    /// Mn, Mc, Me.
    static let mark: UInt8 = 1 << 4
    /// Nd, Nl, No.
    static let number: UInt8 = 1 << 5
    /// `\r` or `\n`.
    static let crlf: UInt8 = 1 << 6

    /// `\p{L}`.
    static let letter: UInt8 = upperTitle | lower | otherLetter
    /// o200k's `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`.
    static let o200kUpper: UInt8 = upperTitle | otherLetter | mark
    /// o200k's `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`.
    static let o200kLower: UInt8 = lower | otherLetter | mark
    /// Excluded from `[^\r\n\p{L}\p{N}]` (the optional one-character prefix of a word).
    static let notPrefix: UInt8 = letter | number | crlf
    /// Excluded from `[^\s\p{L}\p{N}]` (punctuation, symbols, marks, controls...).
    static let notPunct: UInt8 = whitespace | letter | number

    /// The Unicode version of tiktoken's character tables (the Rust regex crate's, Unicode 16.0 in tiktoken
    /// 0.14). Scalars assigned later (the Swift runtime may know a newer Unicode) are treated as unassigned,
    /// which the regex classes put in `[^\s\p{L}\p{N}]`.
    static let referenceUnicodeVersion = (major: 16, minor: 0)

    /// Never inlined: `Unicode.Scalar.Properties` and `Unicode.GeneralCategory` are resilient types, and a scanner
    /// this is inlined into pays their metadata lookups and stack allocations on every call, not only for the rare
    /// scalar above ``ScalarClassTable/tableLimit``.
    @inline(never)
    static func compute(_ value: UInt32) -> UInt8 {
        guard let scalar = Unicode.Scalar(value) else { return 0 }
        let props = scalar.properties
        if let age = props.age,
            age.major > referenceUnicodeVersion.major
                || (age.major == referenceUnicodeVersion.major && age.minor > referenceUnicodeVersion.minor)
        {
            return 0
        }
        var cls: UInt8 = props.isWhitespace ? whitespace : 0
        if value == 0x0A || value == 0x0D { cls |= crlf }
        switch props.generalCategory {
        case .uppercaseLetter, .titlecaseLetter: cls |= upperTitle
        case .lowercaseLetter: cls |= lower
        case .modifierLetter, .otherLetter: cls |= otherLetter
        case .nonspacingMark, .spacingMark, .enclosingMark: cls |= mark
        case .decimalNumber, .letterNumber, .otherNumber: cls |= number
        default: break
        }
        return cls
    }
}

/// Class of every scalar below U+30000 (the BMP and the two supplementary planes with letters: CJK extensions,
/// historic scripts), ~200 KB, made once on first use; scalars above are classified on the fly.
///
/// The table comes from a snapshot shipped in the resources (`scalar-classes.bin`, run-length encoded, 13 KB; see
/// ``snapshot(of:)``): computing it from the runtime's Unicode properties took ~22 ms, a quarter of loading
/// o200k_base, and that load happens on the accounting worker at a sidecar's first request, where under a burst the
/// wait filled the accounting queue (Tests/Integration/test_accounting_load.py). A snapshot that is missing from the
/// resources or does not check out is replaced by the computed table (same classes, the old cost); like the shipped
/// vocabularies, it needs the module's resource bundle (`Bundle.module` stops the process without it). A unit test checks that the
/// snapshot equals ``ScalarClass/compute(_:)`` for every scalar and regenerates it on request.
final class ScalarClassTable: @unchecked Sendable {
    static let tableLimit: UInt32 = 0x30000
    static let shared = ScalarClassTable()

    /// Immutable after `init`; never freed (lives as long as the process).
    let classes: UnsafeMutablePointer<UInt8>
    /// Whether `classes` came from the shipped snapshot (false: computed at start).
    let fromSnapshot: Bool

    private init() {
        let count = Int(Self.tableLimit)
        classes = .allocate(capacity: count)
        let table = UnsafeMutableBufferPointer(start: classes, count: count)
        if let url = Self.snapshotURL, let data = try? Data(contentsOf: url),
            data.withUnsafeBytes({ Self.expand(snapshot: $0, into: table) })
        {
            fromSnapshot = true
        } else {
            Self.compute(into: table)
            fromSnapshot = false
        }
    }

    static var snapshotURL: URL? {
        Bundle.module.url(forResource: "scalar-classes", withExtension: "bin", subdirectory: "Resources")
    }

    /// The classes of scalars `0..<table.count`, from the runtime's Unicode properties.
    static func compute(into table: UnsafeMutableBufferPointer<UInt8>) {
        for value in table.indices {
            table[value] = ScalarClass.compute(UInt32(value))
        }
    }

    static let snapshotMagic: [UInt8] = Array("SCT1".utf8)

    /// The snapshot format: "SCT1", the number of scalars (UInt32, little-endian), then runs of equal classes, each
    /// its class (one byte) and its length (three bytes, little-endian, at least 1), then the SHA-256 of all the
    /// bytes before it.
    static func snapshot(of table: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        var out = snapshotMagic
        withUnsafeBytes(of: UInt32(table.count).littleEndian) { out.append(contentsOf: $0) }
        var i = 0
        while i < table.count {
            let cls = table[i]
            var j = i + 1
            while j < table.count, table[j] == cls, j - i < 0xFF_FFFF { j += 1 }
            let length = j - i
            out.append(cls)
            out.append(UInt8(truncatingIfNeeded: length))
            out.append(UInt8(truncatingIfNeeded: length >> 8))
            out.append(UInt8(truncatingIfNeeded: length >> 16))
            i = j
        }
        out.append(contentsOf: SHA256.hash(out))
        return out
    }

    /// Fills `table` from `snapshot`; false (table contents unspecified) unless the snapshot is well formed, covers
    /// exactly `table.count` scalars and its checksum matches.
    static func expand(snapshot: UnsafeRawBufferPointer, into table: UnsafeMutableBufferPointer<UInt8>) -> Bool {
        let header = snapshotMagic.count + 4
        let bytes = snapshot.bindMemory(to: UInt8.self)
        guard bytes.count >= header + 32, (bytes.count - header - 32) % 4 == 0,
            bytes.prefix(snapshotMagic.count).elementsEqual(snapshotMagic)
        else { return false }
        let body = UnsafeRawBufferPointer(rebasing: snapshot[..<(bytes.count - 32)])
        guard SHA256.hash(body).elementsEqual(bytes[(bytes.count - 32)...]) else { return false }
        let count = Int(snapshot.loadUnaligned(fromByteOffset: snapshotMagic.count, as: UInt32.self).littleEndian)
        guard count == table.count, let base = table.baseAddress else { return false }
        var at = 0
        var r = header
        while r < bytes.count - 32 {
            let cls = bytes[r]
            let length = Int(bytes[r + 1]) | Int(bytes[r + 2]) << 8 | Int(bytes[r + 3]) << 16
            guard length > 0, length <= count - at else { return false }
            (base + at).update(repeating: cls, count: length)
            at += length
            r += 4
        }
        return at == count
    }
}
