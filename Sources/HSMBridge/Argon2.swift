internal import CArgon2
import Custody

/// Argon2 (RFC 9106) through Debian's reference implementation, libargon2.
///
/// Custos stretches people's passwords with it: an unseal key holder's password becomes the
/// AES-256-GCM key of their share file, and the Crypto User credential is stored only as an
/// Argon2id verifier. Outputs that are keys come back in `SecretBytes`.
public enum Argon2 {
  /// The three variants of RFC 9106 section 3.
  public enum Variant: String, Sendable, Codable, CaseIterable {
    case argon2d, argon2i, argon2id

    var raw: argon2_type {
      switch self {
      case .argon2d: Argon2_d
      case .argon2i: Argon2_i
      case .argon2id: Argon2_id
      }
    }
  }

  /// Cost parameters: passes `t`, memory `m` in KiB, lanes (and threads) `p`.
  public struct Parameters: Hashable, Sendable, Codable, CustomStringConvertible {
    public var t: UInt32
    public var m: UInt32
    public var p: UInt32

    public init(t: UInt32, m: UInt32, p: UInt32) {
      self.t = t
      self.m = m
      self.p = p
    }

    /// What Custos uses for every password it stretches: t=3, m=64 MiB, p=4 (RFC 9106's
    /// second recommended option). Tests use these too; only the RFC vectors use others.
    public static let custos = Parameters(t: 3, m: 64 * 1024, p: 4)

    public var description: String { "t=\(t) m=\(m)KiB p=\(p)" }
  }

  /// `length` bytes of Argon2 over `password` and `salt`, version 0x13.
  ///
  /// `secret` and `associatedData` are RFC 9106's optional K and X inputs.
  public static func hash(
    _ variant: Variant = .argon2id, password: SecretBytes, salt: [UInt8], parameters: Parameters,
    secret: SecretBytes? = nil, associatedData: [UInt8] = [], length: Int = 32
  ) throws -> SecretBytes {
    guard (4...1024).contains(length) else {
      throw HSMBridgeError(.invalidArgument, "Argon2 output of \(length) bytes: allowed are 4 to 1024")
    }
    guard salt.count >= 8 else {
      throw HSMBridgeError(.invalidArgument, "Argon2 salt of \(salt.count) bytes: at least 8 are required")
    }
    var saltCopy = salt
    var adCopy = associatedData
    let secretBytes = secret ?? SecretBytes([])
    var status: Int32 = 0
    let output = try SecretBytes(count: length) { out in
      try password.withUnsafeBytes { pwd in
        try secretBytes.withUnsafeBytes { key in
          try saltCopy.withUnsafeMutableBufferPointer { saltBuffer in
            try adCopy.withUnsafeMutableBufferPointer { adBuffer in
              var context = argon2_context(
                out: out.baseAddress!.assumingMemoryBound(to: UInt8.self), outlen: UInt32(length),
                pwd: mutableBytes(pwd), pwdlen: UInt32(pwd.count),
                salt: saltBuffer.baseAddress, saltlen: UInt32(saltBuffer.count),
                secret: mutableBytes(key), secretlen: UInt32(key.count),
                ad: adBuffer.count == 0 ? nil : adBuffer.baseAddress, adlen: UInt32(adBuffer.count),
                t_cost: parameters.t, m_cost: parameters.m, lanes: parameters.p, threads: parameters.p,
                version: UInt32(ARGON2_VERSION_13.rawValue), allocate_cbk: nil, free_cbk: nil,
                flags: 0)
              // No CLEAR_PASSWORD flag: the password stays in its SecretBytes, which zeroes
              // itself. libargon2 wipes its working memory by default (its core.c).
              status = argon2_ctx(&context, variant.raw)
              guard status == ARGON2_OK.rawValue else {
                throw HSMBridgeError(
                  .argon2Failed,
                  "argon2_ctx(\(variant.rawValue), \(parameters)) failed: \(String(cString: argon2_error_message(status)))"
                )
              }
            }
          }
        }
      }
    }
    return output
  }

  private static func mutableBytes(_ raw: UnsafeRawBufferPointer) -> UnsafeMutablePointer<UInt8>? {
    guard raw.count > 0 else { return nil }
    return UnsafeMutablePointer(mutating: raw.baseAddress!.assumingMemoryBound(to: UInt8.self))
  }

  /// How a password was stretched, as files record it: variant, version, costs and salt (hex).
  public struct Record: Codable, Hashable, Sendable {
    public var algorithm: String
    /// Argon2 version (19 = 0x13).
    public var version: Int
    public var t: UInt32
    public var m: UInt32
    public var p: UInt32
    /// Hex.
    public var salt: String

    /// Argon2id, version 0x13, with `salt` and `parameters`.
    public init(salt: [UInt8], parameters: Parameters = .custos) {
      self.algorithm = Variant.argon2id.rawValue
      self.version = 0x13
      self.t = parameters.t
      self.m = parameters.m
      self.p = parameters.p
      self.salt = Hex.encode(salt)
    }

    /// `length` bytes of Argon2id of `password` as recorded; refuses any other variant or version.
    public func derive(_ password: SecretBytes, length: Int = 32) throws -> SecretBytes {
      guard algorithm == Variant.argon2id.rawValue, version == 0x13, let saltBytes = Hex.decode(salt) else {
        throw HSMBridgeError(
          .invalidArgument, "the password hash is \(algorithm) version \(version); this build reads argon2id 0x13")
      }
      return try Argon2.hash(
        .argon2id, password: password, salt: saltBytes, parameters: Parameters(t: t, m: m, p: p), length: length)
    }
  }
}
