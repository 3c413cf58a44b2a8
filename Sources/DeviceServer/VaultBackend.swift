import Custody
import Dispatch
import Foundation
import HSMBridge
import Logging
import Synchronization
import Vault
import VaultWire

/// What the device server needs from the vault once a quorum has unsealed the device, in the
/// wire's terms: canonical bytes in, canonical bytes out. The server checks sessions and state;
/// the backend does the vault's work (approvals, policy, Merkle changes, sealing, signing) and
/// nothing else.
///
/// Errors: a `VaultWireError` goes to the client as it is; `VaultError`, `MerkleError` and
/// `WalletDataError` are translated (see `VaultWireError.init(vault:)`); anything else is a
/// `deviceFailure` whose detail stays in the device's log.
public protocol VaultBackend: Sendable {
  /// The committed root state.
  func rootState() async throws -> RootState
  /// Creates a wallet under the envelope's approvals.
  func createWallet(_ call: VaultCall) async throws -> VaultOutcome
  /// Changes a wallet's data under the envelope's approvals.
  func updateWallet(_ call: VaultCall) async throws -> VaultOutcome
  /// Removes a wallet under the envelope's approvals.
  func removeWallet(_ call: VaultCall) async throws -> VaultOutcome
  /// Signs under the envelope's approvals and the wallet's policy; returns only once the root
  /// recording the request's nonce is durable.
  func sign(_ call: VaultCall) async throws -> VaultOutcome
  /// The public key (and address) at a path of a wallet.
  func publicKey(_ query: PublicKeyQuery) async throws -> PublicKeyInfo
  /// The result of a request this backend applied, by the SHA-256 of its envelope; nil when it
  /// holds none (never applied, or no longer among the most recent).
  func result(envelopeHash: Hash256) async throws -> VaultOutcome?
  /// Commits whatever is pending and lets go of the partition (graceful shutdown). Called once,
  /// after the last call has finished.
  func close() async throws
}

/// Opens the vault of an unsealed device.
public typealias VaultBackendFactory = @Sendable (Device, DeviceActivation, Logger) throws -> any VaultBackend

/// The vault of an unsealed device: `CustodyVault` over the custody partition, with its
/// approvals checks, policy, group commit and proof rebasing. This type only translates between
/// the wire's values and the vault's; it never checks approvals or signs itself.
public final class PartitionVaultBackend: VaultBackend {
  /// The partition the vault works in.
  public static let partitionName = "custody"

  /// Token operations between two renewals of the request sessions.
  public static let defaultRenewal = SessionRecycling.deviceDefault

  private let session: Session
  private let vault: CustodyVault
  private let logger: Logger
  /// The most recent results, for a server that lost an answer.
  private let outbox = ResultOutbox(capacity: 65_536, byteLimit: 4 << 20)

  /// Opens the custody partition with the activation's User PIN, its root state (flushed to
  /// disk after each commit), its master key and a pool of sessions for requests, one per core.
  ///
  /// The custody partition's User PIN stays in the vault (in a zeroing buffer, never logged or
  /// written) while the device is READY: every `renewAfter` token operations the request
  /// sessions move to a fresh PKCS #11 instance of the partition, which logs in with it (SoftHSM
  /// 2.6.1 keeps every destroyed sealing key until `C_Finalize`: see `SessionRecycling`). The
  /// other partitions' PINs are not kept.
  public static func open(
    device: Device, activation: DeviceActivation, logger: Logger, renewAfter: Int = defaultRenewal
  ) throws -> any VaultBackend {
    let sessions = ProcessInfo.processInfo.activeProcessorCount
    let partition = try device.partition(partitionName)
    let session = try partition.openSession(readWrite: true)
    do {
      let pin = try activation.pins(partitionName).user
      try session.login(.user, pin: pin)
      let recycling = SessionRecycling(operations: renewAfter) {
        try partition.openUserSessionInNewInstance(pin: pin)
      }
      let vault = try CustodyVault(
        session: session, syncDirectory: device.tokenDirectory(ofPartition: partitionName), sessions: sessions,
        recycling: recycling, logger: logger)
      return PartitionVaultBackend(session: session, vault: vault, logger: logger)
    } catch {
      try? session.close()
      throw error
    }
  }

  private init(session: Session, vault: CustodyVault, logger: Logger) {
    self.session = session
    self.vault = vault
    self.logger = logger
  }

  public func rootState() async throws -> RootState {
    vault.rootState.durable
  }

  public func createWallet(_ call: VaultCall) async throws -> VaultOutcome {
    _ = try Self.proof(call, "CreateWallet")  // refuses a call without one: the next line has one
    let result = try await vault.createWallet(
      envelope: call.envelope, approvals: call.approvals, proof: call.currentLeafProof!)
    return keep(result, call)
  }

  public func updateWallet(_ call: VaultCall) async throws -> VaultOutcome {
    let result = try await vault.updateWallet(
      envelope: call.envelope, approvals: call.approvals, walletData: call.walletData, sealedSeed: call.sealedSeed,
      proof: try Self.walletProof(call, "UpdateWallet"))
    return keep(result, call)
  }

  public func removeWallet(_ call: VaultCall) async throws -> VaultOutcome {
    let result = try await vault.removeWallet(
      envelope: call.envelope, approvals: call.approvals, walletData: call.walletData,
      proof: try Self.walletProof(call, "RemoveWallet"))
    return keep(result, call)
  }

  public func sign(_ call: VaultCall) async throws -> VaultOutcome {
    let result = try await vault.sign(
      envelope: call.envelope, approvals: call.approvals, walletData: call.walletData, sealedSeed: call.sealedSeed,
      proof: try Self.walletProof(call, "Sign"))
    return keep(result, call)
  }

  public func publicKey(_ query: PublicKeyQuery) async throws -> PublicKeyInfo {
    let wallet = try WalletData.decode(query.walletData)
    let scheme = try Self.scheme(of: wallet)
    let path = try DerivationPath(parsing: query.path)
    let network: ExtendedKeyNetwork =
      switch query.address {
      case .bitcoinP2WPKHTestnet, .bitcoinP2WPKHRegtest, .bitcoinP2TRTestnet, .bitcoinP2TRRegtest: .testnet
      default: .mainnet
      }
    let indices = path.components.map(\.rawValue)
    let key = try await vault.publicKey(
      walletData: query.walletData, sealedSeed: query.sealedSeed, path: indices, network: network)
    var address: String? = nil
    if let kind = query.address {
      address = try await vault.address(
        Self.addressKind(kind), walletData: query.walletData, sealedSeed: query.sealedSeed, path: indices)
    }
    return PublicKeyInfo(
      scheme: scheme.rawValue, path: path.description, publicKey: key.publicKey, chainCode: key.chainCode,
      fingerprint: key.fingerprint, extendedPublicKey: key.extendedPublicKey?.text, address: address)
  }

  public func result(envelopeHash: Hash256) async throws -> VaultOutcome? {
    outbox.result(envelopeHash)
  }

  /// The outcome of `call`, kept in the outbox under its envelope's hash before it is answered.
  private func keep(_ result: RequestResult, _ call: VaultCall) -> VaultOutcome {
    let outcome = Self.outcome(result)
    outbox.keep(outcome, envelopeHash: Hash256.sha256(call.envelope))
    return outcome
  }

  /// Every request has awaited its own commit by the time the server closes the backend, so
  /// nothing is pending: this lets go of the partition's sessions.
  public func close() async throws {
    try? session.logout()
    try session.close()
    logger.info("custody partition closed", metadata: ["vault.epoch": "\(vault.rootState.durable.epoch)"])
  }

  // MARK: Helpers

  private static func proof(_ call: VaultCall, _ method: String) throws -> ChangeProof {
    guard let proof = call.proof else {
      throw VaultWireError(.invalidArgument, "\(method) needs a Merkle proof against the device's root")
    }
    return proof
  }

  private static func walletProof(_ call: VaultCall, _ method: String) throws -> WalletProof {
    let proof = try proof(call, method)
    return WalletProof(
      siblings: proof.proof.siblings, anchor: RootAnchor(leafCount: proof.leafCount, root: proof.root))
  }

  private static func outcome(_ result: RequestResult) -> VaultOutcome {
    VaultOutcome(
      walletData: result.walletData, sealedSeed: result.sealedSeed, result: result.output, change: result.change)
  }

  /// The derivation scheme of a wallet's keys, from its curve and derivation.
  static func scheme(of wallet: WalletData) throws -> DerivationScheme {
    switch (wallet.curve, wallet.derivation) {
    case (.secp256k1, .bip32): return .bip32Secp256k1
    case (.secp256k1, .slip10): return .slip10Secp256k1
    case (.ed25519, .slip10): return .slip10Ed25519
    case (.ed25519, .bip32):
      throw VaultWireError(.invalidArgument, "the wallet derives ed25519 keys with BIP-32, which only serves secp256k1")
    }
  }

  static func addressKind(_ kind: WalletAddressKind) -> AddressKind {
    switch kind {
    case .ethereum: .ethereum
    case .bitcoinP2WPKHMainnet: .bitcoinP2WPKH(.mainnet)
    case .bitcoinP2WPKHTestnet: .bitcoinP2WPKH(.testnet)
    case .bitcoinP2WPKHRegtest: .bitcoinP2WPKH(.regtest)
    case .bitcoinP2TRMainnet: .bitcoinP2TR(.mainnet)
    case .bitcoinP2TRTestnet: .bitcoinP2TR(.testnet)
    case .bitcoinP2TRRegtest: .bitcoinP2TR(.regtest)
    case .solana: .solana
    }
  }
}

extension VaultWireError {
  /// A refusal or failure of the vault, as the wire reports it: bad input is `invalidArgument`,
  /// a refused Merkle change `vaultRefused`, a failure of the token `deviceFailure` (whose
  /// detail stays in the device's log).
  public init(vault error: any Error) {
    switch error {
    case let wire as VaultWireError:
      self = wire
    case let request as RequestError:
      switch request.code {
      case .nonCanonicalEnvelope, .malformedEnvelope, .malformedApproval, .malformedWalletData, .wrongOperation,
        .unsupported, .sealedSeedMismatch:
        self.init(.invalidArgument, request.reason, reason: request.code.name)
      case .commitFailed:
        self.init(
          .deviceFailure, "the vault could not commit the root (see the device's log)", reason: request.code.name)
      default:
        self.init(.vaultRefused, request.reason, reason: request.code.name)
      }
    case let merkle as MerkleError:
      self.init(.vaultRefused, "the vault refused the change: \(merkle)", reason: "proofInvalid")
    case let wallet as WalletDataError:
      self.init(.invalidArgument, "the wallet data does not decode: \(wallet)")
    case let vault as VaultError:
      switch vault.code {
      case .tokenFailure, .tokenWrite, .rootStateCorrupt, .rootStateMissing, .masterKeyMissing,
        .signatureCheckFailed, .epochOutOfOrder:
        self.init(.deviceFailure, "the vault failed inside the device (\(vault.code)); see the device's log")
      default:
        self.init(.invalidArgument, vault.reason)
      }
    default:
      self.init(.deviceFailure, "the vault failed inside the device; see the device's log")
    }
  }
}

/// The most recent results of the vault's requests, by the SHA-256 of their envelopes (public
/// values: wallet data, sealed seeds, signatures). A custody server that lost an answer (it
/// was killed, the connection broke) asks for it here, so the change it mirrors is never lost
/// while this process runs. Oldest first out beyond `capacity` results or `byteLimit` bytes
/// (their encodings plus a fixed cost each): the device holds a root, not the wallets, so what
/// it keeps for servers is bounded in bytes too (65,536 creations' wallet data alone is tens
/// of MiB).
final class ResultOutbox: Sendable {
  private struct State {
    var results: [Hash256: VaultOutcome] = [:]
    var order: [Hash256] = []
    var start = 0
    var bytes = 0
  }

  private let capacity: Int
  private let byteLimit: Int
  private let state = Mutex(State())

  /// What one kept result costs besides its bytes: the table's entry, the order's, the
  /// arrays' headers and the allocator's (an estimate, on the high side).
  static let overhead = 256

  init(capacity: Int, byteLimit: Int) {
    self.capacity = capacity
    self.byteLimit = byteLimit
  }

  static func cost(_ outcome: VaultOutcome) -> Int {
    overhead + outcome.walletData.count + outcome.sealedSeed.count + outcome.result.count
  }

  func keep(_ outcome: VaultOutcome, envelopeHash: Hash256) {
    state.withLock { state in
      if let replaced = state.results.updateValue(outcome, forKey: envelopeHash) {
        state.bytes -= Self.cost(replaced)
      } else {
        state.order.append(envelopeHash)
      }
      state.bytes += Self.cost(outcome)
      while state.order.count - state.start > 1
        && (state.order.count - state.start > capacity || state.bytes > byteLimit)
      {
        if let evicted = state.results.removeValue(forKey: state.order[state.start]) {
          state.bytes -= Self.cost(evicted)
        }
        state.start += 1
      }
      if state.start > max(capacity / 4, 64) {
        state.order.removeFirst(state.start)
        state.start = 0
      }
    }
  }

  /// Results kept now, and their bytes as `byteLimit` counts them.
  var kept: (count: Int, bytes: Int) { state.withLock { ($0.results.count, $0.bytes) } }

  func result(_ envelopeHash: Hash256) -> VaultOutcome? {
    state.withLock { $0.results[envelopeHash] }
  }
}
