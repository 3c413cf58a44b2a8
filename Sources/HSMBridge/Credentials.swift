import Custody
import Foundation

/// What the device keeps of the Crypto User credential: an Argon2id hash of it, never the
/// credential itself. Servers present the credential on the device socket; the device
/// recomputes the hash and compares in constant time.
public struct CredentialVerifier: Codable, Hashable, Sendable {
  /// How the credential was stretched (Argon2id, t=3, m=64 MiB, p=4, a random salt).
  public var kdf: Argon2.Record
  /// Hex of the 32-byte Argon2id output.
  public var hash: String

  /// The verifier of `credential` with a fresh `salt` (16 bytes from the token's RNG).
  public static func make(
    for credential: SecretBytes, salt: [UInt8], parameters: Argon2.Parameters = .custos
  ) throws -> CredentialVerifier {
    let kdf = Argon2.Record(salt: salt, parameters: parameters)
    return CredentialVerifier(kdf: kdf, hash: try kdf.derive(credential).withUnsafeBytes { Hex.encode($0) })
  }

  /// Whether `credential` is the one this verifier was made for.
  public func verify(_ credential: SecretBytes) throws -> Bool {
    guard let expected = Hex.decode(hash) else {
      throw HSMBridgeError(.enrolmentInvalid, "the Crypto User verifier's hash is not hex")
    }
    return try kdf.derive(credential, length: expected.count).constantTimeEquals(SecretBytes(expected))
  }
}

/// The Crypto User credential: what a custody server presents to open a vault session.
public enum CryptoUserCredential {
  /// The prefix of every credential's text, so that one is recognisable in a secrets store.
  public static let prefix = "custos-cu1-"

  /// A credential's text from 32 random bytes: `custos-cu1-` and 64 hex digits.
  public static func make(fromRandom bytes: SecretBytes) throws -> SecretBytes {
    guard bytes.count == 32 else {
      throw HSMBridgeError(.invalidArgument, "a Crypto User credential needs 32 random bytes, not \(bytes.count)")
    }
    return bytes.hexEncoded(prefix: prefix)
  }
}
