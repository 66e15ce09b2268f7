/// Query parameters of a request target (`/v1/realtime?model=gpt-realtime`).
public enum URLQuery {
    /// The value of the first parameter `name` in `uri`'s query, with `+` read as a space and `%XX` escapes
    /// decoded; when the escapes are malformed or do not decode to UTF-8, the value as written (`+` still a space).
    public static func value(_ name: String, in uri: some StringProtocol) -> String? {
        let utf8 = uri.utf8
        guard let q = utf8.firstIndex(of: UInt8(ascii: "?")) else { return nil }
        for pair in utf8[utf8.index(after: q)...].split(separator: UInt8(ascii: "&")) {
            guard let eq = pair.firstIndex(of: UInt8(ascii: "=")), pair[..<eq].elementsEqual(name.utf8) else {
                continue
            }
            let spaced = pair[pair.index(after: eq)...].map { $0 == UInt8(ascii: "+") ? UInt8(ascii: " ") : $0 }
            return decode(spaced) ?? String(decoding: spaced, as: UTF8.self)
        }
        return nil
    }

    /// `%XX` escapes decoded; nil when one is malformed or the result is not UTF-8.
    static func decode(_ encoded: [UInt8]) -> String? {
        var out: [UInt8] = []
        out.reserveCapacity(encoded.count)
        var i = 0
        while i < encoded.count {
            if encoded[i] == UInt8(ascii: "%") {
                guard i + 2 < encoded.count, let hi = hexValue(encoded[i + 1]), let lo = hexValue(encoded[i + 2]) else {
                    return nil
                }
                out.append(UInt8(hi << 4 | lo))
                i += 3
            } else {
                out.append(encoded[i])
                i += 1
            }
        }
        return String(validating: out, as: UTF8.self)
    }
}
