import Atomics
import Foundation
import Synchronization

/// Spend per application over rolling windows, for budgets. Thread-safe; reads take no lock.
///
/// **Windows.** Spend is kept in integer pico-dollars (1e-12 USD) in ring buffers of buckets: 60 one-minute buckets
/// for the hour, 24 one-hour buckets for the day (UTC wall-clock minutes and hours since 1970). "Spent in the last
/// hour" at time t is the sum of t's minute bucket and the 59 before it, so it covers between 59 and 60 minutes of
/// history; "the last day" is t's hour bucket and the 23 before it (23 to 24 hours). Spend leaves a window a whole
/// bucket at a time, so an hourly budget frees up at minute boundaries and a daily one at hour boundaries.
///
/// **Concurrency.** ``record(app:usd:at:)`` (off the hot path, after a response's cost is known) serializes writers
/// with a mutex. ``state(app:at:)`` (the hot path) takes no lock: the table of apps is an immutable dictionary held in
/// an atomic strong reference (replaced, copy-on-write, when a new app first records), and each bucket is a pair of
/// atomics (the bucket's minute/hour number and its sum). A read racing a bucket rollover may miss that bucket's last
/// write; budgets are guards, not invoices, so this is accepted.
public final class BudgetTracker: Sendable {
    /// 84 buckets (60 minutes, then 24 hours), each a tag and a sum, in one block of atomic storage.
    final class AppSpend: @unchecked Sendable {
        // Sendable: the block is only accessed through UnsafeAtomic and freed in deinit.
        static let slots = 84
        let tags: UnsafeMutablePointer<UnsafeAtomic<Int64>.Storage>
        let sums: UnsafeMutablePointer<UnsafeAtomic<Int64>.Storage>

        init() {
            tags = .allocate(capacity: Self.slots)
            sums = .allocate(capacity: Self.slots)
            for i in 0..<Self.slots {
                (tags + i).initialize(to: .init(-1))
                (sums + i).initialize(to: .init(0))
            }
        }

        deinit {
            tags.deinitialize(count: Self.slots)
            sums.deinitialize(count: Self.slots)
            tags.deallocate()
            sums.deallocate()
        }

        @inline(__always) func tag(_ i: Int) -> UnsafeAtomic<Int64> { UnsafeAtomic(at: tags + i) }
        @inline(__always) func sum(_ i: Int) -> UnsafeAtomic<Int64> { UnsafeAtomic(at: sums + i) }
    }

    final class Table: Sendable, AtomicReference {
        let apps: [String: AppSpend]
        init(_ apps: [String: AppSpend]) { self.apps = apps }
    }

    private let table = ManagedAtomic(Table([:]))
    private let writer = Mutex(())

    public init() {}

    /// Adds `usd` (the actual cost of one request) to `app`'s spend at time `at`. Negative amounts are ignored.
    public func record(app: String, usd: Decimal, at date: Date = Date()) {
        guard usd > 0 else { return }
        let pico = ModelSelector.pico(usd) ?? Int64.max / 2
        recordPico(app: app, pico: pico, at: date)
    }

    /// ``record(app:usd:at:)`` in pico-dollars.
    public func recordPico(app: String, pico: Int64, at date: Date = Date()) {
        guard pico > 0 else { return }
        let minute = Self.minute(date)
        let hour = minute >= 0 ? minute / 60 : (minute - 59) / 60
        writer.withLock { _ in
            var current = table.load(ordering: .acquiring)
            var spend = current.apps[app]
            if spend == nil {
                let fresh = AppSpend()
                var apps = current.apps
                apps[app] = fresh
                current = Table(apps)
                table.store(current, ordering: .releasing)
                spend = fresh
            }
            let s = spend!
            Self.add(pico, tag: minute, slot: Int(Self.mod(minute, 60)), in: s)
            Self.add(pico, tag: hour, slot: 60 + Int(Self.mod(hour, 24)), in: s)
        }
    }

    /// Spend of `app` in the last hour and the last day at time `at`, in USD.
    public func state(app: String, at date: Date = Date()) -> (spentHour: Decimal, spentDay: Decimal) {
        let s = statePico(app: app, at: date)
        return (
            Decimal(sign: .plus, exponent: -12, significand: Decimal(s.hour)),
            Decimal(sign: .plus, exponent: -12, significand: Decimal(s.day))
        )
    }

    /// ``state(app:at:)`` in pico-dollars, without allocating.
    public func statePico(app: String, at date: Date) -> (hour: Int64, day: Int64) {
        guard let s = table.load(ordering: .acquiring).apps[app] else { return (0, 0) }
        let minute = Self.minute(date)
        let hour = minute >= 0 ? minute / 60 : (minute - 59) / 60
        return (
            Self.sum(now: minute, span: 60, first: 0, in: s),
            Self.sum(now: hour, span: 24, first: 60, in: s)
        )
    }

    static func minute(_ date: Date) -> Int64 {
        Int64((date.timeIntervalSince1970 / 60).rounded(.down))
    }

    static func mod(_ a: Int64, _ n: Int64) -> Int64 { ((a % n) + n) % n }

    /// Writers are serialized by the caller.
    static func add(_ pico: Int64, tag: Int64, slot: Int, in s: AppSpend) {
        let old = s.tag(slot).load(ordering: .acquiring)
        if old == tag {
            s.sum(slot).wrappingIncrement(by: pico, ordering: .releasing)
        } else if old < tag {
            // The slot held an older bucket: start this one. Readers skip the slot while its tag is out of window.
            s.sum(slot).store(pico, ordering: .releasing)
            s.tag(slot).store(tag, ordering: .releasing)
        }
        // old > tag: a record for a time older than the ring covers; dropped.
    }

    static func sum(now: Int64, span: Int64, first: Int, in s: AppSpend) -> Int64 {
        var total: Int64 = 0
        for slot in first..<(first + Int(span)) {
            let tag = s.tag(slot).load(ordering: .acquiring)
            if tag > now - span && tag <= now {
                total &+= s.sum(slot).load(ordering: .acquiring)
            }
        }
        return total
    }
}
