import Testing
@testable import Compression

@Suite struct LosslessTests {
    @Test func placeholder() { #expect(Lossless.normalizeWhitespace(Array("a  b".utf8)) == Array("a b".utf8)) }
}
