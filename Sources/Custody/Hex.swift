/// Lower-case hexadecimal text for bytes, and its strict inverse.
public enum Hex {
  /// Lower-case hex of `bytes`, two characters a byte.
  public static func encode<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(bytes.underestimatedCount * 2)
    for byte in bytes {
      out.append(digits[Int(byte >> 4)])
      out.append(digits[Int(byte & 0x0F)])
    }
    return String(decoding: out, as: UTF8.self)
  }

  /// The bytes of `text` (upper or lower case, optional `0x` prefix); nil when it is not hex
  /// of whole bytes.
  public static func decode(_ text: some StringProtocol) -> [UInt8]? {
    var utf8 = Substring(text).utf8[...]
    if utf8.starts(with: "0x".utf8) { utf8 = utf8.dropFirst(2) }
    guard utf8.count % 2 == 0 else { return nil }
    var out = [UInt8]()
    out.reserveCapacity(utf8.count / 2)
    var high: UInt8? = nil
    for character in utf8 {
      let nibble: UInt8
      switch character {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = character - UInt8(ascii: "0")
      case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = character - UInt8(ascii: "a") + 10
      case UInt8(ascii: "A")...UInt8(ascii: "F"): nibble = character - UInt8(ascii: "A") + 10
      default: return nil
      }
      if let value = high {
        out.append(value << 4 | nibble)
        high = nil
      } else {
        high = nibble
      }
    }
    return out
  }
}
