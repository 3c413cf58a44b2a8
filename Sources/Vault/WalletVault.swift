import Custody
import HSMBridge
import Logging

/// Where a wallet key is: the sealed seed, the wallet hash it was sealed for, the derivation
/// scheme of the wallet, and the path. Public data only; the server sends this.
public struct WalletKeyLocation: Hashable, Sendable {
  public let sealedSeed: SealedSeed
  public let walletHash: [UInt8]
  public let scheme: DerivationScheme
  public let path: DerivationPath

  public init(sealedSeed: SealedSeed, walletHash: [UInt8], scheme: DerivationScheme, path: DerivationPath) {
    self.sealedSeed = sealedSeed
    self.walletHash = walletHash
    self.scheme = scheme
    self.path = path
  }
}

/// The public side of a derived key, for export.
public struct WalletPublicKey: Hashable, Sendable {
  public let scheme: DerivationScheme
  public let path: DerivationPath
  /// 33-byte compressed secp256k1 key, or 32-byte Ed25519 key.
  public let publicKey: [UInt8]
  /// The key's chain code (lets a holder of an xpub derive normal children).
  public let chainCode: [UInt8]
  /// The first four bytes of HASH160 of the key (SLIP-10: of 0x00 || key for Ed25519).
  public let fingerprint: [UInt8]
  /// The extended public key (secp256k1 only).
  public let extendedPublicKey: ExtendedPublicKey?
}

/// The address kinds the vault derives.
public enum AddressKind: Sendable, Hashable {
  case ethereum
  case bitcoinP2WPKH(BitcoinNetwork)
  case bitcoinP2TR(BitcoinNetwork)
  case solana

  var curve: Curve { self == .solana ? .ed25519 : .secp256k1 }
}

/// The vault's key duties inside the HSM: wallet seeds born in the token and sealed under a
/// per-wallet key; BIP-32/SLIP-10 derivation; signatures checked before they leave; addresses.
///
/// Seeds and private keys exist only inside calls, in zeroing buffers. Everything a method
/// returns is public: sealed seeds, public keys, addresses, signatures.
public final class WalletVault: Sendable {
  let sealer: SeedSealer
  let derivation: KeyDerivation
  let signer: Signer
  let session: Session
  let logger: Logger

  /// A vault over `session`, a logged-in user session of the custody partition holding
  /// `custos.master`. Its secp256k1 context is randomised once from the token's generator.
  public init(session: Session, logger: Logger) throws {
    let masterKey = try SeedSealer.findMasterKey(in: session)
    let randomness: [UInt8]
    do {
      randomness = try session.generateRandom(32)
    } catch let error as PKCS11Error {
      throw VaultError(.tokenFailure, "the token's random generator failed", pkcs11: error)
    }
    let secp = try Secp256k1(randomness: randomness)
    self.session = session
    self.sealer = SeedSealer(session: session, masterKey: masterKey, logger: logger)
    self.derivation = KeyDerivation(secp: secp)
    self.signer = Signer(secp: secp)
    self.logger = logger
  }

  /// The vault's secp256k1 context (for checking what it returns).
  public var secp: Secp256k1 { derivation.secp }

  /// Creates a wallet's seed (`seedLength` bytes from the token's generator) and returns it
  /// sealed for `walletHash`. The seed itself never leaves.
  public func createWallet(walletHash: [UInt8], seedLength: Int = 32) throws -> SealedSeed {
    let seed = try sealer.generateSeed(length: seedLength)
    let sealed = try sealer.seal(seed, walletHash: walletHash)
    logger.info(
      "wallet seed created and sealed",
      metadata: ["wallet.hash": "\(Hex.encode(walletHash.prefix(8)))", "wallet.seed-bytes": "\(seedLength)"])
    return sealed
  }

  /// Re-seals a wallet's seed after its wallet data changed from `oldHash` to `newHash`.
  public func reseal(_ sealed: SealedSeed, from oldHash: [UInt8], to newHash: [UInt8]) throws -> SealedSeed {
    try sealer.reseal(sealed, from: oldHash, to: newHash)
  }

  /// The public key (and for secp256k1 the xpub) at a location.
  public func publicKey(
    at location: WalletKeyLocation, network: ExtendedKeyNetwork = .mainnet
  ) throws
    -> WalletPublicKey
  {
    let seed = try sealer.open(location.sealedSeed, walletHash: location.walletHash)
    let key = try derivation.derive(seed: seed, scheme: location.scheme, path: location.path)
    let publicKey = try derivation.publicKey(of: key)
    return WalletPublicKey(
      scheme: location.scheme, path: location.path, publicKey: publicKey,
      chainCode: key.chainCode.withUnsafeBytes { Array($0) },
      fingerprint: derivation.fingerprint(ofPublicKey: publicKey, curve: location.scheme.curve),
      extendedPublicKey: location.scheme.curve == .secp256k1
        ? try derivation.extendedPublicKey(of: key, network: network) : nil)
  }

  /// The address of `kind` for the key at a location.
  public func address(_ kind: AddressKind, at location: WalletKeyLocation) throws -> String {
    guard kind.curve == location.scheme.curve else {
      throw VaultError(
        .unsupported,
        "a \(kind) address needs a \(kind.curve.rawValue) key; this wallet derives \(location.scheme.rawValue)")
    }
    let seed = try sealer.open(location.sealedSeed, walletHash: location.walletHash)
    let (_, publicKey) = try derivation.signingKey(seed: seed, scheme: location.scheme, path: location.path)
    switch kind {
    case .ethereum: return try ChainAddress.ethereum(publicKey: publicKey, secp: secp)
    case .bitcoinP2WPKH(let network):
      return try ChainAddress.bitcoinP2WPKH(publicKey: publicKey, network: network, secp: secp)
    case .bitcoinP2TR(let network):
      return try ChainAddress.bitcoinP2TR(publicKey: publicKey, network: network, secp: secp)
    case .solana: return try ChainAddress.solana(publicKey: publicKey)
    }
  }

  /// Signs `message` with the key at a location: for ECDSA a 32-byte digest the chain defines
  /// (Keccak-256 of an Ethereum transaction, a Bitcoin sighash), for Schnorr the message
  /// (a 32-byte sighash for Bitcoin), for Ed25519 the message itself. The signature is verified
  /// against the derived public key before it is returned.
  public func sign(
    _ message: [UInt8], algorithm: SignatureAlgorithm, at location: WalletKeyLocation
  ) throws
    -> VaultSignature
  {
    guard algorithm.curve == location.scheme.curve else {
      throw VaultError(
        .unsupported,
        "\(algorithm.rawValue) needs a \(algorithm.curve.rawValue) key; this wallet derives \(location.scheme.rawValue)"
      )
    }
    if algorithm == .ecdsaSecp256k1 && message.count != 32 {
      throw VaultError(.unsupported, "ECDSA signs a 32-byte digest, not \(message.count) bytes")
    }
    let seed = try sealer.open(location.sealedSeed, walletHash: location.walletHash)
    let (privateKey, publicKey) = try derivation.signingKey(seed: seed, scheme: location.scheme, path: location.path)
    let auxiliary = algorithm == .schnorrBIP340 || algorithm == .schnorrTaproot ? try randomAuxiliary() : []
    let signature = try signer.sign(
      message, algorithm: algorithm, privateKey: privateKey, publicKey: publicKey, auxiliary: auxiliary)
    logger.debug(
      "signed",
      metadata: [
        "wallet.hash": "\(Hex.encode(location.walletHash.prefix(8)))", "vault.algorithm": "\(algorithm.rawValue)",
      ])
    return signature
  }

  private func randomAuxiliary() throws -> [UInt8] {
    do {
      return try session.generateRandom(32)
    } catch let error as PKCS11Error {
      throw VaultError(.tokenFailure, "the token's random generator failed", pkcs11: error)
    }
  }
}
