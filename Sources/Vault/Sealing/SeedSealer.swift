import Custody
import HSMBridge
import Logging

/// Seals and opens wallet seeds inside the token: every wallet has its own sealing key,
/// derived from `custos.master` and the wallet hash as a sensitive, non-extractable,
/// encrypt/decrypt-only session key that is destroyed after each use, even on error.
public struct SeedSealer: Sendable {
  /// The label of the master key in the custody partition.
  public static let masterKeyLabel = "custos.master"

  let session: Session
  let masterKey: ObjectHandle
  let logger: Logger

  /// A sealer over `session` (a logged-in user session of the custody partition) and its
  /// master key.
  public init(session: Session, masterKey: ObjectHandle, logger: Logger) {
    self.session = session
    self.masterKey = masterKey
    self.logger = logger
  }

  /// The `custos.master` key of the session's token; refuses a missing, doubled or unlocked
  /// key (it must be sensitive, able to derive, and unable to encrypt or sign by itself).
  public static func findMasterKey(in session: Session) throws -> ObjectHandle {
    let found: [ObjectHandle]
    do {
      found = try session.findObjects([.class(.secretKey), .label(masterKeyLabel)])
    } catch let error as PKCS11Error {
      throw VaultError(.tokenFailure, "cannot search the token for \(masterKeyLabel)", pkcs11: error)
    }
    guard found.count == 1, let key = found.first else {
      throw VaultError(
        .masterKeyMissing,
        found.isEmpty
          ? "the token holds no \(masterKeyLabel) key (run the key ceremony first)"
          : "the token holds \(found.count) keys labelled \(masterKeyLabel); exactly one is allowed")
    }
    let flags = try session.attributes([.sensitive, .derive, .encrypt, .decrypt, .sign, .keyType], of: key)
    guard flags[0] == .value(.sensitive(true)), flags[1] == .value(.derive(true)),
      flags[2] == .value(.encrypt(false)), flags[3] == .value(.decrypt(false)), flags[4] == .value(.sign(false)),
      flags[5] == .value(.keyType(.aes))
    else {
      throw VaultError(
        .masterKeyMissing,
        "\(masterKeyLabel) does not have the policy attributes (AES, sensitive, derive only)")
    }
    return key
  }

  /// Generates `custos.master` in the session's token from its row of the attribute policy table
  /// (HSMBridge's `AttributePolicy`, DESIGN.md section 4). The key ceremony does this on a real
  /// device; tests and benchmarks call it on throw-away custody partitions.
  public static func generateMasterKey(in session: Session) throws -> ObjectHandle {
    do {
      return try AttributePolicy.generateKey(masterKeyLabel, partition: "custody", session: session)[0].handle
    } catch let error as PKCS11Error {
      throw VaultError(.tokenFailure, "cannot generate \(masterKeyLabel)", pkcs11: error)
    }
  }

  /// A seed of `length` bytes (32..64) from the token's generator, straight into a zeroing buffer.
  public func generateSeed(length: Int) throws -> SecretBytes {
    guard SealedSeed.seedLengths.contains(length) else {
      throw VaultError(.invalidArgument, "a wallet seed is 32 to 64 bytes, not \(length)")
    }
    do {
      return try SecretBytes(count: length) { try session.generateRandom(into: $0) }
    } catch let error as PKCS11Error {
      throw VaultError(.tokenFailure, "the token's random generator failed", pkcs11: error)
    }
  }

  /// Seals `seed` for the wallet whose hash is `walletHash`.
  public func seal(_ seed: SecretBytes, walletHash: [UInt8]) throws -> SealedSeed {
    try checkWalletHash(walletHash)
    guard SealedSeed.seedLengths.contains(seed.count) else {
      throw VaultError(.invalidArgument, "a wallet seed is 32 to 64 bytes, not \(seed.count)")
    }
    return try withSealingKey(walletHash) { key in
      let nonce = try session.generateRandom(SealedSeed.nonceLength)
      let ciphertext = try session.encrypt(
        .aesGCM(iv: nonce, aad: SealedSeed.associatedData(walletHash: walletHash), tagBits: 128), key: key,
        secret: seed)
      return SealedSeed(nonce: nonce, ciphertext: ciphertext)
    }
  }

  /// Opens `sealed` for the wallet whose hash is `walletHash`. A blob sealed for another
  /// wallet, for other wallet data, or with any byte changed fails with
  /// `sealedSeedDoesNotOpen`, keeping the token's report.
  public func open(_ sealed: SealedSeed, walletHash: [UInt8]) throws -> SecretBytes {
    try checkWalletHash(walletHash)
    return try withSealingKey(walletHash) { key in
      do {
        return try session.decryptSecret(
          .aesGCM(iv: sealed.nonce, aad: SealedSeed.associatedData(walletHash: walletHash), tagBits: 128),
          key: key, sealed.ciphertext)
      } catch let error as PKCS11Error
        where error.code == .generalError || error.code == .encryptedDataInvalid
      {
        // SoftHSM 2.6.1 reports an AES-GCM tag mismatch as CKR_GENERAL_ERROR.
        throw VaultError(
          .sealedSeedDoesNotOpen,
          "the sealed seed does not open under wallet hash \(Hex.encode(walletHash.prefix(8)))...: it was sealed for other wallet data or has been altered",
          pkcs11: error)
      }
    }
  }

  /// Re-seals a seed for new wallet data: opens under `oldHash`, seals under `newHash`.
  public func reseal(_ sealed: SealedSeed, from oldHash: [UInt8], to newHash: [UInt8]) throws -> SealedSeed {
    try checkWalletHash(newHash)
    let seed = try open(sealed, walletHash: oldHash)
    return try seal(seed, walletHash: newHash)
  }

  /// Runs `body` with the wallet's sealing key, destroying the key afterwards whatever happens.
  func withSealingKey<R>(_ walletHash: [UInt8], _ body: (ObjectHandle) throws -> R) throws -> R {
    let key: ObjectHandle
    do {
      key = try session.deriveKey(
        .aesECBEncryptData(walletHash), baseKey: masterKey,
        [
          .class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .private(true), .sensitive(true),
          .extractable(false), .encrypt(true), .decrypt(true), .derive(false), .sign(false), .verify(false),
          .wrap(false), .unwrap(false), .modifiable(false),
        ])
    } catch let error as PKCS11Error {
      throw VaultError(.tokenFailure, "cannot derive the wallet sealing key", pkcs11: error)
    }
    defer {
      do { try session.destroyObject(key) } catch {
        logger.error("could not destroy a wallet sealing key", metadata: ["vault.error": "\(error)"])
      }
    }
    do {
      return try body(key)
    } catch let error as PKCS11Error {
      throw VaultError(.tokenFailure, "the token failed while sealing or opening a seed", pkcs11: error)
    }
  }

  func checkWalletHash(_ walletHash: [UInt8]) throws {
    guard walletHash.count == 32 else {
      throw VaultError(.invalidArgument, "a wallet hash is 32 bytes (SHA-256), not \(walletHash.count)")
    }
  }
}
