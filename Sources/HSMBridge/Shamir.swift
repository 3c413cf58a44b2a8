import Custody

/// One share of a secret split with `Shamir`: the x coordinate (1...255) and one y byte per
/// byte of the secret.
public struct ShamirShare: Sendable {
  /// The x coordinate, never 0 (the secret sits at x = 0).
  public let index: UInt8
  /// The y bytes, as secret as the secret itself.
  public let value: SecretBytes

  public init(index: UInt8, value: SecretBytes) {
    self.index = index
    self.value = value
  }
}

/// Shamir's secret sharing over GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1, byte by
/// byte: each byte of the secret is the constant term of its own random polynomial of degree
/// threshold - 1, and share i holds every polynomial's value at x = i.
///
/// Field arithmetic runs in constant time (no tables indexed by secret bytes).
public enum Shamir {
  /// Splits `secret` into `count` shares, any `threshold` of which recover it.
  ///
  /// - Parameter random: fills a buffer with random bytes (the token's RNG in a ceremony). The
  ///   polynomial coefficients it produces are zeroed after use.
  public static func split(
    _ secret: SecretBytes, threshold: Int, count: Int,
    random: (UnsafeMutableRawBufferPointer) throws -> Void
  ) throws -> [ShamirShare] {
    guard threshold >= 2, threshold <= count, count <= 255 else {
      throw HSMBridgeError(
        .invalidArgument, "Shamir \(threshold)-of-\(count): need 2 <= threshold <= count <= 255")
    }
    guard secret.count > 0 else {
      throw HSMBridgeError(.invalidArgument, "Shamir: the secret is empty")
    }
    // coefficients[j * length + k]: coefficient of x^(j+1) for secret byte k.
    let length = secret.count
    let coefficients = try SecretBytes(count: (threshold - 1) * length, initializer: random)
    return secret.withUnsafeBytes { secretBytes in
      coefficients.withUnsafeBytes { coefficient in
        (1...count).map { x in
          let share = SecretBytes(count: length) { y in
            for k in 0..<length {
              // Horner: ((a_{t-1} x + a_{t-2}) x + ... + a_1) x + a_0.
              var value: UInt8 = 0
              for j in stride(from: threshold - 2, through: 0, by: -1) {
                value = GF256.multiply(value, UInt8(x)) ^ coefficient[j * length + k]
              }
              y[k] = GF256.multiply(value, UInt8(x)) ^ secretBytes[k]
            }
          }
          return ShamirShare(index: UInt8(x), value: share)
        }
      }
    }
  }

  /// Recovers the secret from `shares` by Lagrange interpolation at x = 0.
  ///
  /// Any `threshold` distinct shares give the secret; fewer give an unrelated value, which the
  /// caller must detect (Custos checks it against the device's activation check value).
  public static func combine(_ shares: [ShamirShare]) throws -> SecretBytes {
    guard shares.count >= 2 else {
      throw HSMBridgeError(.notEnoughShares, "Shamir: \(shares.count) share given; at least 2 are needed")
    }
    let indices = shares.map(\.index)
    guard !indices.contains(0), Set(indices).count == indices.count else {
      throw HSMBridgeError(
        .notEnoughShares, "Shamir: share numbers \(indices) must be distinct and non-zero")
    }
    let length = shares[0].value.count
    guard shares.allSatisfy({ $0.value.count == length }) else {
      throw HSMBridgeError(.shareInvalid, "Shamir: shares of different lengths")
    }
    // Lagrange basis at 0: l_i = prod_{j != i} x_j / (x_j - x_i); subtraction is XOR in GF(2^8).
    let basis = shares.indices.map { i -> UInt8 in
      var numerator: UInt8 = 1
      var denominator: UInt8 = 1
      for j in shares.indices where j != i {
        numerator = GF256.multiply(numerator, indices[j])
        denominator = GF256.multiply(denominator, indices[j] ^ indices[i])
      }
      return GF256.multiply(numerator, GF256.inverse(denominator))
    }
    return SecretBytes(count: length) { secret in
      for (i, share) in shares.enumerated() {
        share.value.withUnsafeBytes { y in
          for k in 0..<length { secret[k] ^= GF256.multiply(basis[i], y[k]) }
        }
      }
    }
  }
}

/// Arithmetic in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1 (0x11B), in constant time.
public enum GF256 {
  /// The product of `a` and `b`.
  public static func multiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
    var a = a
    var b = b
    var product: UInt8 = 0
    for _ in 0..<8 {
      product ^= a & (0 &- (b & 1))
      let carry = 0 &- (a >> 7)
      a = (a << 1) ^ (0x1B & carry)
      b >>= 1
    }
    return product
  }

  /// The multiplicative inverse of `a` (a^254); 0 maps to 0.
  public static func inverse(_ a: UInt8) -> UInt8 {
    // a^254 = a^(2+4+8+16+32+64+128).
    var result: UInt8 = 1
    var square = a
    for _ in 0..<7 {
      square = multiply(square, square)
      result = multiply(result, square)
    }
    return result
  }
}
