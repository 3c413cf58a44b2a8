// swift-tools-version:6.0
import PackageDescription

// Dependency direction (DESIGN.md section 2):
//   executables -> Vault -> HSMBridge -> CPKCS11; everything -> Custody.
// The custody server must never be able to import HSMBridge or CPKCS11.

let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let crypto = Target.Dependency.product(name: "Crypto", package: "swift-crypto")
let yams = Target.Dependency.product(name: "Yams", package: "Yams")
let grpcCore = Target.Dependency.product(name: "GRPCCore", package: "grpc-swift-2")
let grpcTransport = Target.Dependency.product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport")
let grpcProtobuf = Target.Dependency.product(name: "GRPCProtobuf", package: "grpc-swift-protobuf")
let swiftProtobuf = Target.Dependency.product(name: "SwiftProtobuf", package: "swift-protobuf")
let serviceLifecycle = Target.Dependency.product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let hummingbird = Target.Dependency.product(name: "Hummingbird", package: "hummingbird")
let openAPIRuntime = Target.Dependency.product(name: "OpenAPIRuntime", package: "swift-openapi-runtime")
let openAPIURLSession = Target.Dependency.product(name: "OpenAPIURLSession", package: "swift-openapi-urlsession")
let grdb = Target.Dependency.product(name: "GRDB", package: "GRDB.swift")
let httpTypes = Target.Dependency.product(name: "HTTPTypes", package: "swift-http-types")
let nioCore = Target.Dependency.product(name: "NIOCore", package: "swift-nio")
let nioPosix = Target.Dependency.product(name: "NIOPosix", package: "swift-nio")

let package = Package(
  name: "Custos",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "custos", targets: ["custos"]),
    .executable(name: "custos-hsm", targets: ["custos-hsm"]),
    .executable(name: "custos-server", targets: ["custos-server"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
    .package(url: "https://github.com/jpsim/Yams", "5.0.1"..<"7.0.0"),
    .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.0"),
    .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.0"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.0"),
    .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
    // The custody server: HTTP (Hummingbird), the API from openapi.yaml, SQLite through GRDB.
    .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.0"),
    .package(url: "https://github.com/apple/swift-openapi-runtime", from: "1.13.0"),
    .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
    // Clients of the custody API (tests, tools): the generated client over URLSession.
    .package(url: "https://github.com/apple/swift-openapi-urlsession", from: "1.4.0"),
    .package(url: "https://github.com/apple/swift-http-types", from: "1.0.0"),
    // Tests only: a self-signed certificate for the TLS listener.
    .package(url: "https://github.com/apple/swift-certificates", from: "1.0.0"),
    .package(url: "https://github.com/apple/swift-asn1", from: "1.0.0"),
  ],
  targets: [
    // C: a header shim over p11-kit's pkcs11.h. Modules are dlopened, never linked.
    .target(name: "CPKCS11"),
    // C: Debian's libsecp256k1 (recovery, extrakeys, schnorrsig).
    .systemLibrary(
      name: "CSecp256k1",
      pkgConfig: "libsecp256k1",
      providers: [.apt(["libsecp256k1-dev"])]
    ),
    // C: Debian's libargon2 (Argon2id for unseal share files and the Crypto User verifier).
    .systemLibrary(
      name: "CArgon2",
      pkgConfig: "libargon2",
      providers: [.apt(["libargon2-dev"])]
    ),
    // C: OpenSSL's libcrypto, only for RIPEMD-160 (Bitcoin's HASH160); nothing else uses it.
    .systemLibrary(
      name: "COpenSSL",
      pkgConfig: "libcrypto",
      providers: [.apt(["libssl-dev"])]
    ),
    // Child processes that die with their parent (setpriv --pdeathsig), started and stopped one
    // way: announcements, signals with a time limit, runs to the end, a SIGINT/SIGTERM trap.
    // Foundation only: used by `custos` and the tests, never pulls anything into the server.
    .target(name: "ProcessSupport"),
    // Pure model shared by every side. Depends on nothing of ours.
    .target(name: "Custody", dependencies: [crypto]),
    // PKCS #11 in Swift types: modules, devices, sessions, objects, mechanisms.
    .target(
      name: "HSMBridge",
      dependencies: ["CPKCS11", "CArgon2", "Custody", crypto, logging],
      resources: [
        // softhsm/ at the top of the package, linked here so it compiles into the module.
        .embedInCode("softhsm/softhsm2.conf.template"),
        .embedInCode("softhsm/custody.mechanisms"),
        .embedInCode("softhsm/admin.mechanisms"),
        .embedInCode("softhsm/officer.mechanisms"),
        .embedInCode("softhsm/default.mechanisms"),
      ]
    ),
    // Key ceremonies: scripts as data (YAML), the engine, participants, prompts, transcripts.
    .target(
      name: "Ceremony",
      dependencies: ["HSMBridge", "Custody", "Vault", yams, crypto, logging]
    ),
    // The vault extension running inside custos-hsm: root state, sealing, derivation, signing,
    // addresses, and the benchmarks of its hot paths (they measure its stages from inside).
    .target(
      name: "Vault",
      dependencies: ["HSMBridge", "Custody", "CSecp256k1", "COpenSSL", crypto, logging]
    ),
    // The wire between a custody server and a device: vault.proto, its generated Swift
    // (committed; scripts/regenerate-proto.sh rebuilds it) and the client servers use. Never
    // depends on HSMBridge, CPKCS11 or Vault: the server links it.
    .target(
      name: "VaultWire",
      dependencies: ["Custody", grpcCore, grpcTransport, grpcProtobuf, swiftProtobuf],
      exclude: ["vault.proto"]
    ),
    // The emulated HSM as a process: the device lock, sealed start, quorum unseal with a
    // persistent lockout, Crypto User sessions, the vault API over gRPC, graceful shutdown.
    .target(
      name: "DeviceServer",
      dependencies: [
        "Vault", "HSMBridge", "Custody", "VaultWire", grpcCore, grpcTransport, grpcProtobuf, crypto, logging,
        serviceLifecycle,
      ]
    ),
    // The custody API as openapi.yaml describes it: the generated types, server protocol and
    // client (committed; scripts/regenerate-openapi.sh rebuilds them). Shared by the server and
    // its clients (tests, the approver tools), so a client never links the server's database.
    .target(
      name: "CustosAPI", dependencies: ["Custody", openAPIRuntime, httpTypes],
      exclude: ["openapi-generator-config.yaml"]),
    // The custody server: the HTTP API, the database with the full Merkle tree, the approval
    // workflow, intents and reconciliation with the device. Reaches the device only through
    // VaultWire: never HSMBridge, CPKCS11, Vault, Ceremony or DeviceServer (a test checks the
    // dependency closure).
    .target(
      name: "Server",
      dependencies: [
        "CustosAPI", "VaultWire", "Custody", hummingbird, openAPIRuntime, nioCore, grdb, logging,
        serviceLifecycle,
      ]
    ),
    .executableTarget(
      name: "custos-server",
      dependencies: ["Server", "Custody", "VaultWire", argumentParser, logging, serviceLifecycle, nioCore, nioPosix]
    ),
    .executableTarget(
      name: "custos-hsm",
      dependencies: ["DeviceServer", argumentParser, logging, serviceLifecycle]
    ),
    // The approver's tools: key files, the canonical check of a served envelope, the --auto
    // rule, and the approval routes through the generated client. Never links the server.
    .target(
      name: "Approver",
      dependencies: ["Custody", "CustosAPI", crypto, logging, openAPIRuntime, openAPIURLSession, httpTypes]
    ),
    .executableTarget(
      name: "custos",
      dependencies: [
        "Ceremony", "HSMBridge", "Custody", "CSecp256k1", "Vault", "VaultWire", "Approver", "CustosAPI",
        "ProcessSupport",
        argumentParser, logging, openAPIRuntime, openAPIURLSession, httpTypes,
      ]
    ),
    // Test helpers shared by test targets: temporary directories, real SoftHSM test devices, an
    // init-device rehearsal and running custos-hsm processes.
    .target(
      name: "TestSupport",
      dependencies: ["HSMBridge", "Custody", "Ceremony", "VaultWire", "ProcessSupport", logging, crypto],
      path: "Tests/TestSupport"),
    .testTarget(name: "CustodyTests", dependencies: ["Custody", "TestSupport", crypto], resources: [.copy("Vectors")]),
    .testTarget(
      name: "HSMBridgeTests", dependencies: ["HSMBridge", "Custody", "TestSupport", crypto, logging],
      resources: [.copy("Vectors")]),
    .testTarget(
      name: "CeremonyTests",
      dependencies: ["Ceremony", "HSMBridge", "Custody", "Vault", "TestSupport", crypto, logging]),
    // A child process for the crash-safety test: commits root states until it is killed.
    .executableTarget(
      name: "root-state-writer", dependencies: ["Vault", "HSMBridge", "Custody", logging],
      path: "Tests/RootStateWriter"),
    .testTarget(name: "CSecp256k1Tests", dependencies: ["CSecp256k1"]),
    // A parent for the tests of ProcessSupport: starts a child through it, then waits to be killed.
    .executableTarget(name: "launch-parent", dependencies: ["ProcessSupport"], path: "Tests/LaunchParent"),
    // Real child processes: they die with their parent, time limits kill, the trap stops them.
    .testTarget(name: "ProcessSupportTests", dependencies: ["ProcessSupport", "TestSupport", "launch-parent"]),
    // The approver's key files, envelope checks and rules, without a server.
    .testTarget(name: "ApproverTests", dependencies: ["Approver", "Custody", "TestSupport", crypto]),
    .testTarget(
      name: "VaultTests",
      dependencies: [
        "Vault", "HSMBridge", "Custody", "TestSupport", "ProcessSupport", "root-state-writer", crypto, logging,
      ],
      resources: [.copy("Vectors")]
    ),
    // Starts the real custos-hsm (and custos) executables on devices from an init-device rehearsal.
    .testTarget(
      name: "DeviceServerTests",
      dependencies: [
        "DeviceServer", "VaultWire", "Ceremony", "Vault", "HSMBridge", "Custody", "TestSupport", "ProcessSupport",
        "custos-hsm",
        "custos", crypto, logging, swiftProtobuf, grpcCore,
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "SwiftASN1", package: "swift-asn1"),
      ]
    ),
    // Starts the real custos-hsm and custos-server on a rehearsed device and drives the API over
    // loopback HTTP.
    .testTarget(
      name: "ServerTests",
      dependencies: [
        "Server", "CustosAPI", "VaultWire", "Custody", "TestSupport", "Ceremony", "HSMBridge", "Vault", "custos-hsm",
        "custos-server", "custos", "Approver", "ProcessSupport", openAPIRuntime, openAPIURLSession, grdb, crypto,
        logging,
      ],
      resources: [.copy("Schemas")]
    ),
  ],
  swiftLanguageModes: [.v6]
)
