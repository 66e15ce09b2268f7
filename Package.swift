// swift-tools-version:6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    // The hot path is event-loop confined by design; dynamic exclusivity checks cost measurable time per request
    // there (swift_beginAccess in profiles). Static checks stay on.
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

// The release sidecar is linked so that starting it reads and maps as little as possible (issue 7's idle RSS target;
// measured on the idle sidecar: 37 MB -> 27 MB RSS, anonymous memory unchanged at ~3 MB):
// - the Swift runtime and Foundation statically (no dynamic symbol binding against libswiftCore/Foundation's tables);
// - lld with compact relative relocations (`-z pack-relative-relocs`, glibc >= 2.36): the position-independent binary's
//   ~145k relative relocations take 29 KB instead of a 3.5 MB RELA table that the loader reads in full at start;
// - no exported dynamic symbol table (the driver's default `-export-dynamic` puts ~5 MB of symbols and names into the
//   loaded image; nothing looks the sidecar's symbols up by name).
// Debug builds (tests) keep the toolchain's defaults; `swift build -c release` alone gives this binary (no
// `--static-swift-stdlib`, which would also recompile every module against the static toolchain modules).
let releaseLinkerSettings: [LinkerSetting] = [
    .unsafeFlags(
        [
            "-static-stdlib", "-use-ld=lld",
            "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs",
            "-Xlinker", "--no-export-dynamic",
            // The modules were compiled against the shared toolchain (as `swift build` does without
            // `--static-swift-stdlib`), so their autolink entries name only the top-level Foundation libraries; the
            // static archives those need come here (lld resolves archives in any order).
            "-l_FoundationCollections", "-l_FoundationICU", "-l_FoundationCShims", "-lCoreFoundation",
        ],
        .when(platforms: [.linux], configuration: .release)
    )
]

let package = Package(
    name: "llm-auto-optimizer",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "auto-optimizer", targets: ["auto-optimizer"]),
        // Libraries for the micro benchmark package (Benchmarks/Micro), which depends on this one by path so that
        // package-benchmark is not part of this package's build.
        .library(name: "Wire", targets: ["Wire"]),
        .library(name: "Tokenizer", targets: ["Tokenizer"]),
        .library(name: "Catalog", targets: ["Catalog"]),
        .library(name: "Compression", targets: ["Compression"]),
        .library(name: "Policy", targets: ["Policy"]),
        .library(name: "Optimizer", targets: ["Optimizer"]),
        .library(name: "Proxy", targets: ["Proxy"]),
        .library(name: "MockUpstream", targets: ["MockUpstream"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        // Telemetry (issue 6): swift-otel for OTLP metrics export, grpc for OTLP/gRPC span export, Prometheus text.
        .package(url: "https://github.com/swift-otel/swift-otel.git", exact: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
    ],
    targets: [
        .target(
            name: "Wire",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Tokenizer",
            dependencies: ["CSHA256", "CHints"],
            resources: [.copy("Resources")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Catalog",
            resources: [.copy("Resources")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Compression",
            dependencies: ["Tokenizer", "Wire", "CHints"],
            resources: [.copy("Resources")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Policy",
            dependencies: [
                "Catalog",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Atomics", package: "swift-atomics"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Optimizer",
            dependencies: [
                "Tokenizer", "Catalog", "Wire", "Policy", "Compression",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Proxy",
            dependencies: [
                "Wire", "Optimizer", "Policy", "CZlib",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "MockUpstream",
            dependencies: [
                "Wire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Compiler hints with no Swift spelling (a cache prefetch), for the compressor's hot loop and the tokenizer's
        // vocabulary load.
        .target(name: "CHints", path: "Sources/CHints"),
        // SHA-256 rounds with the x86 SHA extensions, for the tokenizer's vocabulary check at load.
        .target(name: "CSHA256", path: "Sources/CSHA256"),
        .systemLibrary(
            name: "CZlib",
            path: "Sources/CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .systemLibrary(
            name: "CLZ4",
            path: "Sources/CLZ4",
            pkgConfig: "liblz4",
            providers: [.apt(["liblz4-dev"])]
        ),
        .target(
            name: "Telemetry",
            dependencies: [
                "Optimizer", "CLZ4",
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // One C function that switches off the Swift runtime's dynamic exclusivity checks (see ServeCommand).
        .target(name: "CRuntimeTuning", path: "Sources/CRuntimeTuning"),
        .executableTarget(
            name: "auto-optimizer",
            dependencies: [
                "CRuntimeTuning", "Proxy", "MockUpstream", "Wire", "Optimizer", "Tokenizer", "Catalog", "Policy", "Compression", "Telemetry",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings,
            linkerSettings: releaseLinkerSettings
        ),
        .executableTarget(
            name: "tokbench",
            dependencies: ["Tokenizer"],
            path: "Sources/tokbench",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "policybench",
            dependencies: ["Policy", "Catalog"],
            path: "Sources/policybench",
            swiftSettings: swiftSettings
        ),
        // The floor of any SwiftNIO proxy (a byte relay), measured next to the sidecar by Benchmarks/overhead.sh.
        .executableTarget(
            name: "niorelay",
            dependencies: [.product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio")],
            path: "Sources/niorelay",
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "PolicyTests", dependencies: ["Policy", "Catalog"], swiftSettings: swiftSettings),
        .testTarget(
            name: "CompressionTests",
            dependencies: ["Compression", "Tokenizer", "Wire", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "WireTests", dependencies: ["Wire"], swiftSettings: swiftSettings),
        .testTarget(name: "TokenizerTests", dependencies: ["Tokenizer"], swiftSettings: swiftSettings),
        .testTarget(name: "CatalogTests", dependencies: ["Catalog"], swiftSettings: swiftSettings),
        .testTarget(
            name: "OptimizerTests",
            dependencies: ["Optimizer", "Wire", "Tokenizer", "Policy", "Catalog", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TelemetryTests",
            dependencies: ["Telemetry", "Optimizer", "CLZ4"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ProxyTests",
            dependencies: ["Proxy", "Wire", "CZlib", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
    ]
)
