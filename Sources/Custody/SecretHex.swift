extension SecretBytes {
  /// `count` bytes from the system's random number generator, for transient secrets made where
  /// no token exists yet (a token's RNG is preferred wherever there is one).
  public static func random(count: Int) -> SecretBytes {
    SecretBytes(count: count) { buffer in SystemRandom.fill(buffer) }
  }

  /// Lower-case hex of the secret, after `prefix`, in a new zeroing buffer: for secrets that
  /// must be text (a derived PIN, a credential) without passing through a `String`.
  public func hexEncoded(prefix: String = "") -> SecretBytes {
    let prefixBytes = Array(prefix.utf8)
    let digits = Array("0123456789abcdef".utf8)
    return withUnsafeBytes { raw in
      SecretBytes(count: prefixBytes.count + 2 * raw.count) { out in
        for (index, byte) in prefixBytes.enumerated() { out[index] = byte }
        for (index, byte) in raw.enumerated() {
          out[prefixBytes.count + 2 * index] = digits[Int(byte >> 4)]
          out[prefixBytes.count + 2 * index + 1] = digits[Int(byte & 0x0F)]
        }
      }
    }
  }
}
