import Atomics
import Catalog
import Synchronization

/// The current policy for the hot path, replaced atomically on reload.
///
/// **Reads** (``current``) are one lock-free atomic load of a strong reference (swift-atomics' `ManagedAtomic` of an
/// `AtomicReference` class). That primitive is what makes a lock-free read of a *replaceable* class reference safe:
/// the reader gets a +1 reference even if a reload releases the old snapshot at the same moment. (A plain
/// `Atomic<Unmanaged<CompiledPolicy>>` cannot do that without a reclamation scheme, and a `Mutex` would be a lock on
/// every request.) The old snapshot is freed when the last request holding it finishes.
///
/// **Reloads** (``reload(from:)``, ``replace(with:)``) are serialized by a mutex; a file that does not validate is
/// refused: the last good policy keeps serving, the failure is counted and its errors returned and kept in
/// ``lastError``. File watching and SIGHUP belong to the executable, which calls ``reload(from:)``.
public final class PolicyStore: Sendable {
    private let snapshot: ManagedAtomic<CompiledPolicy>
    private let state: Mutex<(catalog: ModelCatalog, lastError: PolicyError?)>
    private let reloads = ManagedAtomic<Int>(0)
    private let failures = ManagedAtomic<Int>(0)

    public init(initial: CompiledPolicy, catalog: ModelCatalog) {
        self.snapshot = ManagedAtomic(initial)
        self.state = Mutex((catalog, nil))
    }

    /// The policy to plan this request with. Lock-free; hold the returned reference for the whole request.
    @inline(__always)
    public var current: CompiledPolicy { snapshot.load(ordering: .acquiring) }

    /// Successful reloads and replacements so far.
    public var reloadCount: Int { reloads.load(ordering: .relaxed) }
    /// Refused reloads so far (for a metric).
    public var failureCount: Int { failures.load(ordering: .relaxed) }
    /// The errors of the last refused reload, nil after a successful one.
    public var lastError: PolicyError? { state.withLock { $0.lastError } }

    /// Reads, validates and compiles `path`; on success makes it current, on failure keeps the current policy.
    /// `catalog`, when given, replaces the catalog used for validation and `select` from now on.
    @discardableResult
    public func reload(from path: String, catalog newCatalog: ModelCatalog? = nil) -> Result<CompiledPolicy, PolicyError> {
        state.withLock { s in
            if let newCatalog { s.catalog = newCatalog }
            do throws(PolicyError) {
                let compiled = try CompiledPolicy(path: path, catalog: s.catalog)
                snapshot.store(compiled, ordering: .releasing)
                s.lastError = nil
                reloads.wrappingIncrement(ordering: .relaxed)
                return .success(compiled)
            } catch {
                s.lastError = error
                failures.wrappingIncrement(ordering: .relaxed)
                return .failure(error)
            }
        }
    }

    /// Makes an already compiled policy current (the control plane, tests).
    public func replace(with policy: CompiledPolicy) {
        state.withLock { s in
            snapshot.store(policy, ordering: .releasing)
            s.lastError = nil
            reloads.wrappingIncrement(ordering: .relaxed)
        }
    }
}
