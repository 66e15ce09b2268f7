import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import Synchronization

/// Takes finished spans off the accounting thread (never blocking it), batches them, exports them, and keeps them
/// while the collector is down: first in memory (up to `memoryBufferBytes` of encoded batches), then in the LZ4
/// spool on disk (bounded; survives a restart). Batches are removed only after the collector accepted them, so
/// delivery is at least once: a batch whose acknowledgement was lost is sent again. Spans are dropped (and
/// counted) only when the spool is full or absent and memory is full, or when the collector rejects a batch as
/// malformed (retrying cannot help).
public final class SpanExportPipeline: Service, Sendable {
    public struct Counters: Sendable, Equatable {
        public var enqueuedSpans = 0
        public var exportedSpans = 0
        public var exportedBatches = 0
        public var failedExports = 0
        /// Dropped spans by reason (`memory_full`, `spool_full`, `rejected`, `shutdown`).
        public var dropped: [String: Int] = [:]
        public var backlogBytes = 0
        public var backlogSpans = 0
        public var spoolBytes = 0
        public var spoolSpans = 0
    }

    struct Shared {
        var pending: [OTLPSpan] = []
        var sealed: [SpanBatch] = []
        var sealedBytes = 0
        var counters = Counters()
    }

    let config: TelemetryConfiguration
    let resource: OTLPResource
    let transport: any OTLPSpanTransport
    let logger: Logger
    private let shared = NIOLockedValueBox(Shared())
    private let stopping = Atomic<Bool>(false)
    private let finishedFlag = Atomic<Bool>(false)
    private let worker: NIOLockedValueBox<Worker>

    /// Task-owned delivery state (only the run loop or a test touches it, one at a time).
    final class Worker: @unchecked Sendable {
        var backlog: [SpanBatch] = []
        var backlogBytes = 0
        var spool: SpanSpool?
        var nextAttempt = ContinuousClock.now
        var backoff: Duration = .milliseconds(250)
        var lastErrorLog = ContinuousClock.now - .seconds(60)
    }

    public init(config: TelemetryConfiguration, resource: OTLPResource, transport: any OTLPSpanTransport,
                logger: Logger)
    {
        self.config = config
        self.resource = resource
        self.transport = transport
        self.logger = logger
        let w = Worker()
        if let dir = config.spoolDirectory {
            do {
                w.spool = try SpanSpool(directory: dir, maxBytes: config.spoolMaxBytes)
                if let s = w.spool, !s.isEmpty {
                    logger.info("telemetry spool has batches from an earlier run", metadata: [
                        "directory": "\(dir)", "segments": "\(s.segmentCount)", "spans": "\(s.spanCount)",
                    ])
                }
            } catch {
                logger.error("telemetry spool disabled: \(error)")
            }
        }
        self.worker = NIOLockedValueBox(w)
        shared.withLockedValue { s in
            s.counters.spoolBytes = w.spool?.totalBytes ?? 0
            s.counters.spoolSpans = w.spool?.spanCount ?? 0
        }
    }

    public var counters: Counters { shared.withLockedValue { $0.counters } }

    /// Hands spans to the exporter. Never blocks on I/O: appends under a short lock; when `maxQueueSize` spans are
    /// waiting, they are sealed into a batch at once (encoded here, off the hot path) for the run loop to deliver
    /// or spill.
    public func enqueue(_ spans: [OTLPSpan]) {
        guard !spans.isEmpty else { return }
        let full: [OTLPSpan]? = shared.withLockedValue { s in
            s.counters.enqueuedSpans += spans.count
            s.pending.append(contentsOf: spans)
            if s.pending.count >= config.maxQueueSize {
                defer { s.pending = [] }
                return s.pending
            }
            return nil
        }
        guard let full else { return }
        let batches = encode(full)
        shared.withLockedValue { s in
            for b in batches {
                // Bounded even if the run loop is stuck: beyond twice the memory budget, drop and count.
                if s.sealedBytes + b.payload.count > max(2 * config.memoryBufferBytes, 1 << 20) {
                    s.counters.dropped["memory_full", default: 0] += b.spanCount
                    continue
                }
                s.sealed.append(b)
                s.sealedBytes += b.payload.count
            }
        }
    }

    func encode(_ spans: [OTLPSpan]) -> [SpanBatch] {
        var out: [SpanBatch] = []
        var i = 0
        let size = max(1, config.maxExportBatchSize)
        while i < spans.count {
            let chunk = Array(spans[i..<min(spans.count, i + size)])
            out.append(SpanBatch(payload: OTLPTraceEncoder.exportRequest(resource: resource, spans: chunk),
                                 spanCount: chunk.count))
            i += size
        }
        return out
    }

    public func run() async throws {
        await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try? await self.transport.run() }
            await withGracefulShutdownHandler {
                await self.loop()
            } onGracefulShutdown: {
                self.stopping.store(true, ordering: .relaxed)
            }
            await self.transport.shutdown()
            group.cancelAll()
        }
        finishedFlag.store(true, ordering: .releasing)
    }

    /// True once `run()` has exported or spooled what it had and returned.
    public var finished: Bool { finishedFlag.load(ordering: .acquiring) }

    /// Stops the loop (for callers not using ServiceLifecycle); `run()` then flushes and spills before it returns.
    public func stop() { stopping.store(true, ordering: .relaxed) }

    func loop() async {
        var lastCollect = ContinuousClock.now
        while !stopping.load(ordering: .relaxed) {
            try? await Task.sleep(for: .milliseconds(50))
            let now = ContinuousClock.now
            let due = now - lastCollect >= config.scheduleDelay
            let hasSealed = shared.withLockedValue { !$0.sealed.isEmpty }
            let retryDue = worker.withLockedValue { w in
                (!w.backlog.isEmpty || !(w.spool?.isEmpty ?? true)) && now >= w.nextAttempt
            }
            if due || hasSealed || retryDue {
                if due { lastCollect = now }
                await cycle(collectPending: due, deadline: nil)
            }
        }
        // Shutting down: one last attempt (bounded by the export timeout; none while backing off after a failure),
        // then keep what is left in the spool.
        await cycle(collectPending: true, deadline: ContinuousClock.now + config.exportTimeout, ignoreBackoff: false)
        spillAll()
    }

    /// Collects waiting spans into batches, delivers what it can (spool first: it holds the oldest), spills the
    /// memory backlog beyond its budget. Used by the run loop and by tests.
    public func cycle(collectPending: Bool = true, deadline: ContinuousClock.Instant?, ignoreBackoff: Bool = true) async {
        collect(includePending: collectPending)
        spill(over: config.memoryBufferBytes)  // before a possibly slow export, so the budget holds meanwhile
        await deliver(deadline: deadline, ignoreBackoff: ignoreBackoff && deadline != nil)
        spill(over: config.memoryBufferBytes)
        publish()
    }

    func collect(includePending: Bool) {
        let (pending, sealed) = shared.withLockedValue { s -> ([OTLPSpan], [SpanBatch]) in
            let p = includePending ? s.pending : []
            if includePending { s.pending = [] }
            let b = s.sealed
            s.sealed = []
            s.sealedBytes = 0
            return (p, b)
        }
        let batches = sealed + encode(pending)
        guard !batches.isEmpty else { return }
        worker.withLockedValue { w in
            for b in batches {
                w.backlog.append(b)
                w.backlogBytes += b.payload.count
            }
        }
    }

    func deliver(deadline: ContinuousClock.Instant?, ignoreBackoff: Bool) async {
        while true {
            if let deadline, ContinuousClock.now >= deadline { return }
            // Take the oldest batch (spool first) without holding the lock across the export.
            let next: (SpanBatch, fromSpool: Bool)? = worker.withLockedValue { w in
                if ContinuousClock.now < w.nextAttempt && !ignoreBackoff { return nil }
                if let s = w.spool, let b = s.peek() { return (b, true) }
                if let b = w.backlog.first { return (b, false) }
                return nil
            }
            guard let (batch, fromSpool) = next else { return }
            var outcome: TelemetryError?
            do {
                try await transport.export(batch.payload)
            } catch {
                outcome = error
            }
            let rejected = outcome?.code == .exportRejected
            if outcome == nil || rejected {
                worker.withLockedValue { w in
                    if fromSpool {
                        w.spool?.removeOldest()
                    } else {
                        w.backlog.removeFirst()
                        w.backlogBytes -= batch.payload.count
                    }
                    w.backoff = .milliseconds(250)
                }
                shared.withLockedValue { s in
                    if rejected {
                        s.counters.dropped["rejected", default: 0] += batch.spanCount
                    } else {
                        s.counters.exportedSpans += batch.spanCount
                        s.counters.exportedBatches += 1
                    }
                }
                if let outcome { logger.warning("telemetry batch rejected by the collector: \(outcome)") }
                continue
            }
            shared.withLockedValue { $0.counters.failedExports += 1 }
            let log = worker.withLockedValue { w -> Bool in
                w.nextAttempt = ContinuousClock.now + w.backoff
                w.backoff = min(w.backoff * 2, config.retryMaxDelay)
                if ContinuousClock.now - w.lastErrorLog > .seconds(30) {
                    w.lastErrorLog = ContinuousClock.now
                    return true
                }
                return false
            }
            if log { logger.warning("telemetry export failed; keeping spans and retrying: \(outcome!)") }
            return
        }
    }

    /// Moves the oldest memory batches to the spool while the backlog is over `limit` bytes.
    func spill(over limit: Int) {
        let dropped = worker.withLockedValue { w -> [String: Int] in
            var dropped: [String: Int] = [:]
            while w.backlogBytes > limit, !w.backlog.isEmpty {
                let b = w.backlog.removeFirst()
                w.backlogBytes -= b.payload.count
                if let s = w.spool {
                    let before = s.droppedSpans
                    do {
                        try s.append(b)
                    } catch {
                        logger.error("telemetry spool write failed: \(error)")
                    }
                    if s.droppedSpans > before { dropped["spool_full", default: 0] += s.droppedSpans - before }
                } else {
                    dropped[limit == 0 ? "shutdown" : "memory_full", default: 0] += b.spanCount
                }
            }
            return dropped
        }
        if !dropped.isEmpty {
            shared.withLockedValue { s in
                for (k, v) in dropped { s.counters.dropped[k, default: 0] += v }
            }
        }
    }

    func spillAll() {
        collect(includePending: true)
        spill(over: 0)
        publish()
        let c = counters
        if c.spoolSpans > 0 {
            logger.info("telemetry: spans kept in the spool for the next run", metadata: ["spans": "\(c.spoolSpans)"])
        }
    }

    func publish() {
        let (bb, bs, sb, ss) = worker.withLockedValue { w in
            (w.backlogBytes, w.backlog.reduce(0) { $0 + $1.spanCount }, w.spool?.totalBytes ?? 0, w.spool?.spanCount ?? 0)
        }
        shared.withLockedValue { s in
            s.counters.backlogBytes = bb
            s.counters.backlogSpans = bs
            s.counters.spoolBytes = sb
            s.counters.spoolSpans = ss
        }
    }
}
