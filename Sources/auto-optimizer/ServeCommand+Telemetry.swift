import ArgumentParser
import Catalog
import Foundation
import Logging
import Optimizer
import Telemetry

extension Serve {
    /// Telemetry from the environment (`OTEL_*`, `AUTO_OPTIMIZER_TELEMETRY*`) and flags; binds `/metrics` so a busy
    /// port fails the start like the main port does.
    func makeTelemetry(environment env: [String: String], host: String, catalog: ModelCatalog, logger: Logger)
        async throws -> Telemetry
    {
        var t: TelemetryConfiguration
        do {
            t = try TelemetryConfiguration(environment: env)
            if let m = telemetry {
                guard let mode = TelemetryConfiguration.Mode(rawValue: m) else {
                    throw TelemetryError(code: .invalidConfiguration,
                                         message: "--telemetry '\(m)': use auto, otlp, stdout or off")
                }
                t.mode = mode
            }
            if let p = metricsPort ?? env["AUTO_OPTIMIZER_METRICS_PORT"].flatMap({ Int($0) }) {
                guard (0...65535).contains(p) else {
                    throw TelemetryError(code: .invalidConfiguration, message: "metrics port \(p) is out of range")
                }
                t.metricsPort = p
            }
            if let dir = telemetrySpool { t.spoolDirectory = dir }
            t.metricsHost = host
        } catch {
            throw ValidationError("\(error)")
        }
        let telemetry: Telemetry
        do {
            telemetry = try Telemetry(config: t, logger: logger, providerName: { model in
                catalog.lookup(model)?.entry.provider
            })
        } catch {
            throw ValidationError("\(error)")
        }
        do {
            if let port = try await telemetry.startMetricsServer() {
                logger.info("prometheus metrics", metadata: ["address": "\(host):\(port)", "path": "/metrics"])
            }
        } catch {
            // An explicitly configured port must be served; the default one is best effort (several sidecars on one
            // host, tests), so a busy 9090 is reported but does not stop the proxy.
            let explicit = metricsPort != nil || env["AUTO_OPTIMIZER_METRICS_PORT"] != nil
            if explicit {
                logger.critical("\(error)")
                throw ExitCode(1)
            }
            logger.error("\(error); serving without /metrics (set --metrics-port)")
        }
        if t.exportsSpansOverOTLP {
            logger.info("telemetry: OTLP spans", metadata: [
                "endpoint": "\(t.effectiveTracesEndpoint)", "protocol": "\(t.tracesProtocol.rawValue)",
                "spool": "\(t.spoolDirectory ?? "none")",
            ])
        }
        return telemetry
    }

    /// After the proxy drained: let the accountant publish what is queued, then stop the exporters (a last export
    /// attempt; what is left goes to the spool).
    func stopTelemetry(_ telemetry: Telemetry, task _: Task<Void, Never>, accountant: Accountant) async {
        accountant.close()
        try? await Task.sleep(for: .milliseconds(150))
        await telemetry.shutdown()
        // Bounded: spans are exported or spooled first; swift-otel's final metrics export gets a short grace (it
        // retries for its whole timeout while the collector is down) and is abandoned after it.
        await telemetry.waitForShutdown()
    }
}
