import CSecp256k1
import Custody

/// libsecp256k1 behind a Swift face: one context, randomised once (side-channel blinding), used
/// for every secp256k1 operation of one vault. Secret keys come in as raw buffers the caller
/// keeps in `SecretBytes`; every C structure that holds a secret is zeroed before it goes.
///
/// The context is only read after creation, which libsecp256k1 allows from several threads.
public final class Secp256k1: @unchecked Sendable {
  let context: OpaquePointer

  /// A context blinded with 32 bytes of `randomness` (the vault passes the token's RNG output).
  public init(randomness: [UInt8]) throws {
    guard randomness.count == 32 else {
      throw VaultError(.invalidArgument, "a secp256k1 context is randomised with 32 bytes, not \(randomness.count)")
    }
    guard let context = secp256k1_context_create(UInt32(SECP256K1_CONTEXT_NONE)) else {
      throw VaultError(.invalidArgument, "secp256k1_context_create failed")
    }
    guard secp256k1_context_randomize(context, randomness) == 1 else {
      secp256k1_context_destroy(context)
      throw VaultError(.invalidArgument, "secp256k1_context_randomize failed")
    }
    self.context = context
  }

  /// A context blinded with 32 bytes from the operating system's generator (tests, tools).
  public convenience init() throws {
    try self.init(randomness: SystemRandom.bytes(32))
  }

  deinit { secp256k1_context_destroy(context) }

  /// The group order n, big-endian.
  public static let order: [UInt8] = Hex.decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")!

  // MARK: Keys

  /// Whether `secret` is a valid secret key (32 bytes, 1 <= k < n).
  public func isValidSecretKey(_ secret: UnsafeRawBufferPointer) -> Bool {
    secret.count == 32 && secp256k1_ec_seckey_verify(context, bytes(secret)) == 1
  }

  /// The compressed (33-byte) public key of `secret`.
  public func publicKey(secret: UnsafeRawBufferPointer) throws -> [UInt8] {
    var point = secp256k1_pubkey()
    guard secret.count == 32, secp256k1_ec_pubkey_create(context, &point, bytes(secret)) == 1 else {
      throw VaultError(.invalidKey, "not a valid secp256k1 secret key")
    }
    return serialize(point, compressed: true)
  }

  /// The uncompressed (65-byte, 0x04 || X || Y) form of a public key in any SEC 1 encoding.
  public func uncompressed(_ publicKey: [UInt8]) throws -> [UInt8] {
    serialize(try parse(publicKey), compressed: false)
  }

  /// The compressed (33-byte) form of a public key in any SEC 1 encoding.
  public func compressed(_ publicKey: [UInt8]) throws -> [UInt8] {
    serialize(try parse(publicKey), compressed: true)
  }

  /// `secret + tweak mod n` in place; false (and `secret` unchanged) when the tweak is >= n or
  /// the sum is zero (BIP-32's invalid child).
  public func addTweak(_ tweak: UnsafeRawBufferPointer, toSecret secret: UnsafeMutableRawBufferPointer) -> Bool {
    guard tweak.count == 32, secret.count == 32 else { return false }
    var copy = [UInt8](secret)
    defer { SecretBytes.zero(&copy) }
    guard secp256k1_ec_seckey_tweak_add(context, &copy, bytes(tweak)) == 1 else { return false }
    secret.copyBytes(from: copy)
    return true
  }

  /// `point(tweak) + publicKey`, compressed; nil when the tweak is >= n or the sum is infinity.
  public func addTweak(_ tweak: UnsafeRawBufferPointer, toPublicKey publicKey: [UInt8]) throws -> [UInt8]? {
    var point = try parse(publicKey)
    guard tweak.count == 32, secp256k1_ec_pubkey_tweak_add(context, &point, bytes(tweak)) == 1 else { return nil }
    return serialize(point, compressed: true)
  }

  /// Parses a SEC 1 public key (33 or 65 bytes); refuses points off the curve.
  func parse(_ publicKey: [UInt8]) throws -> secp256k1_pubkey {
    var point = secp256k1_pubkey()
    guard secp256k1_ec_pubkey_parse(context, &point, publicKey, publicKey.count) == 1 else {
      throw VaultError(.invalidKey, "not a valid secp256k1 public key (\(publicKey.count) bytes)")
    }
    return point
  }

  func serialize(_ point: secp256k1_pubkey, compressed: Bool) -> [UInt8] {
    var point = point
    var output = [UInt8](repeating: 0, count: compressed ? 33 : 65)
    var length = output.count
    _ = secp256k1_ec_pubkey_serialize(
      context, &output, &length, &point,
      UInt32(compressed ? SECP256K1_EC_COMPRESSED : SECP256K1_EC_UNCOMPRESSED))
    return output
  }

  // MARK: ECDSA

  /// An ECDSA signature over a 32-byte digest with RFC 6979 nonces (libsecp256k1's default),
  /// always low-S: the 64-byte r || s and the recovery id (0...3).
  public func signECDSA(
    digest: [UInt8], secret: UnsafeRawBufferPointer
  ) throws -> (signature: [UInt8], recoveryID: UInt8) {
    guard digest.count == 32 else {
      throw VaultError(.unsupported, "ECDSA signs a 32-byte digest, not \(digest.count) bytes")
    }
    var signature = secp256k1_ecdsa_recoverable_signature()
    guard secret.count == 32,
      secp256k1_ecdsa_sign_recoverable(context, &signature, digest, bytes(secret), nil, nil) == 1
    else {
      throw VaultError(.invalidKey, "secp256k1_ecdsa_sign_recoverable refused the key")
    }
    var compact = [UInt8](repeating: 0, count: 64)
    var recoveryID: Int32 = 0
    _ = secp256k1_ecdsa_recoverable_signature_serialize_compact(context, &compact, &recoveryID, &signature)
    return (compact, UInt8(recoveryID))
  }

  /// Whether `signature` (64-byte r || s) is a valid low-S ECDSA signature of `digest` by
  /// `publicKey`.
  public func verifyECDSA(signature: [UInt8], digest: [UInt8], publicKey: [UInt8]) -> Bool {
    guard signature.count == 64, digest.count == 32, var point = try? parse(publicKey) else { return false }
    var parsed = secp256k1_ecdsa_signature()
    guard secp256k1_ecdsa_signature_parse_compact(context, &parsed, signature) == 1 else { return false }
    return secp256k1_ecdsa_verify(context, &parsed, digest, &point) == 1
  }

  /// Half the group order, big-endian: an ECDSA S above it is "high" (BIP-62, EIP-2).
  static let halfOrder: [UInt8] = Hex.decode("7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0")!

  /// Whether the S half of a 64-byte r || s signature is at most n/2.
  public static func isLowS(_ signature: [UInt8]) -> Bool {
    signature.count == 64 && !halfOrder.lexicographicallyPrecedes(signature[32..<64])
  }

  /// The compressed public key that `signature` with `recoveryID` recovers for `digest`.
  public func recoverECDSA(signature: [UInt8], recoveryID: UInt8, digest: [UInt8]) -> [UInt8]? {
    guard signature.count == 64, digest.count == 32, recoveryID < 4 else { return nil }
    var parsed = secp256k1_ecdsa_recoverable_signature()
    guard
      secp256k1_ecdsa_recoverable_signature_parse_compact(context, &parsed, signature, Int32(recoveryID)) == 1
    else { return nil }
    var point = secp256k1_pubkey()
    guard secp256k1_ecdsa_recover(context, &point, &parsed, digest) == 1 else { return nil }
    return serialize(point, compressed: true)
  }

  // MARK: BIP-340 Schnorr and BIP-341 tweaks

  /// The 32-byte x-only public key of `secret`.
  public func xOnlyPublicKey(secret: UnsafeRawBufferPointer) throws -> [UInt8] {
    var keypair = try makeKeypair(secret)
    defer { zeroKeypair(&keypair) }
    return xOnly(of: &keypair)
  }

  /// The BIP-86 tweak of an x-only internal key: t = hash_TapTweak(P) (no script tree).
  public static func taprootTweak(internalKey: [UInt8]) -> [UInt8] {
    Hashes.taggedHash("TapTweak", internalKey)
  }

  /// The taproot output key Q = P + t*G of an x-only internal key with no script tree (BIP-86).
  public func taprootOutputKey(internalKey: [UInt8]) throws -> [UInt8] {
    var point = secp256k1_xonly_pubkey()
    guard internalKey.count == 32, secp256k1_xonly_pubkey_parse(context, &point, internalKey) == 1 else {
      throw VaultError(.invalidKey, "not a valid x-only public key")
    }
    var tweaked = secp256k1_pubkey()
    let tweak = Secp256k1.taprootTweak(internalKey: internalKey)
    guard secp256k1_xonly_pubkey_tweak_add(context, &tweaked, &point, tweak) == 1 else {
      throw VaultError(.invalidKey, "the taproot tweak gives an invalid output key")
    }
    var output = secp256k1_xonly_pubkey()
    _ = secp256k1_xonly_pubkey_from_pubkey(context, &output, nil, &tweaked)
    var serialized = [UInt8](repeating: 0, count: 32)
    _ = secp256k1_xonly_pubkey_serialize(context, &serialized, &output)
    return serialized
  }

  /// A BIP-340 signature of `message` (any length; Bitcoin signs 32-byte sighashes) with the
  /// 32 bytes of auxiliary randomness `auxiliary`. With `taprootTweak` the key is first tweaked
  /// as BIP-86 says (key-path spending of a P2TR output with no script tree). Returns the
  /// signature and the x-only key it verifies under.
  public func signSchnorr(
    message: [UInt8], secret: UnsafeRawBufferPointer, auxiliary: [UInt8], taprootTweak: Bool = false
  ) throws -> (signature: [UInt8], publicKey: [UInt8]) {
    guard auxiliary.count == 32 else {
      throw VaultError(.invalidArgument, "BIP-340 auxiliary randomness is 32 bytes, not \(auxiliary.count)")
    }
    var keypair = try makeKeypair(secret)
    defer { zeroKeypair(&keypair) }
    if taprootTweak {
      let tweak = Secp256k1.taprootTweak(internalKey: xOnly(of: &keypair))
      guard secp256k1_keypair_xonly_tweak_add(context, &keypair, tweak) == 1 else {
        throw VaultError(.invalidKey, "the taproot tweak gives an invalid key")
      }
    }
    var signature = [UInt8](repeating: 0, count: 64)
    var auxiliaryCopy = auxiliary
    let signed = auxiliaryCopy.withUnsafeMutableBytes { aux in
      if message.count == 32 {
        return secp256k1_schnorrsig_sign32(
          context, &signature, message, &keypair, aux.baseAddress!.assumingMemoryBound(to: UInt8.self))
      }
      var parameters = secp256k1_schnorrsig_extraparams(
        magic: (0xDA, 0x6F, 0xB3, 0x8C), noncefp: nil, ndata: aux.baseAddress)
      return secp256k1_schnorrsig_sign_custom(context, &signature, message, message.count, &keypair, &parameters)
    }
    guard signed == 1 else { throw VaultError(.invalidKey, "secp256k1_schnorrsig_sign_custom refused the key") }
    return (signature, xOnly(of: &keypair))
  }

  /// Whether `signature` is a valid BIP-340 signature of `message` under the x-only key.
  public func verifySchnorr(signature: [UInt8], message: [UInt8], publicKey: [UInt8]) -> Bool {
    guard signature.count == 64, publicKey.count == 32 else { return false }
    var point = secp256k1_xonly_pubkey()
    guard secp256k1_xonly_pubkey_parse(context, &point, publicKey) == 1 else { return false }
    return secp256k1_schnorrsig_verify(context, signature, message, message.count, &point) == 1
  }

  private func makeKeypair(_ secret: UnsafeRawBufferPointer) throws -> secp256k1_keypair {
    var keypair = secp256k1_keypair()
    guard secret.count == 32, secp256k1_keypair_create(context, &keypair, bytes(secret)) == 1 else {
      zeroKeypair(&keypair)
      throw VaultError(.invalidKey, "not a valid secp256k1 secret key")
    }
    return keypair
  }

  private func xOnly(of keypair: inout secp256k1_keypair) -> [UInt8] {
    var point = secp256k1_xonly_pubkey()
    _ = secp256k1_keypair_xonly_pub(context, &point, nil, &keypair)
    var serialized = [UInt8](repeating: 0, count: 32)
    _ = secp256k1_xonly_pubkey_serialize(context, &serialized, &point)
    return serialized
  }

  private func zeroKeypair(_ keypair: inout secp256k1_keypair) {
    withUnsafeMutableBytes(of: &keypair) { SecretBytes.zero($0) }
  }

  private func bytes(_ buffer: UnsafeRawBufferPointer) -> UnsafePointer<UInt8> {
    buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
  }
}
