import Crypto
import Custody

/// The signature schemes the vault produces.
public enum SignatureAlgorithm: String, Sendable, Hashable, CaseIterable {
  /// ECDSA over secp256k1 of a 32-byte digest: RFC 6979 nonce, low S, recovery id (Ethereum,
  /// Bitcoin legacy and segwit v0).
  case ecdsaSecp256k1 = "ecdsa-secp256k1"
  /// BIP-340 Schnorr with the derived key as it is.
  case schnorrBIP340 = "schnorr-bip340"
  /// BIP-340 Schnorr with the key tweaked as BIP-86 says (taproot key-path spend of the P2TR
  /// address the vault gives for the same path).
  case schnorrTaproot = "schnorr-taproot"
  /// Ed25519 (RFC 8032, pure) of the message (Solana).
  case ed25519

  public var curve: Curve { self == .ed25519 ? .ed25519 : .secp256k1 }
}

/// A signature that left the vault, with what a chain needs to check it. Public data only.
public struct VaultSignature: Hashable, Sendable {
  public let algorithm: SignatureAlgorithm
  /// ECDSA: r || s (64 bytes, low S). Schnorr: the 64-byte BIP-340 signature. Ed25519: 64 bytes.
  public let signature: [UInt8]
  /// ECDSA only: the recovery id (0...3); Ethereum's v is 27 + it (or EIP-155's form).
  public let recoveryID: UInt8?
  /// The key it verifies under: compressed secp256k1 (ECDSA), x-only (Schnorr; the tweaked
  /// output key for taproot), or the 32-byte Ed25519 key.
  public let publicKey: [UInt8]

  /// ECDSA only: the signature in DER (Bitcoin's script signatures carry it).
  public var der: [UInt8]? {
    guard algorithm == .ecdsaSecp256k1 else { return nil }
    func integer(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
      var value = Array(bytes.drop { $0 == 0 })
      if value.isEmpty { value = [0] }
      if value[0] & 0x80 != 0 { value.insert(0, at: 0) }
      return [0x02, UInt8(value.count)] + value
    }
    let body = integer(signature[0..<32]) + integer(signature[32..<64])
    return [0x30, UInt8(body.count)] + body
  }
}

/// Signs with a derived private key and checks every signature against the derived public key
/// before returning it: a signature that does not verify is an error, never an output.
struct Signer {
  let secp: Secp256k1

  /// Signs `message` with `privateKey` whose public key is `publicKey` (33-byte compressed for
  /// secp256k1, 32 bytes for Ed25519). `auxiliary` is BIP-340's 32 random bytes.
  func sign(
    _ message: [UInt8], algorithm: SignatureAlgorithm, privateKey: SecretBytes, publicKey: [UInt8],
    auxiliary: [UInt8]
  ) throws -> VaultSignature {
    let signature = try produce(
      message, algorithm: algorithm, privateKey: privateKey, publicKey: publicKey, auxiliary: auxiliary)
    try check(signature, message: message, derivedPublicKey: publicKey)
    return signature
  }

  func produce(
    _ message: [UInt8], algorithm: SignatureAlgorithm, privateKey: SecretBytes, publicKey: [UInt8],
    auxiliary: [UInt8]
  ) throws -> VaultSignature {
    switch algorithm {
    case .ecdsaSecp256k1:
      let (signature, recoveryID) = try privateKey.withUnsafeBytes { try secp.signECDSA(digest: message, secret: $0) }
      return VaultSignature(algorithm: algorithm, signature: signature, recoveryID: recoveryID, publicKey: publicKey)
    case .schnorrBIP340, .schnorrTaproot:
      let (signature, publicKey) = try privateKey.withUnsafeBytes {
        try secp.signSchnorr(
          message: message, secret: $0, auxiliary: auxiliary, taprootTweak: algorithm == .schnorrTaproot)
      }
      return VaultSignature(algorithm: algorithm, signature: signature, recoveryID: nil, publicKey: publicKey)
    case .ed25519:
      let (signature, publicKey) = try privateKey.withUnsafeBytes { raw in
        let key = try Curve25519.Signing.PrivateKey(rawRepresentation: raw)
        return (Array(try key.signature(for: message)), Array(key.publicKey.rawRepresentation))
      }
      return VaultSignature(algorithm: algorithm, signature: signature, recoveryID: nil, publicKey: publicKey)
    }
  }

  /// Verifies `signature` against the public key derived for the path (not the one the
  /// signature claims): ECDSA by recovering the key from the signature and its recovery id
  /// (a recovered key equal to the derived one proves the signature verifies under it, and
  /// proves the recovery id a chain will use; one curve operation where verify + recover took
  /// two) and by checking S is low; Schnorr under the derived x-only key (tweaked for
  /// taproot); Ed25519 under the derived key.
  func check(_ signature: VaultSignature, message: [UInt8], derivedPublicKey: [UInt8]) throws {
    let valid: Bool
    switch signature.algorithm {
    case .ecdsaSecp256k1:
      valid =
        signature.publicKey == derivedPublicKey && Secp256k1.isLowS(signature.signature)
        && signature.recoveryID.flatMap {
          secp.recoverECDSA(signature: signature.signature, recoveryID: $0, digest: message)
        } == derivedPublicKey
    case .schnorrBIP340:
      let xOnly = Array(derivedPublicKey.dropFirst())
      valid =
        signature.publicKey == xOnly
        && secp.verifySchnorr(signature: signature.signature, message: message, publicKey: xOnly)
    case .schnorrTaproot:
      let outputKey = try secp.taprootOutputKey(internalKey: Array(derivedPublicKey.dropFirst()))
      valid =
        signature.publicKey == outputKey
        && secp.verifySchnorr(signature: signature.signature, message: message, publicKey: outputKey)
    case .ed25519:
      let key = try Curve25519.Signing.PublicKey(rawRepresentation: derivedPublicKey)
      valid = signature.publicKey == derivedPublicKey && key.isValidSignature(signature.signature, for: message)
    }
    guard valid else {
      throw VaultError(
        .signatureCheckFailed,
        "the \(signature.algorithm.rawValue) signature did not verify against the derived public key; it was discarded")
    }
  }
}
