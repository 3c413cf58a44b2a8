/// The strict decoder: accepts exactly the core deterministic encodings (RFC 8949 section
/// 4.2.1) of `CBOR` values within its limits, and refuses everything else with a `CBORError`
/// naming the rule and the byte offset.
///
/// Refused: non-shortest integers, lengths and tags; indefinite lengths; map keys out of
/// bytewise lexicographic order or repeated; floats; simple values other than false, true and
/// null; invalid UTF-8; bignums not in preferred form; trailing bytes; nesting, lengths or input
/// size beyond the limits. So `decode(b).encoded() == b` for every accepted `b`.
public struct CBORDecoder: Sendable {
  /// Bounds on what the decoder will take, so hostile input cannot exhaust memory or stack.
  public struct Limits: Sendable, Hashable {
    /// Deepest nesting of arrays, maps and tags (the top-level item is depth 1).
    public var maxDepth: Int
    /// Most bytes in one string, most items in one array, most entries in one map.
    public var maxLength: Int
    /// Most bytes of input.
    public var maxInputSize: Int

    public init(maxDepth: Int, maxLength: Int, maxInputSize: Int) {
      self.maxDepth = maxDepth
      self.maxLength = maxLength
      self.maxInputSize = maxInputSize
    }

    /// 16 levels, 64 KiB strings or 64 Ki items, 1 MiB input: ample for every Custos object.
    public static let standard = Limits(maxDepth: 16, maxLength: 65_536, maxInputSize: 1 << 20)
  }

  public let limits: Limits

  public init(limits: Limits = .standard) {
    self.limits = limits
  }

  /// Decodes exactly one data item filling all of `bytes`.
  public func decode(_ bytes: [UInt8]) throws(CBORError) -> CBOR {
    let result = bytes.withUnsafeBytes { raw in Result { () throws(CBORError) -> CBOR in try decode(raw) } }
    return try result.get()
  }

  /// Decodes exactly one data item filling all of `buffer`.
  public func decode(_ buffer: UnsafeRawBufferPointer) throws(CBORError) -> CBOR {
    guard buffer.count <= limits.maxInputSize else {
      throw CBORError(
        .inputTooLarge, offset: limits.maxInputSize,
        "input of \(buffer.count) bytes exceeds the limit of \(limits.maxInputSize)")
    }
    var reader = Reader(buffer: buffer, limits: limits)
    let item = try reader.item(depth: 1)
    guard reader.position == buffer.count else {
      throw CBORError(
        .trailingBytes, offset: reader.position,
        "\(buffer.count - reader.position) bytes follow the data item")
    }
    return item
  }
}

private struct Reader {
  let buffer: UnsafeRawBufferPointer
  let limits: CBORDecoder.Limits
  var position = 0

  init(buffer: UnsafeRawBufferPointer, limits: CBORDecoder.Limits) {
    self.buffer = buffer
    self.limits = limits
  }

  var remaining: Int { buffer.count - position }

  mutating func byte(itemStart: Int) throws(CBORError) -> UInt8 {
    guard position < buffer.count else {
      throw CBORError(.truncated, offset: position, "input ends inside the item that starts at byte \(itemStart)")
    }
    defer { position += 1 }
    return buffer[position]
  }

  /// Reads the argument that follows an initial byte with additional information 24...27 and
  /// checks it is in its shortest form.
  mutating func argument(_ info: UInt8, major: UInt8, itemStart: Int) throws(CBORError) -> UInt64 {
    if info < 24 { return UInt64(info) }
    let size = 1 << Int(info - 24)
    guard remaining >= size else {
      throw CBORError(
        .truncated, offset: buffer.count,
        "input ends inside the \(size)-byte argument of the item at byte \(itemStart)")
    }
    var value: UInt64 = 0
    for _ in 0..<size {
      value = value << 8 | UInt64(buffer[position])
      position += 1
    }
    let smallest: UInt64 =
      switch info {
      case 24: 24
      case 25: 0x100
      case 26: 0x1_0000
      default: 0x1_0000_0000
      }
    guard value >= smallest else {
      throw CBORError(
        .nonShortestArgument, offset: itemStart,
        "\(Reader.majorName(major)) argument \(value) written in \(size) bytes; the shortest form is required")
    }
    return value
  }

  mutating func length(_ value: UInt64, major: UInt8, itemStart: Int, itemSize: Int) throws(CBORError) -> Int {
    guard value <= UInt64(limits.maxLength) else {
      throw CBORError(
        .lengthTooLarge, offset: itemStart,
        "\(Reader.majorName(major)) of length \(value) exceeds the limit of \(limits.maxLength)")
    }
    let length = Int(value)
    // Every item takes at least one byte, so a count beyond the input is truncation, found
    // before anything is allocated for it.
    guard length.multipliedReportingOverflow(by: itemSize).partialValue <= remaining else {
      throw CBORError(
        .truncated, offset: buffer.count,
        "\(Reader.majorName(major)) at byte \(itemStart) declares \(length) \(itemSize == 1 && major < 4 ? "bytes" : "items") but the input ends first"
      )
    }
    return length
  }

  mutating func item(depth: Int) throws(CBORError) -> CBOR {
    let start = position
    let initial = try byte(itemStart: start)
    let major = initial >> 5
    let info = initial & 0x1F
    if info == 31 {
      if major == 7 {
        throw CBORError(.unexpectedBreak, offset: start, "a \"break\" stop code outside an indefinite-length item")
      }
      if (2...5).contains(major) {
        throw CBORError(
          .indefiniteLength, offset: start,
          "indefinite-length \(Reader.majorName(major)); deterministic encoding requires definite lengths")
      }
      throw CBORError(
        .reservedAdditionalInfo, offset: start, "additional information 31 is not well-formed for \(Reader.majorName(major))")
    }
    if info >= 28 {
      throw CBORError(.reservedAdditionalInfo, offset: start, "additional information \(info) is reserved")
    }
    if major == 7 { return try simple(info, start: start) }
    let argument = try argument(info, major: major, itemStart: start)
    switch major {
    case 0: return .unsigned(argument)
    case 1: return .negative(argument)
    case 2:
      let count = try length(argument, major: major, itemStart: start, itemSize: 1)
      defer { position += count }
      return .bytes(Array(UnsafeRawBufferPointer(rebasing: buffer[position..<position + count])))
    case 3:
      let count = try length(argument, major: major, itemStart: start, itemSize: 1)
      let slice = UnsafeRawBufferPointer(rebasing: buffer[position..<position + count])
      guard let text = String(validating: slice.bindMemory(to: UInt8.self), as: UTF8.self) else {
        throw CBORError(.invalidUTF8, offset: start, "text string of \(count) bytes is not valid UTF-8")
      }
      position += count
      return .text(text)
    case 4:
      try checkDepth(depth, start: start)
      let count = try length(argument, major: major, itemStart: start, itemSize: 1)
      var items = [CBOR]()
      items.reserveCapacity(count)
      for _ in 0..<count { items.append(try item(depth: depth + 1)) }
      return .array(items)
    case 5:
      try checkDepth(depth, start: start)
      let count = try length(argument, major: major, itemStart: start, itemSize: 2)
      var entries = [CBOR.Entry]()
      entries.reserveCapacity(count)
      var previousKey = 0..<0
      for index in 0..<count {
        let keyStart = position
        let key = try item(depth: depth + 1)
        let keyRange = keyStart..<position
        if index > 0 {
          let order = compare(previousKey, keyRange)
          if order == 0 {
            throw CBORError(.duplicateMapKey, offset: keyStart, "map key \(key.diagnostic) appears twice")
          }
          if order > 0 {
            throw CBORError(
              .unsortedMapKeys, offset: keyStart,
              "map key \(key.diagnostic) follows a key whose encoding sorts after it (keys must be in bytewise lexicographic order)"
            )
          }
        }
        previousKey = keyRange
        entries.append(CBOR.Entry(key, try item(depth: depth + 1)))
      }
      return .map(entries)
    default:  // 6
      try checkDepth(depth, start: start)
      let content = try item(depth: depth + 1)
      if let reason = CBOR.bignumViolation(tag: argument, content: content) {
        throw CBORError(.bignumNotPreferred, offset: start, reason)
      }
      return .tagged(argument, content)
    }
  }

  mutating func simple(_ info: UInt8, start: Int) throws(CBORError) -> CBOR {
    switch info {
    case 20: return .bool(false)
    case 21: return .bool(true)
    case 22: return .null
    case 23: throw CBORError(.unsupportedSimpleValue, offset: start, "undefined is not allowed")
    case 24:
      let value = try byte(itemStart: start)
      if value < 32 {
        throw CBORError(
          .invalidSimpleValue, offset: start, "simple value \(value) in the two-byte form is not well-formed")
      }
      throw CBORError(.unsupportedSimpleValue, offset: start, "simple value \(value) is not allowed")
    case 25, 26, 27:
      let size = 1 << Int(info - 24)
      guard remaining >= size else {
        throw CBORError(.truncated, offset: buffer.count, "input ends inside the float at byte \(start)")
      }
      throw CBORError(.floatNotAllowed, offset: start, "a \(size * 8)-bit float; floats are not allowed")
    default:
      throw CBORError(.unsupportedSimpleValue, offset: start, "simple value \(info) is not allowed")
    }
  }

  func checkDepth(_ depth: Int, start: Int) throws(CBORError) {
    guard depth < limits.maxDepth else {
      throw CBORError(.nestingTooDeep, offset: start, "nesting deeper than the limit of \(limits.maxDepth)")
    }
  }

  /// Bytewise lexicographic comparison of two ranges of the input: -1, 0 or 1.
  func compare(_ a: Range<Int>, _ b: Range<Int>) -> Int {
    let common = min(a.count, b.count)
    for offset in 0..<common {
      let x = buffer[a.lowerBound + offset]
      let y = buffer[b.lowerBound + offset]
      if x != y { return x < y ? -1 : 1 }
    }
    return a.count == b.count ? 0 : (a.count < b.count ? -1 : 1)
  }

  static func majorName(_ major: UInt8) -> String {
    switch major {
    case 0: "unsigned integer"
    case 1: "negative integer"
    case 2: "byte string"
    case 3: "text string"
    case 4: "array"
    case 5: "map"
    case 6: "tag"
    default: "simple value"
    }
  }
}
