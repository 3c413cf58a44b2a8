/// A non-negative amount in a chain's smallest unit (wei, satoshi, lamport), up to 2^256 - 1
/// because EVM values are 256-bit.
///
/// In CBOR an amount is a byte string holding its big-endian magnitude with no leading zero
/// byte (zero is the empty string), so each amount has one encoding.
public struct Amount: Sendable, Hashable, Comparable, CustomStringConvertible {
  /// Little-endian 64-bit words: `words.0` is the least significant.
  private var words: (UInt64, UInt64, UInt64, UInt64)

  public static let zero = Amount(words: (0, 0, 0, 0))
  public static let max = Amount(words: (.max, .max, .max, .max))

  private init(words: (UInt64, UInt64, UInt64, UInt64)) {
    self.words = words
  }

  /// An amount that fits in 64 bits.
  public init(_ value: UInt64) {
    words = (value, 0, 0, 0)
  }

  /// The amount whose big-endian magnitude is `bytes` (at most 32 bytes; leading zeros are
  /// accepted here, the CBOR form refuses them). Nil when it is longer than 32 bytes.
  public init?(bigEndian bytes: some Collection<UInt8>) {
    guard bytes.count <= 32 else { return nil }
    var array = [UInt64](repeating: 0, count: 4)
    var shift = 0
    for byte in bytes.reversed() {
      array[shift / 64] |= UInt64(byte) << UInt64(shift % 64)
      shift += 8
    }
    words = (array[0], array[1], array[2], array[3])
  }

  /// The amount written in decimal digits (no sign, no separators). Nil for anything else or a
  /// value above 2^256 - 1.
  public init?(decimal text: some StringProtocol) {
    guard !text.isEmpty else { return nil }
    var value = Amount.zero
    for character in text.utf8 {
      guard character >= UInt8(ascii: "0"), character <= UInt8(ascii: "9") else { return nil }
      guard let times10 = value.multipliedBySmall(10),
        let next = times10.adding(Amount(UInt64(character - UInt8(ascii: "0"))))
      else { return nil }
      value = next
    }
    self = value
  }

  private var array: [UInt64] { [words.0, words.1, words.2, words.3] }

  private init(array: [UInt64]) {
    words = (array[0], array[1], array[2], array[3])
  }

  /// The big-endian magnitude without leading zero bytes (empty for zero).
  public var bigEndianBytes: [UInt8] {
    var out = [UInt8]()
    out.reserveCapacity(32)
    for word in array.reversed() {
      for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: word >> UInt64(shift))) }
    }
    return Array(out.drop { $0 == 0 })
  }

  /// The sum, or nil when it does not fit in 256 bits.
  public func adding(_ other: Amount) -> Amount? {
    let a = array
    let b = other.array
    var result = [UInt64](repeating: 0, count: 4)
    var carry: UInt64 = 0
    for index in 0..<4 {
      let (partial, overflow1) = a[index].addingReportingOverflow(b[index])
      let (sum, overflow2) = partial.addingReportingOverflow(carry)
      result[index] = sum
      carry = (overflow1 ? 1 : 0) + (overflow2 ? 1 : 0)
    }
    return carry == 0 ? Amount(array: result) : nil
  }

  /// The difference, or nil when `other` is larger.
  public func subtracting(_ other: Amount) -> Amount? {
    guard other <= self else { return nil }
    let a = array
    let b = other.array
    var result = [UInt64](repeating: 0, count: 4)
    var borrow: UInt64 = 0
    for index in 0..<4 {
      let (partial, overflow1) = a[index].subtractingReportingOverflow(b[index])
      let (difference, overflow2) = partial.subtractingReportingOverflow(borrow)
      result[index] = difference
      borrow = (overflow1 ? 1 : 0) + (overflow2 ? 1 : 0)
    }
    return Amount(array: result)
  }

  private func multipliedBySmall(_ factor: UInt64) -> Amount? {
    var result = [UInt64](repeating: 0, count: 4)
    var carry: UInt64 = 0
    for (index, word) in array.enumerated() {
      let (high, low) = word.multipliedFullWidth(by: factor)
      let (sum, overflow) = low.addingReportingOverflow(carry)
      result[index] = sum
      carry = high + (overflow ? 1 : 0)
    }
    return carry == 0 ? Amount(array: result) : nil
  }

  private func dividedBySmall(_ divisor: UInt64) -> (quotient: Amount, remainder: UInt64) {
    let (q3, r3) = divisor.dividingFullWidth((0, words.3))
    let (q2, r2) = divisor.dividingFullWidth((r3, words.2))
    let (q1, r1) = divisor.dividingFullWidth((r2, words.1))
    let (q0, r0) = divisor.dividingFullWidth((r1, words.0))
    return (Amount(words: (q0, q1, q2, q3)), r0)
  }

  /// Decimal digits.
  public var description: String {
    // Nineteen digits at a time: 10^19 is the largest power of ten in a word.
    var chunks = [UInt64]()
    var value = self
    repeat {
      let (quotient, remainder) = value.dividedBySmall(10_000_000_000_000_000_000)
      chunks.append(remainder)
      value = quotient
    } while value != .zero
    var text = String(chunks.removeLast())
    for chunk in chunks.reversed() {
      let digits = String(chunk)
      text += String(repeating: "0", count: 19 - digits.utf8.count) + digits
    }
    return text
  }

  public static func == (lhs: Amount, rhs: Amount) -> Bool {
    lhs.words == rhs.words
  }

  public func hash(into hasher: inout Hasher) {
    hasher.combine(words.0)
    hasher.combine(words.1)
    hasher.combine(words.2)
    hasher.combine(words.3)
  }

  public static func < (lhs: Amount, rhs: Amount) -> Bool {
    if lhs.words.3 != rhs.words.3 { return lhs.words.3 < rhs.words.3 }
    if lhs.words.2 != rhs.words.2 { return lhs.words.2 < rhs.words.2 }
    if lhs.words.1 != rhs.words.1 { return lhs.words.1 < rhs.words.1 }
    return lhs.words.0 < rhs.words.0
  }
}
