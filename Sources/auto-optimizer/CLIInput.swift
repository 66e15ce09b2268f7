import ArgumentParser
import Foundation

/// Input and output plumbing shared by the file-or-stdin commands (`tokens`, `compress`).
enum CLIInput {
    /// The bytes of `file`, or of standard input when it is nil or "-". `fail` turns a read error into the
    /// command's own error exit.
    static func read(_ file: String?, fail: (String) -> ExitCode) throws -> Data {
        if let file, file != "-" {
            do {
                return try Data(contentsOf: URL(fileURLWithPath: file))
            } catch {
                throw fail("cannot read \(file): \(error.localizedDescription)")
            }
        }
        return FileHandle.standardInput.readDataToEndOfFile()
    }

    /// Calls `body(lineNumber, line)` for every line that is not blank; line numbers are 1-based and count the
    /// blank lines too.
    static func forEachLine(_ input: Data, _ body: (Int, Data) throws -> Void) rethrows {
        var lineNumber = 0
        var start = input.startIndex
        while start < input.endIndex {
            let end = input[start...].firstIndex(of: 0x0A) ?? input.endIndex
            lineNumber += 1
            let line = input[start..<end]
            start = end < input.endIndex ? input.index(after: end) : end
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
            try body(lineNumber, Data(line))
        }
    }

    /// Writes `out` to standard output once it holds 64 KiB, keeping memory flat on large inputs.
    static func flushIfLarge(_ out: inout [UInt8]) {
        if out.count >= 1 << 16 {
            FileHandle.standardOutput.write(Data(out))
            out.removeAll(keepingCapacity: true)
        }
    }
}
