import Custody

/// A wallet seed encrypted inside the token: the only form of a seed that leaves the vault
/// (the server stores it).
///
/// Format, version 1 (all lengths in bytes):
///
/// ```
/// offset  size     field
/// 0       4        magic "CSSD" (0x43 0x53 0x53 0x44)
/// 4       1        format version, 0x01
/// 5       12       AES-GCM nonce (from the token's RNG)
/// 17      L + 16   AES-256-GCM ciphertext of the seed (L = 32..64) followed by the 128-bit tag
/// ```
///
/// The key is the wallet sealing key, `C_DeriveKey(CKM_AES_ECB_ENCRYPT_DATA, custos.master,
/// walletHash)`; the associated data is `SealedSeed.domainTag || walletHash`, so a blob opens
/// only for the wallet data it was sealed for. Total size 33 + L (65 to 97 bytes).
public struct SealedSeed: Hashable, Sendable, CustomStringConvertible {
  /// The blob's bytes, as stored by the server.
  public let bytes: [UInt8]

  public static let magic: [UInt8] = Array("CSSD".utf8)
  public static let version: UInt8 = 1
  public static let nonceLength = 12
  public static let tagLength = 16
  public static let headerLength = 5
  /// Seeds the vault seals: 32 to 64 bytes (BIP-32 allows 16..64; the vault generates at least 256 bits).
  public static let seedLengths = 32...64
  /// The associated-data prefix; it names the format version.
  public static let domainTag: [UInt8] = Array("custos/sealed-seed/v1".utf8)

  /// Checks the layout of `bytes` (magic, version, lengths) without opening it.
  public init(bytes: [UInt8]) throws {
    guard bytes.count >= SealedSeed.headerLength, Array(bytes.prefix(4)) == SealedSeed.magic else {
      throw VaultError(.sealedSeedMalformed, "not a Custos sealed seed (the blob does not start with 'CSSD')")
    }
    guard bytes[4] == SealedSeed.version else {
      throw VaultError(
        .sealedSeedMalformed, "sealed seed format version \(bytes[4]) is not supported (this vault reads version 1)")
    }
    let seedLength = bytes.count - SealedSeed.headerLength - SealedSeed.nonceLength - SealedSeed.tagLength
    guard SealedSeed.seedLengths.contains(seedLength) else {
      throw VaultError(
        .sealedSeedMalformed,
        "a version 1 sealed seed is 65 to 97 bytes; this one is \(bytes.count) (truncated or padded)")
    }
    self.bytes = bytes
  }

  init(nonce: [UInt8], ciphertext: [UInt8]) {
    bytes = SealedSeed.magic + [SealedSeed.version] + nonce + ciphertext
  }

  public var nonce: [UInt8] {
    Array(bytes[SealedSeed.headerLength..<(SealedSeed.headerLength + SealedSeed.nonceLength)])
  }
  /// Ciphertext and tag.
  public var ciphertext: [UInt8] { Array(bytes[(SealedSeed.headerLength + SealedSeed.nonceLength)...]) }
  /// The length of the seed inside.
  public var seedLength: Int { bytes.count - SealedSeed.headerLength - SealedSeed.nonceLength - SealedSeed.tagLength }

  /// The associated data for a wallet hash.
  static func associatedData(walletHash: [UInt8]) -> [UInt8] { domainTag + walletHash }

  public var description: String { "SealedSeed(v1, \(seedLength)-byte seed, \(bytes.count) bytes)" }
}
