import Foundation
import NIOConcurrencyHelpers
import Testing

@testable import Optimizer

/// The worker hands every item to `work` once, in order, whether it gives way after every item (a zero slice), now
/// and then (the default) or never within a batch, and in batches longer than the yielding limit (where it does not
/// give way); `close` lets it finish what is queued.
@Suite struct BoundedWorkQueueTests {
    @Test(arguments: [Duration.zero, .microseconds(25), .seconds(3600)])
    func everyItemOnceInOrder(slice: Duration) async throws {
        let seen = NIOLockedValueBox<[Int]>([])
        let queue = BoundedWorkQueue<Int>(capacity: 4096, name: "test", interval: 0.001, slice: slice) { item in
            // Some work per item, so that a 25 us slice ends within a batch.
            var x = UInt64(item)
            for _ in 0..<2_000 { x = x &* 6364136223846793005 &+ 1442695040888963407 }
            seen.withLockedValue { $0.append(item &+ Int(x & 0)) }
        }
        // Short batches (a few ticks apart), then one longer than the limit.
        var n = 0
        for _ in 0..<5 {
            for _ in 0..<100 {
                #expect(queue.offer(n))
                n += 1
            }
            try await Task.sleep(for: .milliseconds(3))
        }
        for _ in 0..<(BoundedWorkQueue<Int>.yieldingBatchLimit * 2) {
            #expect(queue.offer(n))
            n += 1
        }
        queue.close()
        let deadline = ContinuousClock.now + .seconds(10)
        while queue.processedCount < n && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(queue.processedCount == n)
        #expect(queue.droppedCount == 0)
        #expect(seen.withLockedValue { $0 } == Array(0..<n))
    }
}
