// swift-tools-version:6.1
// Micro benchmarks of the sidecar's hot path (ordo-one/benchmark), in a package of their own so that the root
// package's build (and CI) never compiles package-benchmark. Build dir: Benchmarks/Micro/.build (git-ignored).
//
//   cd Benchmarks/Micro && swift package --allow-writing-to-package-directory benchmark
//
// Benchmarks/suite.sh runs them (with inputs shared with the tiktoken comparison) and puts them in the report.
import PackageDescription

let package = Package(
    name: "auto-optimizer-micro",
    platforms: [.macOS(.v15)],
    dependencies: [
        // The root package, by path; its identity is its directory's name, so products are named through `name:`.
        .package(name: "llm-auto-optimizer", path: "../.."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "HotPath",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "Wire", package: "llm-auto-optimizer"),
                .product(name: "Tokenizer", package: "llm-auto-optimizer"),
                .product(name: "Catalog", package: "llm-auto-optimizer"),
                .product(name: "Compression", package: "llm-auto-optimizer"),
                .product(name: "Policy", package: "llm-auto-optimizer"),
                .product(name: "Optimizer", package: "llm-auto-optimizer"),
                .product(name: "Proxy", package: "llm-auto-optimizer"),
                .product(name: "MockUpstream", package: "llm-auto-optimizer"),
            ],
            path: "Benchmarks/HotPath",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
