import COpenSSL
import Crypto
import Custody

/// The hash functions the vault's derivation and address code needs, one place each.
public enum Hashes {
  /// SHA-256 of `data`.
  public static func sha256(_ data: [UInt8]) -> [UInt8] {
    Array(SHA256.hash(data: data))
  }

  /// SHA-256 of SHA-256 of `data` (Base58Check checksums).
  public static func doubleSHA256(_ data: [UInt8]) -> [UInt8] {
    Array(SHA256.hash(data: Array(SHA256.hash(data: data))))
  }

  /// BIP-340 tagged hash: SHA-256(SHA-256(tag) || SHA-256(tag) || data).
  public static func taggedHash(_ tag: String, _ data: [UInt8]) -> [UInt8] {
    let tagHash = Array(SHA256.hash(data: Array(tag.utf8)))
    var hasher = SHA256()
    hasher.update(data: tagHash)
    hasher.update(data: tagHash)
    hasher.update(data: data)
    return Array(hasher.finalize())
  }

  /// RIPEMD-160 of `data`, through OpenSSL's EVP interface (the default provider of OpenSSL 3
  /// carries it since 3.0.7).
  public static func ripemd160(_ data: [UInt8]) -> [UInt8] {
    var digest = [UInt8](repeating: 0, count: 20)
    var length: UInt32 = 0
    let ok = data.withUnsafeBytes { input in
      digest.withUnsafeMutableBytes { output in
        EVP_Digest(
          input.baseAddress, input.count, output.baseAddress?.assumingMemoryBound(to: UInt8.self), &length,
          EVP_ripemd160(), nil)
      }
    }
    // Only a broken OpenSSL installation fails here; a wrong digest must never pass silently.
    precondition(ok == 1 && length == 20, "OpenSSL offers no RIPEMD-160 (EVP_Digest failed)")
    return digest
  }

  /// RIPEMD-160 of SHA-256 (Bitcoin's HASH160: key fingerprints, P2WPKH programs).
  public static func hash160(_ data: [UInt8]) -> [UInt8] {
    ripemd160(sha256(data))
  }

  /// HMAC-SHA512 of `data` under `key`, written straight into a zeroing buffer (BIP-32 and
  /// SLIP-10 derivation: the output is a private key and a chain code).
  public static func hmacSHA512(key: UnsafeRawBufferPointer, data: UnsafeRawBufferPointer) -> SecretBytes {
    var hmac = HMAC<SHA512>(key: SymmetricKey(data: key))
    hmac.update(data: data)
    let code = hmac.finalize()
    return code.withUnsafeBytes { SecretBytes.copying($0) }
  }
}

extension SecretBytes {
  /// A zeroing copy of `raw` by one memory copy (the generic `SecretBytes(_:)` walks a
  /// collection byte by byte, which costs microseconds on the derivation path).
  static func copying(_ raw: UnsafeRawBufferPointer) -> SecretBytes {
    SecretBytes(count: raw.count) { $0.copyMemory(from: raw) }
  }

  /// A zeroing copy of bytes `range` of this secret.
  func copying(_ range: Range<Int>) -> SecretBytes {
    withUnsafeBytes { SecretBytes.copying(UnsafeRawBufferPointer(rebasing: $0[range])) }
  }
}
