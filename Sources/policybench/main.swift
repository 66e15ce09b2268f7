// policybench: time CompiledPolicy.plan() against a 50-rule policy (build with -c release).
//
// Usage: policybench [iterations]   (default 2_000_000 per request shape)
// Prints ns per plan() for several request shapes (early match, late match, glob match, no match, with a budget
// check, with select) and for PolicyStore.current (the atomic snapshot load). Each figure is the best of 5 runs.
import Catalog
import Dispatch
import Foundation
import Policy

let iterations = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 2_000_000 : 2_000_000

/// 50 rules: 30 for exact apps (app-0 ... app-29, each with a model glob), 10 for glob apps ("team-N-*"),
/// 5 on endpoint/tools/json_mode/prompt size, 4 on metadata, 1 catch-all select at the end.
func fiftyRulePolicy() -> String {
    var y = """
        version: 1
        upstreams:
          primary: { url: "https://api.openai.com/v1" }
          backup: { url: "http://127.0.0.1:9002/v1" }
        defaults: { upstream: primary, fallback: [backup] }
        budgets:
          - { app: app-7, usd_per_hour: "5.00", action: downgrade, downgrade_to: gpt-4o-mini }
        rules:

        """
    for i in 0..<30 {
        y += "  - { name: exact-\(i), match: { app: app-\(i), model: \"gpt-4*\" }, set_model: gpt-4o-mini }\n"
    }
    for i in 0..<10 {
        y += "  - { name: glob-\(i), match: { app: \"team-\(i)-*\", model: [\"o1*\", \"o3*\"] }, upstream: backup }\n"
    }
    y += "  - { name: emb, match: { endpoint: embeddings, app: \"svc-*\" } }\n"
    y += "  - { name: tools, match: { tools: true, app: \"agent-*\" }, set_model: gpt-4.1 }\n"
    y += "  - { name: json, match: { json_mode: true, app: \"extract-*\" }, set_model: gpt-4.1-mini }\n"
    y += "  - { name: big, match: { prompt_tokens: { min: 100000 }, app: \"*-long\" }, set_model: gpt-4.1 }\n"
    y += "  - { name: resp, match: { endpoint: responses, model: \"gpt-5*\" }, upstream: backup }\n"
    for i in 0..<4 {
        y += "  - { name: meta-\(i), match: { metadata: { tier: \"gold-\(i)*\" } }, set_model: gpt-4o }\n"
    }
    y += "  - { name: select-cheapest, match: { app: \"sel-*\" }, select: { optimize_for: cost, constraints: { features: [tools] } } }\n"
    return y
}

let catalog = try ModelCatalog.bundled()
let document = try PolicyDocument.parse(yaml: fiftyRulePolicy(), file: "bench.yaml", catalog: catalog)
precondition(document.rules.count == 50, "expected 50 rules, got \(document.rules.count)")
let policy = CompiledPolicy(document: document, catalog: catalog)
let store = PolicyStore(initial: policy, catalog: catalog)
let tracker = BudgetTracker()
tracker.record(app: "app-7", usd: 1, at: Date())

struct Shape {
    let label: String
    let request: PolicyRequest
    let expectRule: String?
    let useTracker: Bool
}

let shapes: [Shape] = [
    Shape(label: "exact app, first rule", request: PolicyRequest(app: "app-0", model: "gpt-4o"), expectRule: "exact-0", useTracker: false),
    Shape(label: "exact app, rule 30", request: PolicyRequest(app: "app-29", model: "gpt-4o"), expectRule: "exact-29", useTracker: false),
    Shape(label: "glob app, rule 40", request: PolicyRequest(app: "team-9-x", model: "o3-mini"), expectRule: "glob-9", useTracker: false),
    Shape(label: "metadata, rule 49", request: PolicyRequest(app: "web", model: "gpt-4o", metadata: ["tier": "gold-3a"]), expectRule: "meta-3", useTracker: false),
    Shape(label: "no match (all 20 non-indexed rules)", request: PolicyRequest(app: "nobody", model: "gpt-4o", metadata: ["tier": "silver"]), expectRule: nil, useTracker: false),
    Shape(label: "exact app + budget check", request: PolicyRequest(app: "app-7", model: "gpt-4o"), expectRule: "exact-7", useTracker: true),
    Shape(label: "select (cost, prompt 1200 tokens)", request: PolicyRequest(app: "sel-a", model: "gpt-4o", promptTokens: 1200, hasTools: true), expectRule: "select-cheapest", useTracker: false),
]

@inline(never)
func run(_ shape: Shape, _ n: Int) -> Double {
    var sink = 0
    let t0 = DispatchTime.now().uptimeNanoseconds
    if shape.useTracker {
        let now = Date()
        for _ in 0..<n {
            let d = store.current.plan(shape.request, budgets: tracker, now: now)
            sink &+= d.servedModel.utf8.count
        }
    } else {
        for _ in 0..<n {
            let d = store.current.plan(shape.request)
            sink &+= d.servedModel.utf8.count
        }
    }
    let t1 = DispatchTime.now().uptimeNanoseconds
    if sink == 42 { print("") }
    return Double(t1 - t0) / Double(n)
}

print("policybench: 50-rule policy, \(iterations) plan() calls per shape, best of 5 (ns per call, incl. store.current)")
var worst = 0.0
for shape in shapes {
    let d = store.current.plan(shape.request, budgets: shape.useTracker ? tracker : nil)
    precondition(d.ruleName == shape.expectRule, "\(shape.label): matched \(d.ruleName ?? "nil")")
    var best = Double.infinity
    for _ in 0..<5 { best = min(best, run(shape, iterations)) }
    worst = max(worst, best)
    print(String(format: "  %-40@ %8.1f ns  -> %@ (%@)", shape.label as NSString, best, (d.ruleName ?? "defaults") as NSString, d.servedModel as NSString))
}
var loadBest = Double.infinity
for _ in 0..<5 {
    var sink = 0
    let t0 = DispatchTime.now().uptimeNanoseconds
    for _ in 0..<iterations { sink &+= store.current.needsPromptTokens ? 1 : 0 }
    let t1 = DispatchTime.now().uptimeNanoseconds
    if sink == 42 { print("") }
    loadBest = min(loadBest, Double(t1 - t0) / Double(iterations))
}
print(String(format: "  %-40@ %8.1f ns", "PolicyStore.current alone" as NSString, loadBest))
print(String(format: "worst shape: %.1f ns (target < 2000 ns): %@", worst, worst < 2000 ? "PASS" : "FAIL"))
