/// Base64url without padding (RFC 4648 section 5), as WebAuthn writes challenges in
/// clientDataJSON: the authenticator side encodes, the vault compares the encoding.
public enum Base64URL {
  private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

  /// The unpadded base64url text of `bytes`.
  public static func encode(_ bytes: some Collection<UInt8>) -> String {
    String(decoding: encodedBytes(bytes), as: UTF8.self)
  }

  /// The unpadded base64url characters of `bytes`, as ASCII bytes.
  public static func encodedBytes(_ bytes: some Collection<UInt8>) -> [UInt8] {
    if let encoded = bytes.withContiguousStorageIfAvailable(encodedBytes(contiguous:)) { return encoded }
    return Array(bytes).withUnsafeBufferPointer(encodedBytes(contiguous:))
  }

  /// Three bytes make four characters; one or two left over make two or three.
  private static func encodedBytes(contiguous bytes: UnsafeBufferPointer<UInt8>) -> [UInt8] {
    let count = (bytes.count * 4 + 2) / 3
    return alphabet.withUnsafeBufferPointer { alphabet in
      [UInt8](unsafeUninitializedCapacity: count) { out, initialized in
        var (read, written) = (0, 0)
        while read + 3 <= bytes.count {
          let group = UInt32(bytes[read]) << 16 | UInt32(bytes[read + 1]) << 8 | UInt32(bytes[read + 2])
          out[written] = alphabet[Int(group >> 18)]
          out[written + 1] = alphabet[Int(group >> 12 & 0x3F)]
          out[written + 2] = alphabet[Int(group >> 6 & 0x3F)]
          out[written + 3] = alphabet[Int(group & 0x3F)]
          read += 3
          written += 4
        }
        let left = bytes.count - read
        if left > 0 {
          let group = UInt32(bytes[read]) << 16 | (left == 2 ? UInt32(bytes[read + 1]) << 8 : 0)
          out[written] = alphabet[Int(group >> 18)]
          out[written + 1] = alphabet[Int(group >> 12 & 0x3F)]
          if left == 2 { out[written + 2] = alphabet[Int(group >> 6 & 0x3F)] }
          written += left + 1
        }
        initialized = written
      }
    }
  }

  /// The bytes of unpadded base64url `text`; nil for any other character, padding, a length
  /// that no byte string has (4n+1), or non-zero bits left over (so each value has one text).
  public static func decode(_ text: some StringProtocol) -> [UInt8]? {
    var out = [UInt8]()
    var buffer: UInt32 = 0
    var bits = 0
    var count = 0
    for character in text.utf8 {
      let value: UInt8
      switch character {
      case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = character - UInt8(ascii: "A")
      case UInt8(ascii: "a")...UInt8(ascii: "z"): value = character - UInt8(ascii: "a") + 26
      case UInt8(ascii: "0")...UInt8(ascii: "9"): value = character - UInt8(ascii: "0") + 52
      case UInt8(ascii: "-"): value = 62
      case UInt8(ascii: "_"): value = 63
      default: return nil
      }
      count += 1
      buffer = buffer << 6 | UInt32(value)
      bits += 6
      if bits >= 8 {
        bits -= 8
        out.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
      }
    }
    guard count % 4 != 1, buffer & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
    return out
  }
}
