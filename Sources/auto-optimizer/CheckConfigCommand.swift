import ArgumentParser
import Catalog
import Foundation
import Policy

/// `auto-optimizer check-config [--catalog FILE] FILE`
///
/// Validates a policy file the way `serve --config` loads it. Prints `OK: N upstreams, M rules` (and any warnings,
/// `file:line:col: warning: ...`) and exits 0; on an invalid file prints every error as `file:line:col: error: ...`
/// to stderr and exits 1.
struct CheckConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a policy file; exit non-zero if it is invalid."
    )

    @Option(name: .long, help: "A models JSON file extending the built-in catalog (as serve --catalog).")
    var catalog: String?

    @Argument(help: "The policy YAML file.")
    var file: String

    func run() throws {
        let models: ModelCatalog
        do {
            models = try ModelCatalog.load(userFile: catalog.map { URL(fileURLWithPath: $0) })
        } catch {
            Self.printError("error: \(error)")
            throw ExitCode(2)
        }
        do {
            let policy = try CompiledPolicy(path: file, catalog: models)
            let document = policy.document
            for warning in document.warnings { Self.printError(warning.description) }
            let u = document.upstreams.count
            let r = document.rules.count
            var line = "OK: \(u) upstream\(u == 1 ? "" : "s"), \(r) rule\(r == 1 ? "" : "s")"
            if !document.budgets.isEmpty {
                line += ", \(document.budgets.count) budget\(document.budgets.count == 1 ? "" : "s")"
            }
            if !document.warnings.isEmpty {
                line += " (\(document.warnings.count) warning\(document.warnings.count == 1 ? "" : "s"))"
            }
            print(line)
        } catch {
            if error.diagnostics.isEmpty { Self.printError("\(file): error: \(error.message)") }
            for d in error.diagnostics { Self.printError(d.description) }
            let n = error.errors.count
            Self.printError("\(file): invalid policy (\(n) error\(n == 1 ? "" : "s"))")
            throw ExitCode(1)
        }
    }

    static func printError(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }
}
