import Compression
import Catalog
import Dispatch
import Foundation
import Logging
import Policy
import Proxy

/// Hot reload of the policy file: checked every second (size, modification time, inode: a Kubernetes ConfigMap
/// update swaps a symlink) and on SIGHUP. An invalid new file is refused, logged and counted; the last good policy
/// keeps serving.
final class PolicyReloader: @unchecked Sendable {
    private let path: String
    private let catalog: ModelCatalog
    private let server: ProxyServer
    private let logger: Logger
    private let queue = DispatchQueue(label: "policy-reload")
    private var timer: (any DispatchSourceTimer)?
    private var hangup: (any DispatchSourceSignal)?
    private var lastStamp: [String]
    private(set) var reloads = 0
    private(set) var failures = 0

    init(path: String, catalog: ModelCatalog, server: ProxyServer, logger: Logger) {
        self.path = path
        self.catalog = catalog
        self.server = server
        self.logger = logger
        self.lastStamp = Self.stamp(path)
    }

    static func stamp(_ path: String) -> [String] {
        guard let a = try? FileManager.default.attributesOfItem(atPath: path) else { return [] }
        let resolved = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? ""
        return ["\(a[.size] ?? "")", "\(a[.modificationDate] ?? "")", "\(a[.systemFileNumber] ?? "")", resolved]
    }

    func start() {
        let t = DispatchSource.makeTimerSource(queue: queue)
        t.schedule(deadline: .now() + 1, repeating: 1)
        t.setEventHandler { [self] in
            let now = Self.stamp(path)
            if now != lastStamp {
                lastStamp = now
                reload(reason: "file changed")
            }
        }
        t.resume()
        timer = t
        signal(SIGHUP, SIG_IGN)
        let h = DispatchSource.makeSignalSource(signal: SIGHUP, queue: queue)
        h.setEventHandler { [self] in
            lastStamp = Self.stamp(path)
            reload(reason: "SIGHUP")
        }
        h.resume()
        hangup = h
    }

    func stop() {
        timer?.cancel()
        hangup?.cancel()
    }

    private func reload(reason: String) {
        do {
            let policy = try CompiledPolicy(path: path, catalog: catalog)
            if policy.compresses { PromptCompressor.warmUp() }  // this thread, before requests can use it
            try server.reload(policy: policy)
            reloads += 1
            logger.info("policy reloaded", metadata: [
                "reason": "\(reason)", "rules": "\(policy.ruleNames.count)", "upstreams": "\(policy.upstreams.count)",
                "reloads": "\(reloads)",
            ])
        } catch {
            failures += 1
            logger.error("policy reload refused, the last good policy keeps serving", metadata: [
                "reason": "\(reason)", "failures": "\(failures)", "error": "\(error)",
            ])
        }
    }
}
