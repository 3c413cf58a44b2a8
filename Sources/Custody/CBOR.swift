/// A CBOR data item (RFC 8949) of the subset Custos signs and hashes: integers, byte and text
/// strings, arrays, maps, tags, booleans and null. Floats, `undefined` and other simple values
/// are not part of it, so no Custos object can carry them.
///
/// Custos hashes encodings (`walletHash = SHA-256(encoding)`), so one value must have exactly
/// one encoding: `encoded()` writes the core deterministic encoding of RFC 8949 section 4.2.1
/// (shortest arguments, definite lengths, map keys in bytewise lexicographic order of their
/// encodings) and `CBORDecoder` accepts nothing else.
///
/// Equality is that of the data model: text compares by its UTF-8 bytes (not by Unicode
/// canonical equivalence, which would make two encodings equal), maps compare as sets of
/// entries regardless of the order they were built in.
public indirect enum CBOR: Sendable, Hashable, CustomStringConvertible {
  /// Major type 0: 0 ... 2^64-1.
  case unsigned(UInt64)
  /// Major type 1: the integer -1 - n, so `.negative(0)` is -1 and `.negative(UInt64.max)` is -2^64.
  case negative(UInt64)
  /// Major type 2.
  case bytes([UInt8])
  /// Major type 3, UTF-8.
  case text(String)
  /// Major type 4.
  case array([CBOR])
  /// Major type 5. The encoder sorts the entries; keys must be distinct.
  case map([Entry])
  /// Major type 6: a tag number and its content.
  case tagged(UInt64, CBOR)
  /// `false` (0xf4) or `true` (0xf5).
  case bool(Bool)
  /// `null` (0xf6).
  case null

  /// One key/value pair of a map.
  public struct Entry: Sendable, Hashable {
    public var key: CBOR
    public var value: CBOR
    public init(_ key: CBOR, _ value: CBOR) {
      self.key = key
      self.value = value
    }
  }

  /// A signed integer as `.unsigned` or `.negative`.
  public static func integer(_ value: Int64) -> CBOR {
    value >= 0 ? .unsigned(UInt64(value)) : .negative(UInt64(-(value + 1)))
  }

  /// A map with unsigned integer keys, the shape Custos objects use.
  public static func map(_ fields: [(UInt64, CBOR)]) -> CBOR {
    .map(fields.map { Entry(.unsigned($0.0), $0.1) })
  }

  // MARK: Equality

  public static func == (lhs: CBOR, rhs: CBOR) -> Bool {
    switch (lhs, rhs) {
    case (.unsigned(let a), .unsigned(let b)), (.negative(let a), .negative(let b)): return a == b
    case (.bytes(let a), .bytes(let b)): return a == b
    case (.text(let a), .text(let b)): return a.utf8.elementsEqual(b.utf8)
    case (.array(let a), .array(let b)): return a == b
    case (.map(let a), .map(let b)):
      guard a.count == b.count else { return false }
      return a.allSatisfy { entry in b.contains(entry) }
    case (.tagged(let tagA, let a), .tagged(let tagB, let b)): return tagA == tagB && a == b
    case (.bool(let a), .bool(let b)): return a == b
    case (.null, .null): return true
    default: return false
    }
  }

  public func hash(into hasher: inout Hasher) {
    switch self {
    case .unsigned(let value):
      hasher.combine(0)
      hasher.combine(value)
    case .negative(let value):
      hasher.combine(1)
      hasher.combine(value)
    case .bytes(let bytes):
      hasher.combine(2)
      hasher.combine(bytes)
    case .text(let text):
      hasher.combine(3)
      for byte in text.utf8 { hasher.combine(byte) }
    case .array(let items):
      hasher.combine(4)
      hasher.combine(items)
    case .map(let entries):
      // Independent of the order entries were given in, as equality is.
      hasher.combine(5)
      hasher.combine(entries.count)
      hasher.combine(entries.reduce(0) { $0 &+ $1.hashValue })
    case .tagged(let tag, let content):
      hasher.combine(6)
      hasher.combine(tag)
      hasher.combine(content)
    case .bool(let value):
      hasher.combine(7)
      hasher.combine(value)
    case .null:
      hasher.combine(8)
    }
  }

  // MARK: Encoding

  /// The core deterministic encoding (RFC 8949 section 4.2.1).
  ///
  /// Fails only for a map with the same key twice (`duplicateMapKey`) and for a bignum tag that
  /// is not in preferred form (`bignumNotPreferred`): such values have no deterministic
  /// encoding.
  public func encoded() throws(CBORError) -> [UInt8] {
    var out = [UInt8]()
    out.reserveCapacity(64)
    try encode(into: &out)
    return out
  }

  /// Appends the deterministic encoding to `out`.
  public func encode(into out: inout [UInt8]) throws(CBORError) {
    switch self {
    case .unsigned(let value): CBOR.appendHead(0, value, to: &out)
    case .negative(let value): CBOR.appendHead(1, value, to: &out)
    case .bytes(let bytes):
      CBOR.appendHead(2, UInt64(bytes.count), to: &out)
      out.append(contentsOf: bytes)
    case .text(let text):
      let utf8 = text.utf8
      CBOR.appendHead(3, UInt64(utf8.count), to: &out)
      out.append(contentsOf: utf8)
    case .array(let items):
      CBOR.appendHead(4, UInt64(items.count), to: &out)
      for item in items { try item.encode(into: &out) }
    case .map(let entries):
      CBOR.appendHead(5, UInt64(entries.count), to: &out)
      var encodedEntries = [(key: [UInt8], value: CBOR)]()
      encodedEntries.reserveCapacity(entries.count)
      for entry in entries { encodedEntries.append((try entry.key.encoded(), entry.value)) }
      encodedEntries.sort { $0.key.lexicographicallyPrecedes($1.key) }
      for index in encodedEntries.indices {
        if index > 0 && encodedEntries[index - 1].key == encodedEntries[index].key {
          throw CBORError(
            .duplicateMapKey, offset: out.count,
            "map key \(CBOR.diagnosticOfEncoding(encodedEntries[index].key)) appears twice")
        }
        out.append(contentsOf: encodedEntries[index].key)
        try encodedEntries[index].value.encode(into: &out)
      }
    case .tagged(let tag, let content):
      if let reason = CBOR.bignumViolation(tag: tag, content: content) {
        throw CBORError(.bignumNotPreferred, offset: out.count, reason)
      }
      CBOR.appendHead(6, tag, to: &out)
      try content.encode(into: &out)
    case .bool(let value): out.append(value ? 0xF5 : 0xF4)
    case .null: out.append(0xF6)
    }
  }

  /// The initial byte and shortest argument of a data item.
  @inline(__always)
  static func appendHead(_ major: UInt8, _ argument: UInt64, to out: inout [UInt8]) {
    let type = major << 5
    switch argument {
    case 0..<24:
      out.append(type | UInt8(argument))
    case 24...0xFF:
      out.append(type | 24)
      out.append(UInt8(argument))
    case 0x100...0xFFFF:
      out.append(type | 25)
      out.append(UInt8(argument >> 8))
      out.append(UInt8(truncatingIfNeeded: argument))
    case 0x1_0000...0xFFFF_FFFF:
      out.append(type | 26)
      for shift in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: argument >> shift)) }
    default:
      out.append(type | 27)
      for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: argument >> shift)) }
    }
  }

  /// Why a tag 2/3 (bignum) item is not in preferred serialization (RFC 8949 section 3.4.3):
  /// its content must be a byte string without leading zero bytes that does not fit in 64 bits
  /// (a value that fits is an ordinary integer). Nil when it is fine or not a bignum.
  static func bignumViolation(tag: UInt64, content: CBOR) -> String? {
    guard tag == 2 || tag == 3 else { return nil }
    guard case .bytes(let magnitude) = content else {
      return "bignum tag \(tag) must enclose a byte string"
    }
    if magnitude.first == 0 { return "bignum tag \(tag) has leading zero bytes" }
    if magnitude.count <= 8 { return "bignum tag \(tag) holds a value that fits an integer; encode it as one" }
    return nil
  }

  // MARK: Accessors

  /// The unsigned integer, if this is one.
  public var unsignedValue: UInt64? {
    if case .unsigned(let value) = self { return value }
    return nil
  }

  /// The bytes, if this is a byte string.
  public var bytesValue: [UInt8]? {
    if case .bytes(let value) = self { return value }
    return nil
  }

  /// The text, if this is a text string.
  public var textValue: String? {
    if case .text(let value) = self { return value }
    return nil
  }

  /// The items, if this is an array.
  public var arrayValue: [CBOR]? {
    if case .array(let value) = self { return value }
    return nil
  }

  /// The entries, if this is a map.
  public var mapValue: [Entry]? {
    if case .map(let value) = self { return value }
    return nil
  }

  /// The boolean, if this is one.
  public var boolValue: Bool? {
    if case .bool(let value) = self { return value }
    return nil
  }

  /// The name of the item's kind, for error messages.
  public var kindName: String {
    switch self {
    case .unsigned: "unsigned integer"
    case .negative: "negative integer"
    case .bytes: "byte string"
    case .text: "text string"
    case .array: "array"
    case .map: "map"
    case .tagged: "tagged item"
    case .bool: "boolean"
    case .null: "null"
    }
  }

  // MARK: Diagnostic notation

  /// RFC 8949 section 8 diagnostic notation, as the RFC's Appendix A prints it (text escaped as
  /// JSON, non-ASCII as `\uXXXX`).
  public var description: String { diagnostic }

  /// RFC 8949 section 8 diagnostic notation.
  public var diagnostic: String {
    switch self {
    case .unsigned(let value): return String(value)
    case .negative(let value):
      return value == UInt64.max ? "-18446744073709551616" : "-" + String(value + 1)
    case .bytes(let bytes): return "h'" + Hex.encode(bytes) + "'"
    case .text(let text): return CBOR.quoted(text)
    case .array(let items): return "[" + items.map(\.diagnostic).joined(separator: ", ") + "]"
    case .map(let entries):
      let sorted = (try? CBOR.sortedEntries(entries)) ?? entries
      return "{" + sorted.map { "\($0.key.diagnostic): \($0.value.diagnostic)" }.joined(separator: ", ") + "}"
    case .tagged(let tag, let content): return "\(tag)(\(content.diagnostic))"
    case .bool(let value): return value ? "true" : "false"
    case .null: return "null"
    }
  }

  static func sortedEntries(_ entries: [Entry]) throws(CBORError) -> [Entry] {
    var keyed = [(key: [UInt8], entry: Entry)]()
    for entry in entries { keyed.append((try entry.key.encoded(), entry)) }
    return keyed.sorted { $0.key.lexicographicallyPrecedes($1.key) }.map(\.entry)
  }

  static func quoted(_ text: String) -> String {
    var out = "\""
    for unit in text.utf16 {
      switch unit {
      case 0x22: out += "\\\""
      case 0x5C: out += "\\\\"
      case 0x20..<0x7F: out.unicodeScalars.append(Unicode.Scalar(UInt8(unit)))
      default:
        let digits = String(unit, radix: 16)
        out += "\\u" + String(repeating: "0", count: 4 - digits.count) + digits
      }
    }
    return out + "\""
  }

  static func diagnosticOfEncoding(_ bytes: [UInt8]) -> String {
    (try? CBORDecoder().decode(bytes).diagnostic) ?? "h'\(Hex.encode(bytes))'"
  }
}

/// A CBOR encoding that is not well-formed, not deterministic, or outside the limits: which
/// rule broke and at which byte offset.
public struct CBORError: Error, Hashable, Sendable, CustomStringConvertible {
  /// The rule that broke. Extensible: new codes are added as static members.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public var description: String { name }

    /// The input ended inside a data item.
    public static let truncated = Code("truncated")
    /// Bytes follow the one top-level data item.
    public static let trailingBytes = Code("trailingBytes")
    /// An integer, length or tag not in its shortest form (RFC 8949 section 4.2.1).
    public static let nonShortestArgument = Code("nonShortestArgument")
    /// An indefinite-length string, array or map (refused by section 4.2.1).
    public static let indefiniteLength = Code("indefiniteLength")
    /// Additional information 28 to 30, or 31 where it is not well-formed.
    public static let reservedAdditionalInfo = Code("reservedAdditionalInfo")
    /// A "break" stop code outside an indefinite-length item.
    public static let unexpectedBreak = Code("unexpectedBreak")
    /// A floating-point number (none is allowed in Custos objects).
    public static let floatNotAllowed = Code("floatNotAllowed")
    /// `undefined` or another simple value than false, true and null.
    public static let unsupportedSimpleValue = Code("unsupportedSimpleValue")
    /// A simple value below 32 in the two-byte form (not well-formed).
    public static let invalidSimpleValue = Code("invalidSimpleValue")
    /// Map keys not in bytewise lexicographic order of their encodings.
    public static let unsortedMapKeys = Code("unsortedMapKeys")
    /// The same map key twice.
    public static let duplicateMapKey = Code("duplicateMapKey")
    /// A text string that is not valid UTF-8.
    public static let invalidUTF8 = Code("invalidUTF8")
    /// Arrays, maps and tags nested deeper than the limit.
    public static let nestingTooDeep = Code("nestingTooDeep")
    /// A string longer, or an array or map with more items, than the limit.
    public static let lengthTooLarge = Code("lengthTooLarge")
    /// The input is longer than the limit.
    public static let inputTooLarge = Code("inputTooLarge")
    /// A bignum (tag 2 or 3) not in preferred serialization.
    public static let bignumNotPreferred = Code("bignumNotPreferred")
  }

  public let code: Code
  /// Offset of the byte where the offending item starts (or where input ran out).
  public let offset: Int
  /// A sentence naming what was wrong.
  public let reason: String

  public init(_ code: Code, offset: Int, _ reason: String) {
    self.code = code
    self.offset = offset
    self.reason = reason
  }

  public var description: String { "CBOR \(code) at byte \(offset): \(reason)" }
}
