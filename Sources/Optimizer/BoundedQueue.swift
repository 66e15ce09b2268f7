import Foundation
import NIOConcurrencyHelpers
import Synchronization

/// A bounded hand-off from the hot path to one background worker thread. `offer` never blocks on the worker and
/// makes no system call in the common case: it appends under a short, normally uncontended lock. The worker drains
/// the queue in batches every `interval` (so a record is published at most that late), or as soon as a quarter of
/// the capacity is queued. When the queue is full the item is dropped and counted.
///
/// Within a batch the worker gives way to other threads (`sched_yield`) whenever it has worked `slice` since it
/// last did: where it shares a core with an event loop (a sidecar given one CPU, or pinned beside its upstream, as
/// the benchmarks do), a request that arrives during a batch then waits for at most that and the item in progress
/// (unless the core is saturated, below), not for the whole batch (every 5 ms, about one request in 38 waited
/// ~350-450 us behind the accounting of the batch; with a 25 us slice the passthrough sidecar's added p99 at
/// concurrency 1 went from +348-512 us to +137-280 us in five alternated benchmark pairs, p50 and CPU per request
/// unchanged within the noise: Benchmarks/results/accounting-yield-2026-12-01.md). With nothing else to run on the
/// core, a yield returns at once.
/// On a saturated core giving way keeps the worker behind until the queue fills (each yield then waits for the other
/// busy threads' whole time slices, milliseconds): measured, 24,315 of ~58,500 records dropped at concurrency 64 on
/// one shared core when it always yielded. So the worker does not give way in a batch of more than
/// ``yieldingBatchLimit`` items (it is behind), nor for the rest of a batch once its yields in that batch kept it off
/// the core for ``yieldBudgetTicks`` ticks in all (a request or two on an unsaturated core take far less, even a
/// full-policy request of ~1.5 ms): with the batch limit alone, a batch just under it still took ~0.5 s of yields, and
/// with a 2,048-record queue 379-1,146 records were dropped in each of three 5 s runs
/// (Tests/Integration/test_accounting_load.py).
public final class BoundedWorkQueue<Item: Sendable>: Sendable {
    private let state: NIOLockedValueBox<State>
    private let signal = NIOConcurrencyHelpers.ConditionLock(value: 0)
    private let counters = Counters()
    public let capacity: Int

    struct State {
        var items: [Item] = []
        var closed = false
    }

    /// Starts the worker thread, which calls `work` for each item in order.
    public init(capacity: Int, name: String, interval: Double = 0.005, slice: Duration = .microseconds(25),
                work: @escaping @Sendable (Item) -> Void)
    {
        self.capacity = capacity
        let sliceNanos = UInt64(max(0, slice.components.seconds)) * 1_000_000_000
            + UInt64(max(0, slice.components.attoseconds) / 1_000_000_000)
        let yieldBudgetNanos = UInt64(interval * 1e9) * Self.yieldBudgetTicks
        self.state = NIOLockedValueBox(State())
        let thread = Thread { [state, signal, counters] in
            // Idle, the tick slows down (up to 0.1 s) so an idle sidecar does not wake 200 times a second.
            var wait = interval
            // Two buffers swapped under the lock: the items move to the worker without being copied (a copy of a
            // record retains and later releases each of its dozens of references), and both keep their capacity.
            var batch: [Item] = []
            while true {
                if !signal.lock(whenValue: 1, timeoutSeconds: wait) { signal.lock() }
                let closed = state.withLockedValue { s -> Bool in
                    swap(&batch, &s.items)
                    return s.closed
                }
                signal.unlock(withValue: 0)
                wait = batch.isEmpty ? min(0.1, wait * 2) : interval
                // A long batch means the worker is behind (or was kept waiting by its own yields while the core was
                // saturated): it then works through without giving way, so the queue does not fill up.
                var yields = batch.count <= Self.yieldingBatchLimit
                var offCore: UInt64 = 0
                var since = DispatchTime.now().uptimeNanoseconds
                for i in batch.indices {
                    work(batch[i])
                    counters.processed.add(1, ordering: .relaxed)
                    guard yields else { continue }
                    let now = DispatchTime.now().uptimeNanoseconds
                    if now &- since >= sliceNanos {
                        sched_yield()
                        since = DispatchTime.now().uptimeNanoseconds
                        // Kept off the core for four ticks in this batch: the core is saturated (the scheduler runs
                        // other busy threads for their whole slices), not briefly needed by a request or two. Giving
                        // way at every slice would then stretch the batch over seconds; the rest is worked through.
                        offCore &+= since &- now
                        if offCore >= yieldBudgetNanos { yields = false }
                    }
                }
                batch.removeAll(keepingCapacity: true)
                if closed { return }
            }
        }
        thread.name = name
        thread.start()
    }

    /// Hands `item` to the worker; false (and counted) when the queue is full.
    @discardableResult
    public func offer(_ item: consuming Item) -> Bool {
        var pending: Item? = consume item
        let (accepted, queued) = state.withLockedValue { s -> (Bool, Int) in
            if s.closed || s.items.count >= capacity { return (false, 0) }
            s.items.append(pending.take()!)  // moved in, not copied
            return (true, s.items.count)
        }
        guard accepted else {
            counters.dropped.add(1, ordering: .relaxed)
            return false
        }
        if queued >= capacity / 4 {
            // Filling up: wake the worker now instead of at its next tick.
            signal.lock()
            signal.unlock(withValue: 1)
        }
        return true
    }

    /// The longest batch within which the worker still gives way (``init(capacity:name:interval:slice:work:)``):
    /// 256 items in a 5 ms tick is ~51,000 a second.
    static var yieldingBatchLimit: Int { 256 }

    /// How long (in ticks, `interval`) a batch's yields may keep the worker off the core in all before it stops giving
    /// way for the rest of the batch: 20 ms with the 5 ms tick. One tick was too little where the event loop alone
    /// nearly fills the core at concurrency 1 (full policy, static upstream: ~170 us a request, so ~30 yields of one
    /// request each per batch reached it and the rest of the batch held requests up; added p99 +452 / +561 us against
    /// +377 / +434 without the rule); on a saturated core a yield costs milliseconds, so a few reach it.
    static var yieldBudgetTicks: UInt64 { 4 }

    /// Items dropped because the queue was full.
    public var droppedCount: Int { counters.dropped.load(ordering: .relaxed) }
    public var processedCount: Int { counters.processed.load(ordering: .relaxed) }

    /// Lets the worker finish what is queued, then stop.
    public func close() {
        state.withLockedValue { $0.closed = true }
        signal.lock()
        signal.unlock(withValue: 1)
    }
}

final class Counters: Sendable {
    let dropped = Atomic<Int>(0)
    let processed = Atomic<Int>(0)
}
