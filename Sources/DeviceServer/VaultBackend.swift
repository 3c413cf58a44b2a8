import Custody
import Dispatch
import Foundation
import HSMBridge
import Logging
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
  /// Commits whatever is pending and lets go of the partition (graceful shutdown). Called once,
  /// after the last call has finished.
  func close() async throws
}

/// Opens the vault of an unsealed device.
public typealias VaultBackendFactory = @Sendable (Device, DeviceActivation, Logger) throws -> any VaultBackend

/// The vault over the custody partition as it exists in this build: the root state
/// (`RootStateStore`, `WalletRoot`) and the wallet keys (`WalletVault`).
///
/// ADAPTER (the lead wires it after the `approvals` branch merges): create, update, remove and
/// sign go through the approvals-checking request API (`CustodyVault`) and its group commit;
/// until then they answer `notAvailable`. This type never checks approvals or signs requests
/// itself.
public final class PartitionVaultBackend: VaultBackend {
  /// The partition the vault works in.
  public static let partitionName = "custody"

  private let session: Session
  private let root: WalletRoot
  private let vault: WalletVault
  private let logger: Logger
  /// PKCS #11 calls of the vault's one session, one at a time, off the concurrency pool.
  private let queue = DispatchQueue(label: "custos.vault.partition")

  /// Opens the custody partition with the activation's User PIN, its root state and its master
  /// key. The PINs are not kept.
  public static func open(device: Device, activation: DeviceActivation, logger: Logger) throws -> any VaultBackend {
    let partition = try device.partition(partitionName)
    let session = try partition.openSession(readWrite: true)
    do {
      try session.login(.user, pin: try activation.pins(partitionName).user)
      let store = try RootStateStore.open(
        session: session, syncDirectory: device.tokenDirectory(ofPartition: partitionName), logger: logger)
      return PartitionVaultBackend(
        session: session, root: WalletRoot(store: store, logger: logger),
        vault: try WalletVault(session: session, logger: logger), logger: logger)
    } catch {
      try? session.close()
      throw error
    }
  }

  private init(session: Session, root: WalletRoot, vault: WalletVault, logger: Logger) {
    self.session = session
    self.root = root
    self.vault = vault
    self.logger = logger
  }

  public func rootState() async throws -> RootState {
    try await run { self.root.state }
  }

  public func createWallet(_ call: VaultCall) async throws -> VaultOutcome {
    throw Self.notWired("CreateWallet")
  }

  public func updateWallet(_ call: VaultCall) async throws -> VaultOutcome {
    throw Self.notWired("UpdateWallet")
  }

  public func removeWallet(_ call: VaultCall) async throws -> VaultOutcome {
    throw Self.notWired("RemoveWallet")
  }

  public func sign(_ call: VaultCall) async throws -> VaultOutcome {
    throw Self.notWired("Sign")
  }

  public func publicKey(_ query: PublicKeyQuery) async throws -> PublicKeyInfo {
    let wallet = try WalletData.decode(query.walletData)
    let scheme = try Self.scheme(of: wallet)
    let path = try DerivationPath(parsing: query.path)
    let location = WalletKeyLocation(
      sealedSeed: try SealedSeed(bytes: query.sealedSeed), walletHash: Hash256.sha256(query.walletData).bytes,
      scheme: scheme, path: path)
    let address = query.address.map(Self.addressKind)
    let network: ExtendedKeyNetwork =
      switch query.address {
      case .bitcoinP2WPKHTestnet, .bitcoinP2WPKHRegtest, .bitcoinP2TRTestnet, .bitcoinP2TRRegtest: .testnet
      default: .mainnet
      }
    return try await run {
      let key = try self.vault.publicKey(at: location, network: network)
      return PublicKeyInfo(
        scheme: scheme.rawValue, path: path.description, publicKey: key.publicKey, chainCode: key.chainCode,
        fingerprint: key.fingerprint, extendedPublicKey: key.extendedPublicKey?.text,
        address: try address.map { try self.vault.address($0, at: location) })
    }
  }

  public func close() async throws {
    try await run {
      try? self.session.logout()
      try self.session.close()
    }
    logger.info("custody partition closed")
  }

  // MARK: Helpers

  private func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
      queue.async { continuation.resume(with: Result { try body() }) }
    }
  }

  private static func notWired(_ method: String) -> VaultWireError {
    VaultWireError(
      .notAvailable,
      "\(method) is not available in this build of the device: the approvals-checking vault API is not wired yet")
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
    case let merkle as MerkleError:
      self.init(.vaultRefused, "the vault refused the change: \(merkle)")
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
