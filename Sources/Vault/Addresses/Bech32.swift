/// Bech32 (BIP-173) and Bech32m (BIP-350) strings, and segwit addresses built on them.
public enum Bech32 {
  /// Which checksum constant a string uses.
  public enum Variant: Sendable, Hashable {
    case bech32, bech32m
    var constant: UInt32 { self == .bech32 ? 1 : 0x2BC8_30A3 }
  }

  private static let charset = Array("qpzry9x8gf2tvdw0s3jn54khce6mua7l".utf8)
  private static let charsetIndex: [Int8] = {
    var table = [Int8](repeating: -1, count: 128)
    for (index, character) in charset.enumerated() { table[Int(character)] = Int8(index) }
    return table
  }()

  private static func polymod(_ values: [UInt8]) -> UInt32 {
    let generator: [UInt32] = [0x3B6A_57B2, 0x2650_8E6D, 0x1EA1_19FA, 0x3D42_33DD, 0x2A14_62B3]
    var checksum: UInt32 = 1
    for value in values {
      let top = checksum >> 25
      checksum = (checksum & 0x1FF_FFFF) << 5 ^ UInt32(value)
      for bit in 0..<5 where (top >> UInt32(bit)) & 1 == 1 { checksum ^= generator[bit] }
    }
    return checksum
  }

  private static func expand(_ hrp: [UInt8]) -> [UInt8] {
    hrp.map { $0 >> 5 } + [0] + hrp.map { $0 & 31 }
  }

  /// The string for human-readable part `hrp` (lower case) and 5-bit `data`.
  public static func encode(hrp: String, data: [UInt8], variant: Variant) -> String {
    let hrpBytes = Array(hrp.lowercased().utf8)
    let values = expand(hrpBytes) + data + [0, 0, 0, 0, 0, 0]
    let checksum = polymod(values) ^ variant.constant
    let checksumDigits = (0..<6).map { UInt8((checksum >> UInt32(5 * (5 - $0))) & 31) }
    return String(
      decoding: hrpBytes + [UInt8(ascii: "1")] + (data + checksumDigits).map { charset[Int($0)] }, as: UTF8.self)
  }

  /// Decodes a Bech32 or Bech32m string given as bytes: the human-readable part (lower case),
  /// the 5-bit data without the checksum, and which variant its checksum is. Refuses
  /// everything BIP-173 refuses, with the reason.
  public static func decode(_ text: [UInt8]) throws -> (hrp: String, data: [UInt8], variant: Variant) {
    guard text.count <= 90 else { throw VaultError(.invalidEncoding, "longer than 90 characters") }
    guard text.allSatisfy({ $0 >= 33 && $0 <= 126 }) else {
      throw VaultError(.invalidEncoding, "a character outside US-ASCII 33-126")
    }
    let hasLower = text.contains { $0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z") }
    let hasUpper = text.contains { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }
    guard !(hasLower && hasUpper) else { throw VaultError(.invalidEncoding, "mixed upper and lower case") }
    let lower = text.map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") ? $0 + 32 : $0 }
    guard let separator = lower.lastIndex(of: UInt8(ascii: "1")) else {
      throw VaultError(.invalidEncoding, "no separator '1'")
    }
    guard separator > 0 else { throw VaultError(.invalidEncoding, "empty human-readable part") }
    guard lower.count - separator - 1 >= 6 else {
      throw VaultError(.invalidEncoding, "checksum shorter than 6 characters")
    }
    let hrp = Array(lower[..<separator])
    var data = [UInt8]()
    for character in lower[(separator + 1)...] {
      guard character < 128, charsetIndex[Int(character)] >= 0 else {
        throw VaultError(.invalidEncoding, "a character outside the bech32 alphabet")
      }
      data.append(UInt8(charsetIndex[Int(character)]))
    }
    let check = polymod(expand(hrp) + data)
    let variant: Variant
    switch check {
    case Variant.bech32.constant: variant = .bech32
    case Variant.bech32m.constant: variant = .bech32m
    default: throw VaultError(.invalidEncoding, "checksum does not match")
    }
    return (String(decoding: hrp, as: UTF8.self), Array(data.dropLast(6)), variant)
  }

  /// Regroups bits (8 to 5 with padding, or 5 to 8 refusing bad padding).
  static func convertBits(_ data: [UInt8], from: Int, to: Int, pad: Bool) -> [UInt8]? {
    var accumulator = 0
    var bits = 0
    var output = [UInt8]()
    let maxValue = (1 << to) - 1
    for value in data {
      guard Int(value) >> from == 0 else { return nil }
      accumulator = (accumulator << from) | Int(value)
      bits += from
      while bits >= to {
        bits -= to
        output.append(UInt8((accumulator >> bits) & maxValue))
      }
    }
    if pad {
      if bits > 0 { output.append(UInt8((accumulator << (to - bits)) & maxValue)) }
    } else if bits >= from || ((accumulator << (to - bits)) & maxValue) != 0 {
      return nil
    }
    return output
  }
}

/// A native segwit address: witness version and program (BIP-141), written as BIP-173/BIP-350
/// say (version 0 with Bech32, versions 1-16 with Bech32m).
public struct SegwitAddress: Hashable, Sendable {
  public let humanReadablePart: String
  public let version: UInt8
  public let program: [UInt8]

  /// An address for `program` under `version`; refuses lengths BIP-141 does not allow.
  public init(humanReadablePart: String, version: UInt8, program: [UInt8]) throws {
    guard version <= 16 else { throw VaultError(.invalidEncoding, "witness version \(version) is above 16") }
    guard (2...40).contains(program.count) else {
      throw VaultError(.invalidEncoding, "witness program of \(program.count) bytes (2 to 40 allowed)")
    }
    guard version != 0 || program.count == 20 || program.count == 32 else {
      throw VaultError(.invalidEncoding, "a version 0 program is 20 or 32 bytes, not \(program.count)")
    }
    self.humanReadablePart = humanReadablePart.lowercased()
    self.version = version
    self.program = program
  }

  /// Decodes `text`, which must carry `expectedHRP` ("bc", "tb") when one is given.
  public init(decoding text: String, expectedHRP: String? = nil) throws {
    try self.init(decoding: Array(text.utf8), expectedHRP: expectedHRP)
  }

  /// Decodes the bytes of an address.
  public init(decoding bytes: [UInt8], expectedHRP: String? = nil) throws {
    let (hrp, data, variant) = try Bech32.decode(bytes)
    if let expectedHRP, hrp != expectedHRP.lowercased() {
      throw VaultError(.invalidEncoding, "human-readable part '\(hrp)', expected '\(expectedHRP)'")
    }
    guard let version = data.first else { throw VaultError(.invalidEncoding, "empty data section") }
    guard version <= 16 else { throw VaultError(.invalidEncoding, "witness version \(version) is above 16") }
    let expected: Bech32.Variant = version == 0 ? .bech32 : .bech32m
    guard variant == expected else {
      throw VaultError(
        .invalidEncoding, "witness version \(version) needs a \(expected == .bech32 ? "Bech32" : "Bech32m") checksum")
    }
    guard let program = Bech32.convertBits(Array(data.dropFirst()), from: 5, to: 8, pad: false) else {
      throw VaultError(.invalidEncoding, "invalid padding in the witness program")
    }
    try self.init(humanReadablePart: hrp, version: version, program: program)
  }

  /// The address text (lower case).
  public var text: String {
    let data = [version] + Bech32.convertBits(program, from: 8, to: 5, pad: true)!
    return Bech32.encode(hrp: humanReadablePart, data: data, variant: version == 0 ? .bech32 : .bech32m)
  }

  /// The output script: OP_n, then a push of the program.
  public var scriptPubKey: [UInt8] {
    [version == 0 ? 0 : 0x50 + version, UInt8(program.count)] + program
  }
}
