/// Base58 (Bitcoin's alphabet) and Base58Check, for extended keys and Solana addresses.
public enum Base58 {
  private static let alphabet = Array("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz".utf8)
  private static let indexes: [Int8] = {
    var table = [Int8](repeating: -1, count: 128)
    for (index, character) in alphabet.enumerated() { table[Int(character)] = Int8(index) }
    return table
  }()

  /// The Base58 text of `bytes` (each leading zero byte becomes a '1').
  public static func encode(_ bytes: [UInt8]) -> String {
    let zeros = bytes.prefix { $0 == 0 }.count
    var digits = [UInt8]()  // base-58 digits, least significant first
    digits.reserveCapacity(bytes.count * 138 / 100 + 1)
    for byte in bytes[zeros...] {
      var carry = Int(byte)
      for index in digits.indices {
        carry += Int(digits[index]) << 8
        digits[index] = UInt8(carry % 58)
        carry /= 58
      }
      while carry > 0 {
        digits.append(UInt8(carry % 58))
        carry /= 58
      }
    }
    let text = [UInt8](repeating: alphabet[0], count: zeros) + digits.reversed().map { alphabet[Int($0)] }
    return String(decoding: text, as: UTF8.self)
  }

  /// The bytes of Base58 `text`; nil when it holds a character outside the alphabet.
  public static func decode(_ text: some StringProtocol) -> [UInt8]? {
    let characters = Array(text.utf8)
    let ones = characters.prefix { $0 == alphabet[0] }.count
    var bytes = [UInt8]()  // least significant first
    for character in characters[ones...] {
      guard character < 128, indexes[Int(character)] >= 0 else { return nil }
      var carry = Int(indexes[Int(character)])
      for index in bytes.indices {
        carry += Int(bytes[index]) * 58
        bytes[index] = UInt8(carry & 0xFF)
        carry >>= 8
      }
      while carry > 0 {
        bytes.append(UInt8(carry & 0xFF))
        carry >>= 8
      }
    }
    return [UInt8](repeating: 0, count: ones) + bytes.reversed()
  }

  /// Base58Check: `payload` followed by the first four bytes of its double SHA-256.
  public static func encodeCheck(_ payload: [UInt8]) -> String {
    encode(payload + Hashes.doubleSHA256(payload).prefix(4))
  }

  /// The payload of Base58Check `text`, or a clear error for a bad character or checksum.
  public static func decodeCheck(_ text: some StringProtocol) throws -> [UInt8] {
    guard let bytes = decode(text) else {
      throw VaultError(.invalidEncoding, "not Base58: a character outside the alphabet")
    }
    guard bytes.count >= 4 else { throw VaultError(.invalidEncoding, "Base58Check text too short for its checksum") }
    let payload = Array(bytes.dropLast(4))
    guard Array(bytes.suffix(4)) == Array(Hashes.doubleSHA256(payload).prefix(4)) else {
      throw VaultError(.invalidEncoding, "Base58Check checksum does not match")
    }
    return payload
  }
}
