import Catalog
import Foundation
import Yams

extension PolicyDocument {
    /// Parses and validates a policy document.
    ///
    /// Every problem is collected (not only the first) as a ``PolicyDiagnostic`` naming `file`, line and column.
    /// Errors make the call throw ``PolicyError`` (code ``PolicyError/Code/syntax`` for YAML that does not parse,
    /// ``PolicyError/Code/invalid`` otherwise); warnings (a `set_model` or `downgrade_to` the catalog does not know)
    /// end up in ``warnings``. Without a `catalog`, model names are not checked.
    public static func parse(yaml: String, file: String = "<string>", catalog: ModelCatalog?) throws(PolicyError)
        -> PolicyDocument
    {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            let d = PolicyValidator.diagnostic(forYAMLError: error, file: file)
            throw PolicyError(code: .syntax, message: "\(file) is not valid YAML", diagnostics: [d], cause: error)
        }
        var v = PolicyValidator(file: file, catalog: catalog)
        guard let root else {
            v.error(at: nil, "the document is empty: a policy needs at least 'version' and 'upstreams'")
            throw v.failure()
        }
        let document = v.document(root)
        if v.hasErrors { throw v.failure() }
        var result = document!
        result.warnings = v.sortedDiagnostics
        return result
    }
}

/// Walks the YAML node tree, collecting diagnostics. Internal: its product is a ``PolicyDocument``.
struct PolicyValidator {
    let file: String
    let catalog: ModelCatalog?
    var diagnostics: [PolicyDiagnostic] = []
    var hasErrors = false
    /// Upstream names defined, for reference checks.
    var upstreamNames: [String] = []
    var profiles: [CompressionProfile] = []

    init(file: String, catalog: ModelCatalog?) {
        self.file = file
        self.catalog = catalog
    }

    // MARK: Diagnostics

    mutating func error(at node: Node?, _ message: String) {
        hasErrors = true
        diagnostics.append(
            PolicyDiagnostic(
                severity: .error, file: file, line: node?.mark?.line ?? 1, column: node?.mark?.column ?? 1,
                message: message))
    }

    mutating func warning(at node: Node?, _ message: String) {
        diagnostics.append(
            PolicyDiagnostic(
                severity: .warning, file: file, line: node?.mark?.line ?? 1, column: node?.mark?.column ?? 1,
                message: message))
    }

    /// Diagnostics in document order.
    var sortedDiagnostics: [PolicyDiagnostic] {
        diagnostics.enumerated().sorted { a, b in
            (a.element.line, a.element.column, a.offset) < (b.element.line, b.element.column, b.offset)
        }.map(\.element)
    }

    func failure() -> PolicyError {
        let count = diagnostics.filter { $0.severity == .error }.count
        return PolicyError(
            code: .invalid, message: "\(file): \(count) error\(count == 1 ? "" : "s") in the policy",
            diagnostics: sortedDiagnostics)
    }

    static func diagnostic(forYAMLError error: any Error, file: String) -> PolicyDiagnostic {
        func d(_ mark: Mark?, _ message: String) -> PolicyDiagnostic {
            PolicyDiagnostic(
                severity: .error, file: file, line: mark?.line ?? 0, column: mark?.column ?? 0, message: message)
        }
        guard let yamlError = error as? YamlError else { return d(nil, "cannot parse YAML: \(error)") }
        switch yamlError {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            let ctx = context.map { "\($0.text) " } ?? ""
            return d(mark, "YAML syntax error: \(ctx)\(problem)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            return d(context.mark, "duplicate key\(duplicates.count == 1 ? "" : "s") \(duplicates.map { "'\($0)'" }.joined(separator: ", ")) in a mapping")
        case .reader(let problem, let offset, _, _):
            return d(nil, "cannot read YAML: \(problem)\(offset.map { " at byte \($0)" } ?? "")")
        default:
            return d(nil, "cannot parse YAML: \(yamlError)")
        }
    }

    // MARK: Shapes

    static func describe(_ node: Node) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        case .scalar(let s):
            if node.null != nil && s.style == .plain { return "null" }
            if s.style == .plain, node.int != nil { return "the number \(s.string)" }
            if s.style == .plain, node.float != nil { return "the number \(s.string)" }
            if s.style == .plain, s.string == "true" || s.string == "false" { return "the boolean \(s.string)" }
            return "the string \"\(s.string)\""
        }
    }

    /// The keys of a mapping, each checked against `allowed` (unknown keys are errors with a suggestion).
    /// Nil (and an error) when `node` is not a mapping.
    mutating func fields(_ node: Node, _ context: String, allowed: [String]) -> [String: (key: Node, value: Node)]? {
        guard case .mapping(let mapping) = node else {
            error(at: node, "\(context) must be a mapping, found \(Self.describe(node))")
            return nil
        }
        var out: [String: (key: Node, value: Node)] = [:]
        for (key, value) in mapping {
            guard case .scalar(let s) = key else {
                error(at: key, "keys in \(context) must be plain names, found \(Self.describe(key))")
                continue
            }
            let name = s.string
            if !allowed.contains(name) {
                var message = "unknown key '\(name)' in \(context)"
                if let suggestion = Self.suggest(name, among: allowed) { message += " (did you mean '\(suggestion)'?)" }
                message += "; allowed: \(allowed.joined(separator: ", "))"
                error(at: key, message)
                continue
            }
            out[name] = (key, value)
        }
        return out
    }

    mutating func string(_ node: Node, _ context: String, allowEmpty: Bool = false) -> String? {
        guard case .scalar(let s) = node, !(s.style == .plain && node.null != nil) else {
            error(at: node, "\(context) must be a string, found \(Self.describe(node))")
            return nil
        }
        if !allowEmpty && s.string.isEmpty {
            error(at: node, "\(context) must not be empty")
            return nil
        }
        return s.string
    }

    mutating func int(_ node: Node, _ context: String, min: Int) -> Int? {
        guard case .scalar(let s) = node, let value = Int(s.string) else {
            error(at: node, "\(context) must be an integer, found \(Self.describe(node))")
            return nil
        }
        guard value >= min else {
            error(at: node, "\(context) must be at least \(min), found \(value)")
            return nil
        }
        return value
    }

    mutating func bool(_ node: Node, _ context: String) -> Bool? {
        guard case .scalar(let s) = node, s.style == .plain, s.string == "true" || s.string == "false" else {
            error(at: node, "\(context) must be true or false, found \(Self.describe(node))")
            return nil
        }
        return s.string == "true"
    }

    /// A USD amount: digits with at most one '.', quoted ("5.00", exact) or not.
    mutating func usd(_ node: Node, _ context: String) -> Decimal? {
        guard case .scalar(let s) = node else {
            error(at: node, "\(context) must be a USD amount such as \"5.00\", found \(Self.describe(node))")
            return nil
        }
        let text = s.string
        let ok = !text.isEmpty && text.allSatisfy { $0.isASCII && ($0.isNumber || $0 == ".") }
            && text.filter({ $0 == "." }).count <= 1 && text.contains(where: \.isNumber)
        guard ok, let value = Decimal(string: text, locale: Locale(identifier: "en_US_POSIX")) else {
            error(at: node, "\(context) must be a non-negative USD amount such as \"5.00\", found \(Self.describe(node))")
            return nil
        }
        return value
    }

    mutating func duration(_ node: Node, _ context: String) -> Duration? {
        guard let text = string(node, context) else { return nil }
        guard let d = PolicyDuration.parse(text) else {
            error(at: node, "\(context): bad duration '\(text)': use a number and a unit ms, s, m or h, e.g. \"500ms\", \"10s\", \"2m\"")
            return nil
        }
        return d
    }

    /// One string or a list of strings.
    mutating func stringList(_ node: Node, _ context: String) -> [(String, Node)]? {
        switch node {
        case .sequence(let seq):
            var out: [(String, Node)] = []
            for item in seq {
                if let s = string(item, "each element of \(context)") { out.append((s, item)) }
            }
            return out
        default:
            guard let s = string(node, context) else { return nil }
            return [(s, node)]
        }
    }

    mutating func glob(_ text: String, _ node: Node, _ context: String) -> Glob? {
        do {
            return try Glob(text)
        } catch {
            self.error(at: node, "\(context): bad glob '\(text)': \(error.reason) (offset \(error.offset))")
            return nil
        }
    }

    mutating func globs(_ node: Node, _ context: String) -> [Glob] {
        guard let items = stringList(node, context) else { return [] }
        return items.compactMap { glob($0.0, $0.1, context) }
    }

    // MARK: Suggestions

    static func suggest(_ word: String, among candidates: [String]) -> String? {
        var best: (String, Int)?
        for c in candidates {
            let d = editDistance(word.lowercased(), c.lowercased())
            if d <= max(2, c.count / 3), d < (best?.1 ?? Int.max) { best = (c, d) }
        }
        return best?.0
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8)
        let b = Array(b.utf8)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var prev = Array(0...b.count)
        var cur = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            cur[0] = i
            for j in 1...b.count {
                cur[j] = Swift.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&prev, &cur)
        }
        return prev[b.count]
    }

    // MARK: The document

    static let topKeys = ["version", "upstreams", "defaults", "rules", "budgets", "compression_profiles"]

    mutating func document(_ root: Node) -> PolicyDocument? {
        guard let top = fields(root, "the policy document", allowed: Self.topKeys) else { return nil }
        if let (_, v) = top["version"] {
            if let n = int(v, "version", min: 0), n != 1 {
                error(at: v, "unsupported policy version \(n): this sidecar reads version 1")
            }
        } else {
            error(at: root, "missing key 'version' (write 'version: 1')")
        }

        var upstreams: [UpstreamConfig] = []
        if let (_, v) = top["upstreams"] {
            upstreams = self.upstreams(v)
        } else {
            error(at: root, "missing key 'upstreams': name at least one upstream, e.g. 'upstreams: { primary: { url: \"https://api.openai.com/v1\" } }'")
        }
        upstreamNames = upstreams.map(\.name)

        if let (_, v) = top["compression_profiles"] { profiles = compressionProfiles(v) }
        let defaults = self.defaults(top["defaults"]?.value, root: root)
        var rules: [RuleConfig] = []
        if let (_, v) = top["rules"] { rules = self.rules(v) }
        var budgets: [BudgetConfig] = []
        if let (_, v) = top["budgets"] { budgets = self.budgets(v) }
        var document = PolicyDocument(upstreams: upstreams, defaults: defaults, rules: rules, budgets: budgets)
        document.compressionProfiles = profiles
        return document
    }

    static let upstreamKeys = ["url", "api_key_env", "api_key_file", "connect_timeout", "read_timeout", "max_connections"]

    mutating func upstreams(_ node: Node) -> [UpstreamConfig] {
        guard case .mapping(let mapping) = node else {
            error(at: node, "'upstreams' must be a mapping of names to upstreams, found \(Self.describe(node))")
            return []
        }
        if mapping.count == 0 { error(at: node, "'upstreams' is empty: name at least one upstream") }
        var out: [UpstreamConfig] = []
        for (key, value) in mapping {
            guard let name = string(key, "an upstream name") else { continue }
            let ctx = "upstream '\(name)'"
            var upstream = UpstreamConfig(name: name, url: "")
            if case .scalar = value {
                // Shorthand: `name: "https://..."`.
                guard let url = string(value, "\(ctx) url") else { continue }
                upstream.url = url
                checkURL(url, value, ctx)
                out.append(upstream)
                continue
            }
            guard let f = fields(value, ctx, allowed: Self.upstreamKeys) else { continue }
            if let (_, v) = f["url"] {
                if let url = string(v, "\(ctx) url") {
                    upstream.url = url
                    checkURL(url, v, ctx)
                }
            } else {
                error(at: value, "\(ctx) has no 'url'")
            }
            if let (_, v) = f["api_key_env"], let env = string(v, "\(ctx) api_key_env") {
                let valid = env.first.map { $0 == "_" || ($0.isASCII && $0.isLetter) } == true
                    && env.allSatisfy { $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }
                if valid {
                    upstream.apiKey = .environment(env)
                } else {
                    error(at: v, "\(ctx) api_key_env '\(env)' is not an environment variable name")
                }
            }
            if let (k, v) = f["api_key_file"], let path = string(v, "\(ctx) api_key_file") {
                if f["api_key_env"] != nil {
                    error(at: k, "\(ctx) sets both api_key_env and api_key_file: choose one")
                } else {
                    upstream.apiKey = .file(path)
                }
            }
            if let (_, v) = f["connect_timeout"] { upstream.connectTimeout = duration(v, "\(ctx) connect_timeout") }
            if let (_, v) = f["read_timeout"] { upstream.readTimeout = duration(v, "\(ctx) read_timeout") }
            if let (_, v) = f["max_connections"] { upstream.maxConnections = int(v, "\(ctx) max_connections", min: 1) }
            out.append(upstream)
        }
        return out
    }

    mutating func checkURL(_ url: String, _ node: Node, _ ctx: String) {
        guard let u = URLComponents(string: url), let scheme = u.scheme?.lowercased(),
            scheme == "http" || scheme == "https", let host = u.host, !host.isEmpty
        else {
            error(at: node, "\(ctx) url '\(url)' is not an absolute http:// or https:// URL")
            return
        }
        if u.query != nil || u.fragment != nil {
            error(at: node, "\(ctx) url '\(url)' must not have a query or fragment")
        }
    }

    mutating func upstreamRef(_ name: String, _ node: Node, _ ctx: String) -> String? {
        guard !upstreamNames.isEmpty else { return name }  // already reported: no upstreams
        guard upstreamNames.contains(name) else {
            var message = "\(ctx): unknown upstream '\(name)'"
            if let s = Self.suggest(name, among: upstreamNames) { message += " (did you mean '\(s)'?)" }
            message += "; defined: \(upstreamNames.joined(separator: ", "))"
            error(at: node, message)
            return nil
        }
        return name
    }

    mutating func fallbackList(_ node: Node, _ ctx: String, upstream: String?) -> [String]? {
        guard let items = stringList(node, ctx) else { return nil }
        var out: [String] = []
        for (name, item) in items {
            guard let n = upstreamRef(name, item, ctx) else { continue }
            if n == upstream {
                error(at: item, "\(ctx): '\(n)' is the upstream itself")
            } else if out.contains(n) {
                error(at: item, "\(ctx): '\(n)' is listed twice")
            } else {
                out.append(n)
            }
        }
        return out
    }

    static let defaultsKeys = ["upstream", "fallback", "retry", "compression"]

    mutating func defaults(_ node: Node?, root: Node) -> DefaultsConfig {
        var result = DefaultsConfig(upstream: upstreamNames.count == 1 ? upstreamNames[0] : "")
        guard let node else {
            if upstreamNames.count > 1 {
                error(at: root, "missing 'defaults.upstream': with several upstreams, say which one serves by default")
            }
            return result
        }
        guard let f = fields(node, "defaults", allowed: Self.defaultsKeys) else { return result }
        if let (_, v) = f["upstream"] {
            if let name = string(v, "defaults.upstream"), let n = upstreamRef(name, v, "defaults.upstream") {
                result.upstream = n
            }
        } else if upstreamNames.count > 1 {
            error(at: node, "missing 'defaults.upstream': with several upstreams, say which one serves by default")
        }
        if let (_, v) = f["fallback"] {
            result.fallback = fallbackList(v, "defaults.fallback", upstream: result.upstream) ?? []
        }
        if let (_, v) = f["retry"] { result.retry = retry(v, "defaults.retry") }
        if let (_, v) = f["compression"] {
            let (profile, _) = compressionRef(v, "defaults.compression")
            result.compression = profile
        }
        return result
    }

    mutating func retry(_ node: Node, _ ctx: String) -> RetrySettings? {
        guard let f = fields(node, ctx, allowed: ["max_attempts", "backoff"]) else { return nil }
        var r = RetrySettings(maxAttempts: 0)
        if let (_, v) = f["max_attempts"] {
            guard let n = int(v, "\(ctx).max_attempts", min: 1) else { return nil }
            r.maxAttempts = n
        }
        if let (_, v) = f["backoff"], let b = fields(v, "\(ctx).backoff", allowed: ["initial", "max"]) {
            if let (_, i) = b["initial"], let d = duration(i, "\(ctx).backoff.initial") { r.initialBackoff = d }
            if let (_, m) = b["max"], let d = duration(m, "\(ctx).backoff.max") { r.maxBackoff = d }
            if r.initialBackoff > r.maxBackoff {
                error(at: v, "\(ctx).backoff: initial (\(r.initialBackoff)) is longer than max (\(r.maxBackoff))")
            }
        }
        return r
    }

    // MARK: Compression profiles

    static let profileKeys = [
        "target_ratio", "min_prompt_tokens", "min_message_tokens", "preserve_questions", "preserve_sections",
        "min_quality", "roles", "steps", "shorten_headers",
    ]

    mutating func compressionProfiles(_ node: Node) -> [CompressionProfile] {
        guard case .mapping(let mapping) = node else {
            error(at: node, "'compression_profiles' must be a mapping of names to profiles, found \(Self.describe(node))")
            return []
        }
        var out: [CompressionProfile] = []
        for (k, v) in mapping {
            guard let name = string(k, "a compression profile name") else { continue }
            if let p = compressionProfile(v, "compression profile '\(name)'", name: name) { out.append(p) }
        }
        return out
    }

    mutating func fraction(_ node: Node, _ context: String, allowZero: Bool) -> Double? {
        guard case .scalar(let s) = node, let value = Double(s.string), value.isFinite else {
            error(at: node, "\(context) must be a number, found \(Self.describe(node))")
            return nil
        }
        guard value <= 1 && (allowZero ? value >= 0 : value > 0) else {
            error(at: node, "\(context) must be \(allowZero ? "between 0 and 1" : "greater than 0 and at most 1"), found \(s.string)")
            return nil
        }
        return value
    }

    mutating func compressionProfile(_ node: Node, _ ctx: String, name: String) -> CompressionProfile? {
        guard let f = fields(node, ctx, allowed: Self.profileKeys) else { return nil }
        var p = CompressionProfile(name: name)
        if let (_, v) = f["target_ratio"], let r = fraction(v, "\(ctx) target_ratio (the fraction of tokens to keep)", allowZero: false) {
            p.targetRatio = r
        }
        if let (_, v) = f["min_prompt_tokens"], let n = int(v, "\(ctx) min_prompt_tokens", min: 0) { p.minPromptTokens = n }
        if let (_, v) = f["min_message_tokens"], let n = int(v, "\(ctx) min_message_tokens", min: 0) { p.minMessageTokens = n }
        if let (_, v) = f["preserve_questions"], let b = bool(v, "\(ctx) preserve_questions") { p.preserveQuestions = b }
        if let (_, v) = f["shorten_headers"], let b = bool(v, "\(ctx) shorten_headers") { p.shortenHeaders = b }
        if let (_, v) = f["preserve_sections"], let list = stringList(v, "\(ctx) preserve_sections") {
            p.preserveSections = list.map(\.0)
        }
        if let (_, v) = f["min_quality"], let q = fraction(v, "\(ctx) min_quality", allowZero: true) { p.minQuality = q }
        if let (_, v) = f["roles"], let list = stringList(v, "\(ctx) roles") {
            var roles: [String] = []
            for (role, n) in list {
                switch role {
                case "user", "tool", "assistant": roles.append(role)
                case "system", "developer":
                    error(at: n, "\(ctx) roles: the \(role) prompt is never compressed; use user, tool or assistant")
                default:
                    error(at: n, "\(ctx) roles: unknown role '\(role)' (use user, tool or assistant)")
                }
            }
            p.roles = roles
        }
        if let (_, v) = f["steps"], let list = stringList(v, "\(ctx) steps") {
            p.lossless = false
            p.selection = false
            p.pruning = false
            for (step, n) in list {
                switch step {
                case "lossless": p.lossless = true
                case "selection": p.selection = true
                case "pruning": p.pruning = true
                default: error(at: n, "\(ctx) steps: unknown step '\(step)' (use lossless, selection, pruning)")
                }
            }
        }
        return p
    }

    /// `compression: NAME`, `compression: off`, or an inline profile. Returns the profile and whether it is `off`.
    mutating func compressionRef(_ node: Node, _ ctx: String, inlineName: String? = nil) -> (CompressionProfile?, Bool) {
        if case .mapping = node {
            return (compressionProfile(node, ctx, name: inlineName ?? "inline"), false)
        }
        if case .scalar(let s) = node, s.style == .plain, s.string == "off" || s.string == "false" { return (nil, true) }
        guard let name = string(node, ctx) else { return (nil, false) }
        if let p = profiles.first(where: { $0.name == name }) ?? CompressionProfile.builtIn[name] { return (p, false) }
        let known = profiles.map(\.name) + CompressionProfile.builtIn.keys.sorted()
        var message = "\(ctx): unknown compression profile '\(name)'"
        if let s = Self.suggest(name, among: known) { message += "; did you mean '\(s)'?" }
        message += " (defined: \(known.joined(separator: ", ")))"
        error(at: node, message)
        return (nil, false)
    }

    // MARK: Rules

    static let ruleKeys = ["name", "match", "set_model", "select", "upstream", "fallback", "retry", "compression"]
    static let matchKeys = ["app", "model", "endpoint", "prompt_tokens", "tools", "json_mode", "metadata"]

    mutating func rules(_ node: Node) -> [RuleConfig] {
        guard case .sequence(let seq) = node else {
            error(at: node, "'rules' must be a list of rules, found \(Self.describe(node))")
            return []
        }
        var out: [RuleConfig] = []
        var names: Set<String> = []
        for (index, item) in seq.enumerated() {
            var ctx = "rules[\(index)]"
            guard let f = fields(item, ctx, allowed: Self.ruleKeys) else { continue }
            var rule = RuleConfig(name: "rule-\(index + 1)")
            if let (_, v) = f["name"], let name = string(v, "\(ctx).name") {
                rule.name = name
                ctx = "rule '\(name)'"
                if !names.insert(name).inserted { error(at: v, "duplicate rule name '\(name)'") }
            }
            if let (_, v) = f["match"] { rule.match = match(v, "\(ctx) match") }
            if let (_, v) = f["set_model"], let model = string(v, "\(ctx) set_model") {
                rule.setModel = model
                checkModel(model, v, "\(ctx) set_model")
            }
            if let (k, v) = f["select"] {
                if f["set_model"] != nil {
                    error(at: k, "\(ctx) sets both set_model and select: a rule either names the model or selects one")
                } else {
                    rule.select = select(v, "\(ctx) select")
                }
            }
            if let (_, v) = f["upstream"], let name = string(v, "\(ctx) upstream") {
                rule.upstream = upstreamRef(name, v, "\(ctx) upstream")
            }
            if let (_, v) = f["fallback"] {
                rule.fallback = fallbackList(v, "\(ctx) fallback", upstream: rule.upstream)
            }
            if let (_, v) = f["retry"] { rule.retry = retry(v, "\(ctx) retry") }
            if let (_, v) = f["compression"] {
                let (profile, off) = compressionRef(v, "\(ctx) compression", inlineName: rule.name)
                rule.compression = profile
                rule.compressionOff = off
            }
            out.append(rule)
        }
        return out
    }

    mutating func checkModel(_ model: String, _ node: Node, _ ctx: String) {
        guard let catalog, catalog.lookup(model) == nil else { return }
        var message = "\(ctx): model '\(model)' is not in the catalog (it is sent as is, but costs cannot be computed)"
        if let s = Self.suggest(model, among: catalog.entries.values.map(\.id).sorted()) {
            message += "; did you mean '\(s)'?"
        }
        warning(at: node, message)
    }

    mutating func match(_ node: Node, _ ctx: String) -> MatchConfig {
        var m = MatchConfig()
        guard let f = fields(node, ctx, allowed: Self.matchKeys) else { return m }
        if let (_, v) = f["app"] { m.apps = globs(v, "\(ctx).app") }
        if let (_, v) = f["model"] { m.models = globs(v, "\(ctx).model") }
        if let (_, v) = f["endpoint"], let items = stringList(v, "\(ctx).endpoint") {
            var set: Set<PolicyEndpoint> = []
            let names = PolicyEndpoint.allCases.filter { $0 != .other }.map(\.rawValue)
            for (name, item) in items {
                if let e = PolicyEndpoint(rawValue: name), e != .other {
                    set.insert(e)
                } else {
                    var message = "\(ctx).endpoint: unknown endpoint '\(name)'"
                    if let s = Self.suggest(name, among: names) { message += " (did you mean '\(s)'?)" }
                    message += "; one of \(names.joined(separator: ", "))"
                    error(at: item, message)
                }
            }
            m.endpoints = set
        }
        if let (_, v) = f["prompt_tokens"], let p = fields(v, "\(ctx).prompt_tokens", allowed: ["min", "max"]) {
            if let (_, x) = p["min"] { m.promptTokensMin = int(x, "\(ctx).prompt_tokens.min", min: 0) }
            if let (_, x) = p["max"] { m.promptTokensMax = int(x, "\(ctx).prompt_tokens.max", min: 0) }
            if p.isEmpty { error(at: v, "\(ctx).prompt_tokens needs min, max or both") }
            if let lo = m.promptTokensMin, let hi = m.promptTokensMax, lo > hi {
                error(at: v, "\(ctx).prompt_tokens: min \(lo) is greater than max \(hi)")
            }
        }
        if let (_, v) = f["tools"] { m.tools = bool(v, "\(ctx).tools") }
        if let (_, v) = f["json_mode"] { m.jsonMode = bool(v, "\(ctx).json_mode") }
        if let (_, v) = f["metadata"] {
            if case .mapping(let mapping) = v {
                for (key, value) in mapping {
                    guard let k = string(key, "\(ctx).metadata key"),
                        let text = string(value, "\(ctx).metadata.\(k)", allowEmpty: true),
                        let g = glob(text, value, "\(ctx).metadata.\(k)")
                    else { continue }
                    m.metadata.append(MetadataCondition(key: k, value: g))
                }
            } else {
                error(at: v, "\(ctx).metadata must be a mapping of keys to values or globs, found \(Self.describe(v))")
            }
        }
        return m
    }

    static let selectKeys = ["optimize_for", "constraints", "expected_output_tokens"]
    static let constraintKeys = [
        "min_context_window", "features", "max_cost_per_request_usd", "exclude_providers", "providers", "models",
    ]

    mutating func select(_ node: Node, _ ctx: String) -> SelectConfig? {
        guard let f = fields(node, ctx, allowed: Self.selectKeys) else { return nil }
        var s = SelectConfig(optimizeFor: .cost)
        let objectives = SelectionObjective.allCases.map(\.rawValue)
        if let (_, v) = f["optimize_for"] {
            if let text = string(v, "\(ctx).optimize_for") {
                if let o = SelectionObjective(rawValue: text) {
                    s.optimizeFor = o
                } else {
                    var message = "\(ctx).optimize_for: unknown objective '\(text)'"
                    if let g = Self.suggest(text, among: objectives) { message += " (did you mean '\(g)'?)" }
                    error(at: v, message + "; one of \(objectives.joined(separator: ", "))")
                }
            }
        } else {
            error(at: node, "\(ctx) needs 'optimize_for' (\(objectives.joined(separator: " | ")))")
        }
        if let (_, v) = f["expected_output_tokens"], let n = int(v, "\(ctx).expected_output_tokens", min: 0) {
            s.expectedOutputTokens = n
        }
        if let (_, v) = f["constraints"], let c = fields(v, "\(ctx).constraints", allowed: Self.constraintKeys) {
            let cctx = "\(ctx).constraints"
            if let (_, x) = c["min_context_window"] { s.minContextWindow = int(x, "\(cctx).min_context_window", min: 0) }
            if let (_, x) = c["features"], let items = stringList(x, "\(cctx).features") {
                let names = ModelFeature.allCases.map(\.rawValue)
                for (name, item) in items {
                    if let feature = ModelFeature(rawValue: name) {
                        s.features.insert(feature)
                    } else {
                        var message = "\(cctx).features: unknown feature '\(name)'"
                        if let g = Self.suggest(name, among: names) { message += " (did you mean '\(g)'?)" }
                        error(at: item, message + "; one of \(names.joined(separator: ", "))")
                    }
                }
            }
            if let (_, x) = c["max_cost_per_request_usd"] { s.maxCostPerRequestUSD = usd(x, "\(cctx).max_cost_per_request_usd") }
            let providers = catalog.map { Set($0.entries.values.map { $0.provider.lowercased() }) }
            for key in ["exclude_providers", "providers"] {
                guard let (_, x) = c[key], let items = stringList(x, "\(cctx).\(key)") else { continue }
                for (name, item) in items {
                    if let providers, !providers.contains(name.lowercased()) {
                        warning(at: item, "\(cctx).\(key): no catalog model has provider '\(name)'")
                    }
                }
                let set = Set(items.map { $0.0.lowercased() })
                if key == "providers" { s.providers = set } else { s.excludeProviders = set }
            }
            if let (_, x) = c["models"] { s.models = globs(x, "\(cctx).models") }
        }
        if let catalog, ModelSelector.candidates(for: s, catalog: catalog).isEmpty {
            error(at: node, "\(ctx): no model of the catalog satisfies these constraints")
        }
        return s
    }

    // MARK: Budgets

    static let budgetKeys = ["app", "usd_per_hour", "usd_per_day", "action", "downgrade_to"]

    mutating func budgets(_ node: Node) -> [BudgetConfig] {
        guard case .sequence(let seq) = node else {
            error(at: node, "'budgets' must be a list, found \(Self.describe(node))")
            return []
        }
        var out: [BudgetConfig] = []
        for (index, item) in seq.enumerated() {
            var ctx = "budgets[\(index)]"
            guard let f = fields(item, ctx, allowed: Self.budgetKeys) else { continue }
            var app: String?
            if let (_, v) = f["app"] {
                app = string(v, "\(ctx).app")
                if let app { ctx = "budget of app '\(app)'" }
            } else {
                error(at: item, "\(ctx) has no 'app'")
            }
            var hour: Decimal?
            var day: Decimal?
            if let (_, v) = f["usd_per_hour"] { hour = usd(v, "\(ctx) usd_per_hour") }
            if let (_, v) = f["usd_per_day"] { day = usd(v, "\(ctx) usd_per_day") }
            if f["usd_per_hour"] == nil && f["usd_per_day"] == nil {
                error(at: item, "\(ctx) needs usd_per_hour, usd_per_day or both")
            }
            var action: BudgetAction?
            if let (_, v) = f["action"], let text = string(v, "\(ctx) action") {
                switch text {
                case "downgrade":
                    if let (_, d) = f["downgrade_to"], let model = string(d, "\(ctx) downgrade_to") {
                        checkModel(model, d, "\(ctx) downgrade_to")
                        action = .downgrade(to: model)
                    } else if f["downgrade_to"] == nil {
                        error(at: v, "\(ctx): action downgrade needs 'downgrade_to: MODEL'")
                    }
                case "reject":
                    if let (k, _) = f["downgrade_to"] {
                        error(at: k, "\(ctx): downgrade_to is only for action downgrade (this action is reject)")
                    }
                    action = .reject
                default:
                    var message = "\(ctx): unknown action '\(text)'"
                    if let g = Self.suggest(text, among: ["downgrade", "reject"]) { message += " (did you mean '\(g)'?)" }
                    error(at: v, message + "; one of downgrade, reject")
                }
            } else if f["action"] == nil {
                error(at: item, "\(ctx) needs 'action: downgrade' or 'action: reject'")
            }
            if let app, let action {
                out.append(BudgetConfig(app: app, usdPerHour: hour, usdPerDay: day, action: action))
            }
        }
        return out
    }
}
