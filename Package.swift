// swift-tools-version:6.0
import PackageDescription

// Dependency direction (DESIGN.md section 2):
//   executables -> Vault -> HSMBridge -> CPKCS11; everything -> Custody.
// The custody server must never be able to import HSMBridge or CPKCS11.

let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let crypto = Target.Dependency.product(name: "Crypto", package: "swift-crypto")
let yams = Target.Dependency.product(name: "Yams", package: "Yams")

let package = Package(
  name: "Custos",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "custos", targets: ["custos"])
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
    .package(url: "https://github.com/jpsim/Yams", "5.0.1"..<"7.0.0"),
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
    .executableTarget(
      name: "custos",
      dependencies: ["Ceremony", "HSMBridge", "Custody", "CSecp256k1", "Vault", argumentParser, logging]
    ),
    // Test helpers shared by test targets: temporary directories, real SoftHSM test devices.
    .target(name: "TestSupport", dependencies: ["HSMBridge", "Custody", logging, crypto], path: "Tests/TestSupport"),
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
    .testTarget(
      name: "VaultTests",
      dependencies: ["Vault", "HSMBridge", "Custody", "TestSupport", "root-state-writer", crypto, logging],
      resources: [.copy("Vectors")]
    ),
  ],
  swiftLanguageModes: [.v6]
)
