// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny")
]

let package = Package(
    name: "swift-ath",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "ATHCore", targets: ["ATHCore"]),
        .library(name: "ATHStore", targets: ["ATHStore"]),
        .library(name: "ATHStoreSQLite", targets: ["ATHStoreSQLite"]),
        .library(name: "ATHStorePostgres", targets: ["ATHStorePostgres"]),
        .library(name: "ATHServer", targets: ["ATHServer"]),
        .library(name: "ATHAgent", targets: ["ATHAgent"]),
        .library(name: "ATHIdentity", targets: ["ATHIdentity"]),
        .library(name: "ATHGateway", targets: ["ATHGateway"]),
        .executable(name: "ath", targets: ["ath"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.0"..<"5.0.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-configuration.git", from: "1.4.0", traits: [.defaults, "YAML"]),
    ],
    targets: [
        // The protocol itself: messages, signatures, tokens, state machines. No I/O.
        .target(
            name: "ATHCore",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ],
            swiftSettings: strict
        ),
        // Agent identity by certificates (ACPs CAI): the certificate authority, the CAI profile, CRLs
        // and chain verification, shared by the server, the gateway and the CLI.
        .target(
            name: "ATHIdentity",
            dependencies: [
                "ATHCore",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        // Durable state: the protocols by aggregate, with no backend.
        .target(name: "ATHStore", dependencies: ["ATHCore"], swiftSettings: strict),
        // The embedded default: one SQLite file through GRDB.
        .target(
            name: "ATHStoreSQLite",
            dependencies: ["ATHCore", "ATHStore", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict
        ),
        // Several instances on one PostgreSQL (postgres-nio), for the aggregates built so far.
        .target(
            name: "ATHStorePostgres",
            dependencies: [
                "ATHCore", "ATHStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Server SDK: Hummingbird routes for the handshake and the middleware that guards an API.
        .target(
            name: "ATHServer",
            dependencies: [
                "ATHCore", "ATHStore", "ATHIdentity",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The standalone gateway: services that do not change behind the handshake and the v0.1
        // API, from one configuration file (swift-configuration).
        .target(
            name: "ATHGateway",
            dependencies: [
                "ATHCore", "ATHServer", "ATHStore", "ATHStoreSQLite", "ATHStorePostgres", "ATHIdentity",
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Agent SDK: async/await client of the handshake and of protected APIs.
        .target(
            name: "ATHAgent",
            dependencies: [
                "ATHCore", "ATHIdentity",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: strict
        ),
        // The seed-001 scenario: a shopping platform and its assistant.
        .target(
            name: "ShoppingExample",
            dependencies: [
                "ATHCore", "ATHServer", "ATHAgent", "ATHStore", "ATHStoreSQLite", "ATHIdentity",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            path: "Examples/Shopping",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "ath",
            dependencies: [
                "ATHCore", "ATHServer", "ATHAgent", "ATHStore", "ATHStoreSQLite", "ATHIdentity", "ATHGateway", "ShoppingExample",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // Every decoder of untrusted bytes for libFuzzer, one target each (docs/RELIABILITY.md,
        // docs/FUZZING.md); an ordinary build replays a corpus.
        .executableTarget(
            name: "FuzzDecoders",
            dependencies: [
                "ATHCore", "ATHIdentity",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            path: "Fuzz/Decoders",
            exclude: ["corpus"],
            swiftSettings: strict
        ),
        // What the test targets share: child processes started without Foundation's `Process`.
        .target(name: "ATHTestSupport", path: "Tests/ATHTestSupport", swiftSettings: strict),
        .testTarget(
            name: "ATHCoreTests",
            dependencies: [
                "ATHCore", "ATHTestSupport", .product(name: "Crypto", package: "swift-crypto"), .product(name: "JWTKit", package: "jwt-kit"),
            ],
            exclude: ["Vectors"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ATHIdentityTests",
            dependencies: [
                "ATHCore", "ATHIdentity", "ATHTestSupport",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ATHIntegrationTests",
            dependencies: [
                "ATHCore", "ATHServer", "ATHAgent", "ATHStore", "ATHStoreSQLite", "ATHStorePostgres", "ATHIdentity", "ATHGateway",
                "ShoppingExample", "ATHTestSupport",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
