import CSecp256k1
import Crypto
import Custody
import Foundation
import HSMBridge
import Logging

/// `custos bench approve`: end-to-end approved signing through `CustodyVault` on a real custody
/// partition. Wallets with three ES256 passkeys each are created through the vault; then, round
/// after round, every wallet signs one EIP-1559 transaction approved by two of its passkeys,
/// from many concurrent tasks, each result released only once the root recording its nonce is
/// durable in the token. The approvals are made before a round starts (on approvers' devices,
/// not on the HSM's machine); the server's tree (a `VaultTreeMirror`) runs in the timed loop.
///
/// In the same run it measures the raw cryptography each request performs (two P-256
/// verifications, one secp256k1 signature and its verification) at the same parallelism, the
/// token work (unseal and re-seal) at the same parallelism, and each stage alone on one thread,
/// so the report says where the time goes.
public struct ApproveBenchmark {
  public struct Options: Sendable {
    public var wallets: Int
    public var rounds: Int
    /// Concurrent requests in flight.
    public var concurrency: Int
    /// PKCS #11 sessions serving requests.
    public var sessions: Int
    /// Calls per single-thread stage measurement.
    public var stageIterations: Int
    /// Longest a token write waits for requests still under way.
    public var linger: Duration
    /// Where the throw-away device goes.
    public var scratchDirectory: String
    /// How long each bound (raw crypto, token) is measured.
    public var boundSeconds: Double

    public init(
      wallets: Int = 2_000, rounds: Int = 3, concurrency: Int = 32, sessions: Int = 2, stageIterations: Int = 500,
      linger: Duration = CustodyVault.defaultLinger, scratchDirectory: String = NSTemporaryDirectory(),
      boundSeconds: Double = 2
    ) {
      self.boundSeconds = boundSeconds
      self.linger = linger
      self.wallets = wallets
      self.rounds = rounds
      self.concurrency = concurrency
      self.sessions = sessions
      self.stageIterations = stageIterations
      self.scratchDirectory = scratchDirectory
    }
  }

  /// What the benchmark measured.
  public struct Report: Sendable {
    public var options: Options
    public var optimized: Bool
    public var cores: Int
    /// Creation and rounds, measured by the same workload the socket run uses.
    public var workload: ApproveWorkloadReport
    /// The vault's own count of batch sizes and commit times over the rounds.
    public var statistics: CommitStatistics
    /// Two P-256 verifications + secp256k1 sign + verify, per second, at the same parallelism.
    public var rawCryptoPerSecond: Double
    /// Unseal + re-seal in the token, per second, at the same parallelism.
    public var tokenPerSecond: Double
    /// Each stage alone on one thread: name and microseconds per request.
    public var stages: [(name: String, microseconds: Double)]
    public var best: Double { workload.best }
    public var ratio: Double { best / rawCryptoPerSecond }
  }

  let options: Options
  let logger: Logger

  public init(options: Options, logger: Logger) {
    self.options = options
    self.logger = logger
  }

  /// One wallet's approvers and state on the client side (`walletID` is written once, at
  /// creation, before any round reads it).
  final class Client: @unchecked Sendable {
    let passkeys: [SoftwareAuthenticator]
    var walletID: UInt64 = 0
    init() throws {
      passkeys = try (0..<3).map { _ in try SoftwareAuthenticator(.es256) }
    }
  }

  /// The server stand-in, shared by the tasks.
  final class Server: @unchecked Sendable {
    private let lock = NSLock()
    private var mirror: VaultTreeMirror<InMemoryMerkleNodeStore>
    init(keepingWallets: Bool = true) throws {
      mirror = try VaultTreeMirror(store: InMemoryMerkleNodeStore(), keepingWallets: keepingWallets)
    }
    func withMirror<R>(_ body: (inout VaultTreeMirror<InMemoryMerkleNodeStore>) throws -> R) rethrows -> R {
      try lock.withLock { try body(&mirror) }
    }
  }

  /// A prepared request.
  struct Prepared: Sendable {
    let walletID: UInt64
    let envelope: [UInt8]
    let approvals: [[UInt8]]
  }

  /// Runs the benchmark. `afterCreation` runs once this run's wallets exist and `afterRound`
  /// after each of its signing rounds: a comparison run (the socket's) prepares and measures
  /// its own rounds there, in turns with these, so a drift of the machine's speed falls on both.
  public func run(
    afterCreation: () async throws -> Void = {}, afterRound: (Int) async throws -> Void = { _ in }
  ) async throws -> Report {
    let scratch = try BenchmarkDevice(in: options.scratchDirectory, logger: logger)
    defer { scratch.remove() }
    let session = scratch.session
    _ = try SeedSealer.generateMasterKey(in: session)
    let syncDirectory = scratch.tokenDirectory
    _ = try RootStateStore.initialize(session: session, syncDirectory: syncDirectory, logger: logger)
    let vault = try CustodyVault(
      session: session, syncDirectory: syncDirectory, sessions: options.sessions, linger: options.linger,
      recycling: try scratch.recycling(), logger: logger)
    let workload = try ApproveWorkload(targets: [vault], concurrency: options.concurrency)
    var report = try await workload.run(
      target: "in-process", wallets: options.wallets, rounds: options.rounds,
      afterCreation: {
        try await afterCreation()
        vault.resetCommitStatistics()
      }, afterRound: afterRound)
    let statistics = vault.commitStatistics

    // Durable: the token's root, read back through the store, is the mirror's too.
    let durable = try RootStateStore.open(session: try session.module.openSession(session.slot), logger: logger).state
    let mirrored = try workload.mirroredAnchor()
    report.durableRootMatches =
      report.durableRootMatches && RootAnchor(durable) == mirrored && vault.rootState.durable == durable

    let server = workload.server
    let client = workload.clients[0]
    let sample = try ApproveWorkload<CustodyVault>.prepare(client, server: server, pair: 0)
    let rawCrypto = try await rawCryptoRate(sample: sample, client: client)
    let token = try await tokenRate(vault: vault, server: server, client: client)
    let stages = try await stageTimes(vault: vault, server: server, client: client)

    #if DEBUG
    let optimized = false
    #else
    let optimized = true
    #endif
    return Report(
      options: options, optimized: optimized, cores: ProcessInfo.processInfo.activeProcessorCount,
      workload: report, statistics: statistics, rawCryptoPerSecond: rawCrypto, tokenPerSecond: token, stages: stages)
  }

  // MARK: Requests

  static let policy = Policy(
    perTransactionLimit: Amount(decimal: "1000000000000000000")!,
    rollingWindow: RollingLimit(seconds: 86_400, limit: Amount(decimal: "1000000000000000000000")!),
    destinationAllowlist: ["0x52908400098527886E0F7030069857D2E4169EE7"])

  static let destination = EthereumAddress.parse("0x52908400098527886E0F7030069857D2E4169EE7")!

  // MARK: Bounds

  /// Two P-256 verifications and a secp256k1 signature with its verification, per second, from
  /// `options.concurrency` tasks for about two seconds: the assertions of a real request by
  /// `client`'s passkeys, and a signature over a 32-byte digest.
  func rawCryptoRate(sample: Prepared, client: Client) async throws -> Double {
    let assertions = try sample.approvals.map { encoding -> (key: [UInt8], signed: [UInt8], signature: [UInt8]) in
      guard case .passkey(let assertion) = try Approval.decode(encoding).proof,
        let passkey = client.passkeys.first(where: { $0.credentialID == assertion.credentialID })
      else { throw BenchError("a sample approval is not by the client's passkeys") }
      return (
        passkey.rawPublicKey, assertion.authenticatorData + Hash256.sha256(assertion.clientDataJSON).bytes,
        assertion.signature
      )
    }
    let secp = try Secp256k1()
    let secret = Hashes.sha256(Array("raw bound key".utf8))
    let digest = Hashes.sha256(Array("raw bound digest".utf8))
    let publicKey = try secret.withUnsafeBytes { try secp.publicKey(secret: $0) }
    return try await rate(tasks: options.concurrency, seconds: options.boundSeconds) {
      for assertion in assertions {
        guard
          WebAuthn.verifyP256(signatureDER: assertion.signature, over: assertion.signed, rawPublicKey: assertion.key)
        else { throw BenchError("a sample assertion did not verify") }
      }
      let (signature, _) = try secret.withUnsafeBytes { try secp.signECDSA(digest: digest, secret: $0) }
      guard secp.verifyECDSA(signature: signature, digest: digest, publicKey: publicKey) else {
        throw BenchError("a raw signature did not verify")
      }
    }
  }

  /// Unseal + re-seal (two derive + GCM in the token) per second at the same parallelism.
  func tokenRate(vault: CustodyVault, server: Server, client: Client) async throws -> Double {
    let (encoding, sealedBytes) = server.withMirror { mirror in
      let entry = mirror.wallets[client.walletID]!
      return (entry.walletData, entry.sealedSeed)
    }
    let walletHash = Hash256.sha256(encoding).bytes
    let sealed = try SealedSeed(bytes: sealedBytes)
    return try await rate(tasks: options.concurrency, seconds: options.boundSeconds) {
      try await vault.pool.withVault { wallet in
        let seed = try wallet.sealer.open(sealed, walletHash: walletHash)
        _ = try wallet.sealer.seal(seed, walletHash: walletHash)
      }
    }
  }

  /// Calls `body` from `tasks` tasks for about `seconds` seconds; calls per second.
  func rate(
    tasks: Int, seconds duration: Double, _ body: @escaping @Sendable () async throws -> Void
  ) async throws
    -> Double
  {
    let deadline = ContinuousClock.now + .milliseconds(Int(duration * 1000))
    let start = ContinuousClock.now
    let total = try await withThrowingTaskGroup(of: Int.self) { group in
      for _ in 0..<tasks {
        group.addTask {
          var count = 0
          while ContinuousClock.now < deadline {
            try await body()
            count += 1
          }
          return count
        }
      }
      return try await group.reduce(0, +)
    }
    return Double(total) / seconds(ContinuousClock.now - start)
  }

  // MARK: Stages

  /// Each stage of one request alone, on one thread, in microseconds per request.
  func stageTimes(
    vault: CustodyVault, server: Server, client: Client
  ) async throws -> [(name: String, microseconds: Double)] {
    let sample = try ApproveWorkload<CustodyVault>.prepare(client, server: server, pair: 0)
    let (encoding, sealedBytes, proof) = try server.withMirror { mirror in
      let entry = mirror.wallets[client.walletID]!
      return (entry.walletData, entry.sealedSeed, try mirror.proof(ofWallet: client.walletID))
    }
    let iterations = options.stageIterations
    var stages = [(name: String, microseconds: Double)]()
    func time(_ name: String, _ body: () throws -> Void) rethrows {
      for _ in 0..<max(1, iterations / 10) { try body() }
      let start = ContinuousClock.now
      for _ in 0..<iterations { try body() }
      stages.append((name, seconds(ContinuousClock.now - start) * 1e6 / Double(iterations)))
    }
    let wallet = try WalletData.decode(encoding)
    let approvals = try sample.approvals.map { try Approval.decode($0) }
    let envelope = try RequestEnvelope.decode(sample.envelope)
    guard case .signEIP1559(let transaction) = envelope.operation else { throw BenchError("not a transaction") }
    try time("decode envelope, 2 approvals, wallet data; check the proof") {
      _ = try RequestEnvelope.decode(sample.envelope)
      _ = try sample.approvals.map { try Approval.decode($0) }
      _ = try WalletData.decode(encoding)
      try vault.commits.verify(walletID: wallet.id, leaf: Hash256.sha256(encoding), proof: proof)
    }
    try time("2 WebAuthn ES256 assertions (JSON, flags, P-256 verify)") {
      _ = try ApprovalCheck.verify(
        envelope: sample.envelope, approvals: approvals, approvers: wallet.approvers, required: 2)
    }
    let now = SystemVaultClock().now()
    var updated = wallet
    try time("policy, new wallet data (encode + SHA-256)") {
      updated.policyState = try PolicyCheck.check(
        wallet.policy, state: wallet.policyState,
        spend: PolicyCheck.Spend(value: transaction.value, destination: transaction.to), now: now)
      updated.requestNonce += 1
      _ = Hash256.sha256(try updated.encoded())
    }
    time("RLP + Keccak-256 of the transaction") { _ = EthereumSigning.signingHash(transaction) }
    let sealed = try SealedSeed(bytes: sealedBytes)
    let walletHash = Hash256.sha256(encoding).bytes
    let path = DerivationPath(ChainData.defaultEthereumPath.map(ChildIndex.init(rawValue:)))
    let digest = EthereumSigning.signingHash(transaction)
    try await vault.pool.withVault { vault in
      try time("unseal (token: derive key, AES-GCM decrypt, destroy)") {
        _ = try vault.sealer.open(sealed, walletHash: walletHash)
      }
      let seed = try vault.sealer.open(sealed, walletHash: walletHash)
      try time("derive m/44'/60'/0'/0/0 (BIP-32)") {
        _ = try vault.derivation.signingKey(seed: seed, scheme: .bip32Secp256k1, path: path)
      }
      let (privateKey, publicKey) = try vault.derivation.signingKey(seed: seed, scheme: .bip32Secp256k1, path: path)
      try time("secp256k1 sign + recovery check") {
        _ = try vault.signer.sign(
          digest, algorithm: .ecdsaSecp256k1, privateKey: privateKey, publicKey: publicKey, auxiliary: [])
      }
      try time("re-seal (token: derive key, RNG nonce, AES-GCM encrypt, destroy)") {
        _ = try vault.sealer.seal(seed, walletHash: walletHash)
      }
    }
    return stages
  }
}

/// User and system CPU seconds this process has used (every thread).
public func processCPUSeconds() -> Double {
  var usage = rusage()
  getrusage(RUSAGE_SELF.rawValue, &usage)
  func value(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
  return value(usage.ru_utime) + value(usage.ru_stime)
}

/// A duration in seconds, for reports.
public func seconds(_ duration: Duration) -> Double {
  Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}
