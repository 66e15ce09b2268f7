/// Durations in policy files: a non-negative number and a unit, `ms`, `s`, `m` or `h` ("500ms", "10s", "1.5s",
/// "2m"). A bare number is refused (the unit is never guessed).
enum PolicyDuration {
    static func parse(_ text: String) -> Duration? {
        let units: [(String, Double)] = [("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600)]
        for (unit, seconds) in units where text.hasSuffix(unit) {
            let number = text.dropLast(unit.count)
            // "ms" also ends in "s": make sure what is left is a number.
            guard !number.isEmpty, number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
                number.filter({ $0 == "." }).count <= 1, number.first != ".", number.last != ".",
                let value = Double(number)
            else { continue }
            let nanos = (value * seconds * 1e9).rounded()
            guard nanos < 1e18 else { return nil }
            return .nanoseconds(Int64(nanos))
        }
        return nil
    }
}
