import Testing

@testable import Policy

@Suite struct CompressionProfileTests {
    let yaml = """
        version: 1
        upstreams: { main: { url: "http://127.0.0.1:9/v1" } }
        compression_profiles:
          rag:
            target_ratio: 0.4
            min_prompt_tokens: 500
            min_message_tokens: 64
            preserve_questions: false
            preserve_sections: ["## Instructions", "<keep>"]
            min_quality: 0.7
            roles: [user, tool]
            steps: [lossless, selection]
        defaults:
          compression: lossless
        rules:
          - name: rag-apps
            match: { app: rag-* }
            compression: rag
          - name: inline
            match: { app: inline }
            compression: { target_ratio: 0.25 }
          - name: raw
            match: { app: raw }
            compression: off
        """

    @Test func profilesParseAndResolvePerRule() throws {
        let policy = try compile(yaml)
        let rag = try #require(policy.document.compressionProfiles.first)
        #expect(rag.name == "rag")
        #expect(rag.targetRatio == 0.4)
        #expect(rag.minPromptTokens == 500)
        #expect(rag.minMessageTokens == 64)
        #expect(rag.preserveQuestions == false)
        #expect(rag.preserveSections == ["## Instructions", "<keep>"])
        #expect(rag.minQuality == 0.7)
        #expect(rag.roles == ["user", "tool"])
        #expect(rag.lossless && rag.selection && !rag.pruning)

        #expect(policy.plan(PolicyRequest(app: "rag-search", model: "gpt-4o")).compression?.name == "rag")
        let inline = policy.plan(PolicyRequest(app: "inline", model: "gpt-4o")).compression
        #expect(inline?.targetRatio == 0.25)
        #expect(inline?.name == "inline")
        #expect(policy.plan(PolicyRequest(app: "raw", model: "gpt-4o")).compression == nil)
        #expect(policy.plan(PolicyRequest(app: "other", model: "gpt-4o")).compression?.name == "lossless")
        #expect(policy.compresses)
    }

    @Test func mistakesAreReportedWithLines() {
        let bad = """
            version: 1
            upstreams: { main: { url: "http://127.0.0.1:9/v1" } }
            compression_profiles:
              p1: { target_ratio: 1.5, roles: [system], steps: [zip] }
            rules:
              - match: { app: a }
                compression: rga
            """
        let d = diagnostics(bad)
        let text = d.map { "\($0.line): \($0.message)" }.joined(separator: "\n")
        #expect(text.contains("4: compression profile 'p1' target_ratio"), "\(text)")
        #expect(text.contains("the system prompt is never compressed"), "\(text)")
        #expect(text.contains("unknown step 'zip'"), "\(text)")
        #expect(text.contains("7: rules[0] compression: unknown compression profile 'rga'"), "\(text)")
    }

    @Test func builtInPolicyDoesNotCompress() {
        #expect(!CompiledPolicy.builtIn(upstreamURL: "http://127.0.0.1:9/v1").compresses)
    }
}
