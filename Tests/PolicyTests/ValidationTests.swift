import Catalog
import Foundation
import Testing

@testable import Policy

@Suite struct ValidationTests {
    func find(_ ds: [PolicyDiagnostic], _ fragment: String) -> PolicyDiagnostic? {
        ds.first { $0.message.contains(fragment) }
    }

    @Test func collectsEveryErrorWithLineAndColumn() throws {
        let yaml = """
            version: 1
            upstreams:
              primary: { url: "https://api.openai.com/v1", conect_timeout: 5s }
              backup:  { url: "ftp://example.com", read_timeout: 10 }
            defaults:
              upstream: primry
              fallback: [backup, nowhere]
            rules:
              - name: bad
                match: { app: "batch[", model: "gpt-4*", endpoint: chat.completion }
                set_model: gpt-4o-mini
                select: { optimize_for: cost }
              - name: types
                match: { tools: "yes", prompt_tokens: { min: ten } }
                upstream: backup
                retry: { max_attempts: 0 }
              - name: unknown-model
                set_model: gpt-9000
                upstrem: primary
            """
        let ds = diagnostics(yaml)
        let errors = ds.filter { $0.severity == .error }
        func at(_ fragment: String) -> String {
            guard let d = find(ds, fragment) else { return "missing" }
            return "\(d.line):\(d.column)"
        }
        #expect(at("unknown key 'conect_timeout'") == "3:48")
        #expect(find(ds, "conect_timeout")?.message.contains("did you mean 'connect_timeout'?") == true)
        #expect(at("'ftp://example.com' is not an absolute") == "4:19")
        #expect(at("bad duration '10'") == "4:54")
        #expect(at("unknown upstream 'primry'") == "6:13")
        #expect(find(ds, "'primry'")?.message.contains("did you mean 'primary'?") == true)
        #expect(at("unknown upstream 'nowhere'") == "7:22")
        #expect(at("bad glob 'batch['") == "10:19")
        #expect(at("unknown endpoint 'chat.completion'") == "10:56")
        #expect(find(ds, "chat.completion'")?.message.contains("did you mean 'chat.completions'?") == true)
        #expect(at("both set_model and select") == "12:5")
        #expect(at("tools must be true or false") == "14:21")
        #expect(at("prompt_tokens.min must be an integer") == "14:50")
        #expect(at("max_attempts must be at least 1") == "16:28")
        #expect(at("unknown key 'upstrem'") == "19:5")
        #expect(find(ds, "'upstrem'")?.message.contains("did you mean 'upstream'?") == true)
        let warning = find(ds, "gpt-9000")
        #expect(warning?.severity == .warning)
        #expect(warning.map { "\($0.line):\($0.column)" } == "18:16")
        #expect(errors.count == 12)
        // Document order, compiler-style text.
        #expect(ds.map(\.line) == ds.map(\.line).sorted())
        #expect(errors.first?.description.hasPrefix("bad.yaml:3:48: error: unknown key 'conect_timeout'") == true)
    }

    @Test func missingPiecesAndVersion() {
        let ds = diagnostics("version: 2\nrules: []\n")
        #expect(find(ds, "unsupported policy version 2").map { "\($0.line):\($0.column)" } == "1:10")
        #expect(find(ds, "missing key 'upstreams'") != nil)
        #expect(find(diagnostics("upstreams: { a: \"https://a/v1\" }"), "missing key 'version'") != nil)
        let several = diagnostics("version: 1\nupstreams: { a: \"https://a/v1\", b: \"https://b/v1\" }\n")
        #expect(find(several, "missing 'defaults.upstream'") != nil)
    }

    @Test func yamlSyntaxErrorsHavePositions() {
        do {
            _ = try PolicyDocument.parse(yaml: "version: 1\nupstreams: { a: [\n", file: "s.yaml", catalog: nil)
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .syntax)
            #expect(error.diagnostics.first?.line ?? 0 >= 2)
            #expect(error.diagnostics.first?.file == "s.yaml")
        }
        let dup = diagnostics("version: 1\nversion: 1\nupstreams: { a: \"https://a/v1\" }\n")
        #expect(dup.first?.message.contains("duplicate key 'version'") == true)
    }

    @Test func wrongTypes() {
        let ds = diagnostics(
            """
            version: 1
            upstreams: [a, b]
            rules: { a: 1 }
            budgets:
              - { app: x, usd_per_hour: "five", action: downgrade }
              - { app: y, usd_per_day: "1.00", action: reject, downgrade_to: gpt-4o-mini }
              - { app: z, action: rejct }
            """)
        #expect(find(ds, "'upstreams' must be a mapping of names to upstreams, found a list").map { "\($0.line):\($0.column)" } == "2:12")
        #expect(find(ds, "'rules' must be a list of rules, found a mapping") != nil)
        #expect(find(ds, "usd_per_hour must be a non-negative USD amount") != nil)
        #expect(find(ds, "action downgrade needs 'downgrade_to") != nil)
        #expect(find(ds, "downgrade_to is only for action downgrade").map { "\($0.line):\($0.column)" } == "6:52")
        #expect(find(ds, "unknown action 'rejct' (did you mean 'reject'?)") != nil)
        #expect(find(ds, "needs usd_per_hour, usd_per_day or both") != nil)
    }

    @Test func selectValidation() {
        let ds = diagnostics(
            """
            version: 1
            upstreams: { a: "https://a/v1" }
            rules:
              - select: { optimize_for: speed, constraints: { features: [tool], min_context_window: 100000000 } }
            """)
        #expect(find(ds, "unknown objective 'speed'") != nil)
        #expect(find(ds, "unknown feature 'tool' (did you mean 'tools'?)") != nil)
        #expect(find(ds, "no model of the catalog satisfies these constraints") != nil)
    }

    @Test func errorTypeDescribesItself() {
        do {
            _ = try PolicyDocument.parse(yaml: "version: 1\nupstreams: {}\n", file: "e.yaml", catalog: nil)
        } catch {
            #expect(error.code == .invalid)
            #expect(error.shortDescription == "policy_invalid")
            #expect(error.description.contains("e.yaml:2:12: error: 'upstreams' is empty"))
        }
    }
}
