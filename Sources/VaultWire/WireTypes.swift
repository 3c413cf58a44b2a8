import Custody
import Foundation

/// Whether a device serves the vault API.
public enum DeviceState: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
  /// Started, partitions closed: only status, login and unseal are served.
  case sealed = "SEALED"
  /// Unsealed: the custody partition is open and the vault serves its API.
  case ready = "READY"
  /// Shutting down: new calls are refused, calls in flight finish.
  case stopping = "STOPPING"

  public var description: String { rawValue }
}

/// The backoff against guessing a credential or a share password: five failures, then a
/// lockout of 1 minute doubling to 1 hour.
public struct Lockout: Sendable, Hashable {
  /// Failures since the last success.
  public var failures: Int
  /// Failures left, the last of which starts a lockout (0 while one runs, and after one while
  /// the failures are not cleared: the next failure starts a longer one).
  public var attemptsBeforeLockout: Int
  /// Until when attempts are refused unread; nil when no lockout is running.
  public var lockedUntil: Date?

  public init(failures: Int, attemptsBeforeLockout: Int, lockedUntil: Date?) {
    self.failures = failures
    self.attemptsBeforeLockout = attemptsBeforeLockout
    self.lockedUntil = lockedUntil
  }
}

/// Unseal progress, as HashiCorp Vault reports it: k shares of the threshold so far.
public struct UnsealStatus: Sendable, Hashable {
  /// Shares needed.
  public var threshold: Int
  /// Shares made.
  public var shares: Int
  /// Distinct shares accepted since the last reset (0 once READY).
  public var progress: Int
  /// Holders whose shares were accepted so far.
  public var holders: [String]
  public var lockout: Lockout

  public init(threshold: Int, shares: Int, progress: Int, holders: [String], lockout: Lockout) {
    self.threshold = threshold
    self.shares = shares
    self.progress = progress
    self.holders = holders
    self.lockout = lockout
  }
}

/// What a device says about itself, to anyone on its socket.
public struct DeviceStatus: Sendable, Hashable {
  public var state: DeviceState
  public var name: String
  public var serial: String
  /// SHA-256 of the running custos-hsm executable.
  public var measurement: [UInt8]
  public var unseal: UnsealStatus
  /// The committed root state; only when READY.
  public var root: RootState?
  /// The lockout of the Crypto User credential.
  public var loginLockout: Lockout

  public init(
    state: DeviceState, name: String, serial: String, measurement: [UInt8], unseal: UnsealStatus, root: RootState?,
    loginLockout: Lockout
  ) {
    self.state = state
    self.name = name
    self.serial = serial
    self.measurement = measurement
    self.unseal = unseal
    self.root = root
    self.loginLockout = loginLockout
  }
}

/// A Crypto User session: the bearer token the device issued and when it lapses unless used.
/// The token never prints.
public struct VaultSession: Sendable, CustomStringConvertible {
  /// The token; goes in the `custos-session` metadata of each call.
  public let token: SecretBytes
  /// When the session ends unless a call moves it on.
  public let expiresAt: Date
  /// How far each call moves `expiresAt`.
  public let idleTimeout: Duration

  public init(token: SecretBytes, expiresAt: Date, idleTimeout: Duration) {
    self.token = token
    self.expiresAt = expiresAt
    self.idleTimeout = idleTimeout
  }

  public var description: String { "VaultSession(token redacted, expires \(expiresAt))" }
}

/// The Merkle proof a server supplies with a change: the leaf it touches and that leaf's
/// siblings from the leaf up, against the state (leaf count and root) the server believes current.
public struct ChangeProof: Sendable, Hashable {
  public var proof: MerkleProof
  public var leafCount: UInt64
  public var root: Hash256

  public init(proof: MerkleProof, leafCount: UInt64, root: Hash256) {
    self.proof = proof
    self.leafCount = leafCount
    self.root = root
  }
}

/// A create, update, remove or sign request: everything travels as the canonical bytes the
/// vault's own types define.
public struct VaultCall: Sendable, Hashable {
  /// The canonical request envelope (deterministic CBOR).
  public var envelope: [UInt8]
  /// The approvals of the envelope, canonical bytes each.
  public var approvals: [[UInt8]]
  /// The wallet's current data (empty for a create).
  public var walletData: [UInt8]
  /// The wallet's current sealed seed (empty for a create).
  public var sealedSeed: [UInt8]
  public var proof: ChangeProof?
  /// For a create: the id the new wallet is to get, the node of the proof's leaf (nil: the
  /// proof's leaf count, its current leaf).
  public var newWalletID: UInt64?

  public init(
    envelope: [UInt8], approvals: [[UInt8]], walletData: [UInt8] = [], sealedSeed: [UInt8] = [],
    proof: ChangeProof?, newWalletID: UInt64? = nil
  ) {
    self.envelope = envelope
    self.approvals = approvals
    self.walletData = walletData
    self.sealedSeed = sealedSeed
    self.proof = proof
    self.newWalletID = newWalletID
  }

  /// A create request with the vault's proof of the leaf it splits.
  public init(creating envelope: [UInt8], approvals: [[UInt8]], proof: CurrentLeafProof) {
    self.init(
      envelope: envelope, approvals: approvals,
      proof: ChangeProof(
        proof: MerkleProof(leaf: proof.leaf, siblings: proof.siblings), leafCount: proof.anchor.leafCount,
        root: proof.anchor.root),
      newWalletID: proof.node)
  }

  /// A create request's proof as the vault takes it; nil when the request has none.
  public var currentLeafProof: CurrentLeafProof? {
    proof.map {
      CurrentLeafProof(
        leaf: $0.proof.leaf, siblings: $0.proof.siblings, anchor: RootAnchor(leafCount: $0.leafCount, root: $0.root),
        node: newWalletID)
    }
  }
}

/// What a create, update, remove or sign produced.
public struct VaultOutcome: Sendable, Hashable {
  /// The wallet's new data; empty after a remove.
  public var walletData: [UInt8]
  /// The seed sealed for the new data; empty after a remove.
  public var sealedSeed: [UInt8]
  /// A raw signed transaction or a signature; empty when the operation has none.
  public var result: [UInt8]
  /// The change committed, for the server's tree (applied in `sequence` order).
  public var change: AppliedWalletChange?

  public init(walletData: [UInt8], sealedSeed: [UInt8], result: [UInt8], change: AppliedWalletChange?) {
    self.walletData = walletData
    self.sealedSeed = sealedSeed
    self.result = result
    self.change = change
  }
}

/// The address a public-key request also asks for.
public enum WalletAddressKind: String, Sendable, Hashable, CaseIterable {
  case ethereum
  case bitcoinP2WPKHMainnet = "bitcoin-p2wpkh-mainnet"
  case bitcoinP2WPKHTestnet = "bitcoin-p2wpkh-testnet"
  case bitcoinP2WPKHRegtest = "bitcoin-p2wpkh-regtest"
  case bitcoinP2TRMainnet = "bitcoin-p2tr-mainnet"
  case bitcoinP2TRTestnet = "bitcoin-p2tr-testnet"
  case bitcoinP2TRRegtest = "bitcoin-p2tr-regtest"
  case solana
}

/// Which key of which wallet to show.
public struct PublicKeyQuery: Sendable, Hashable {
  /// The wallet's data (canonical CBOR).
  public var walletData: [UInt8]
  public var sealedSeed: [UInt8]
  /// A derivation path, e.g. `m/44'/60'/0'/0/0`.
  public var path: String
  /// An address to derive too, if any.
  public var address: WalletAddressKind?

  public init(walletData: [UInt8], sealedSeed: [UInt8], path: String, address: WalletAddressKind? = nil) {
    self.walletData = walletData
    self.sealedSeed = sealedSeed
    self.path = path
    self.address = address
  }
}

/// A derived public key and, if asked, its address.
public struct PublicKeyInfo: Sendable, Hashable {
  /// The derivation scheme, e.g. `bip32-secp256k1`.
  public var scheme: String
  public var path: String
  /// 33-byte compressed secp256k1 key, or 32-byte Ed25519 key.
  public var publicKey: [UInt8]
  public var chainCode: [UInt8]
  public var fingerprint: [UInt8]
  /// xpub or tpub (secp256k1 only).
  public var extendedPublicKey: String?
  public var address: String?

  public init(
    scheme: String, path: String, publicKey: [UInt8], chainCode: [UInt8], fingerprint: [UInt8],
    extendedPublicKey: String?, address: String?
  ) {
    self.scheme = scheme
    self.path = path
    self.publicKey = publicKey
    self.chainCode = chainCode
    self.fingerprint = fingerprint
    self.extendedPublicKey = extendedPublicKey
    self.address = address
  }
}
