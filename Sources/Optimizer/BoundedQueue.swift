import Foundation
import NIOConcurrencyHelpers
import Synchronization

/// A bounded hand-off from the hot path to one background worker thread. `offer` never blocks on the worker:
/// it takes a short uncontended lock to append, and when the queue is full it drops the item and counts it.
public final class BoundedWorkQueue<Item: Sendable>: Sendable {
    private let state: NIOLockedValueBox<State>
    private let signal = NIOConcurrencyHelpers.ConditionLock(value: 0)
    private let counters = Counters()
    public let capacity: Int

    struct State {
        var items: [Item] = []
        var head = 0
        var closed = false
    }

    /// Starts the worker thread, which calls `work` for each item in order.
    public init(capacity: Int, name: String, work: @escaping @Sendable (Item) -> Void) {
        self.capacity = capacity
        self.state = NIOLockedValueBox(State())
        let thread = Thread { [state, signal, counters] in
            while true {
                signal.lock(whenValue: 1)
                let (batch, closed) = state.withLockedValue { s -> ([Item], Bool) in
                    let b = Array(s.items[s.head...])
                    s.items.removeAll(keepingCapacity: true)
                    s.head = 0
                    return (b, s.closed)
                }
                signal.unlock(withValue: 0)
                for item in batch {
                    work(item)
                    counters.processed.add(1, ordering: .relaxed)
                }
                if closed { return }
            }
        }
        thread.name = name
        thread.start()
    }

    /// Hands `item` to the worker; false (and counted) when the queue is full.
    @discardableResult
    public func offer(_ item: Item) -> Bool {
        let accepted = state.withLockedValue { s -> Bool in
            if s.closed || s.items.count - s.head >= capacity { return false }
            s.items.append(item)
            return true
        }
        guard accepted else {
            counters.dropped.add(1, ordering: .relaxed)
            return false
        }
        // The worker holds the condition lock only while swapping a batch out, so this wait is short.
        signal.lock()
        signal.unlock(withValue: 1)
        return true
    }

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
