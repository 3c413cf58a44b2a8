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
    var reader = try CBORReader(buffer, limits: limits)
    let item = try reader.item(depth: 1)
    try reader.finish()
    return item
  }
}

/// A cursor over deterministic CBOR, for decoders of fixed shapes (wallet data) that read
/// items one by one instead of building a `CBOR` tree. Every head it returns has passed the
/// same rules as `CBORDecoder`: shortest argument, definite length, no reserved information,
/// no float or simple value other than false, true and null.
public struct CBORReader {
  /// The head of one data item.
  public struct Head: Sendable {
    /// Major type 0 ... 7.
    public var major: UInt8
    /// The argument: the value, length, count or tag; for major type 7, 20 (false), 21 (true)
    /// or 22 (null).
    public var argument: UInt64
    /// Offset of the item's initial byte.
    public var start: Int

    /// The kind of item, for error messages.
    public var kindName: String {
      major == 7 ? (argument == 22 ? "null" : "boolean") : CBORReader.majorName(major)
    }
  }

  public let buffer: UnsafeRawBufferPointer
  public let limits: CBORDecoder.Limits
  /// Offset of the next unread byte.
  public private(set) var position = 0

  /// A cursor at the start of `buffer`; refuses input beyond the size limit.
  public init(_ buffer: UnsafeRawBufferPointer, limits: CBORDecoder.Limits = .standard) throws(CBORError) {
    guard buffer.count <= limits.maxInputSize else {
      throw CBORError(
        .inputTooLarge, offset: limits.maxInputSize,
        "input of \(buffer.count) bytes exceeds the limit of \(limits.maxInputSize)")
    }
    self.buffer = buffer
    self.limits = limits
  }

  var remaining: Int { buffer.count - position }

  /// Refuses anything after the last item read.
  public func finish() throws(CBORError) {
    guard position == buffer.count else {
      throw CBORError(.trailingBytes, offset: position, "\(buffer.count - position) bytes follow the data item")
    }
  }

  private mutating func byte(itemStart: Int) throws(CBORError) -> UInt8 {
    guard position < buffer.count else {
      throw CBORError(.truncated, offset: position, "input ends inside the item that starts at byte \(itemStart)")
    }
    defer { position += 1 }
    return buffer[position]
  }

  /// Reads the next item's head and checks it against the deterministic rules.
  public mutating func head() throws(CBORError) -> Head {
    let start = position
    guard start < buffer.count else {
      throw CBORError(.truncated, offset: start, "input ends where a data item should start")
    }
    let initial = buffer[start]
    position = start + 1
    let major = initial >> 5
    let info = initial & 0x1F
    if info == 31 {
      if major == 7 {
        throw CBORError(.unexpectedBreak, offset: start, "a \"break\" stop code outside an indefinite-length item")
      }
      if (2...5).contains(major) {
        throw CBORError(
          .indefiniteLength, offset: start,
          "indefinite-length \(CBORReader.majorName(major)); deterministic encoding requires definite lengths")
      }
      throw CBORError(
        .reservedAdditionalInfo, offset: start,
        "additional information 31 is not well-formed for \(CBORReader.majorName(major))")
    }
    if info >= 28 {
      throw CBORError(.reservedAdditionalInfo, offset: start, "additional information \(info) is reserved")
    }
    if major == 7 { return try simple(info, start: start) }
    if info < 24 { return Head(major: major, argument: UInt64(info), start: start) }
    let size = 1 << Int(info - 24)
    guard remaining >= size else {
      throw CBORError(
        .truncated, offset: buffer.count, "input ends inside the \(size)-byte argument of the item at byte \(start)")
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
        .nonShortestArgument, offset: start,
        "\(CBORReader.majorName(major)) argument \(value) written in \(size) bytes; the shortest form is required")
    }
    return Head(major: major, argument: value, start: start)
  }

  private mutating func simple(_ info: UInt8, start: Int) throws(CBORError) -> Head {
    switch info {
    case 20, 21, 22: return Head(major: 7, argument: UInt64(info), start: start)
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

  /// The length or count of a string, array (`itemSize` 1) or map (`itemSize` 2) head, within
  /// the limit and within the input (every item takes at least one byte, so a count beyond the
  /// input is found before anything is allocated for it).
  public func count(of head: Head, itemSize: Int = 1) throws(CBORError) -> Int {
    guard head.argument <= UInt64(limits.maxLength) else {
      throw CBORError(
        .lengthTooLarge, offset: head.start,
        "\(CBORReader.majorName(head.major)) of length \(head.argument) exceeds the limit of \(limits.maxLength)")
    }
    let length = Int(head.argument)
    guard length * itemSize <= remaining else {
      throw CBORError(
        .truncated, offset: buffer.count,
        "\(CBORReader.majorName(head.major)) at byte \(head.start) declares \(length) \(head.major < 4 ? "bytes" : "items") but the input ends first"
      )
    }
    return length
  }

  /// The content of a byte or text string head, as a range of `buffer`; moves past it.
  public mutating func content(of head: Head) throws(CBORError) -> Range<Int> {
    let length = try count(of: head)
    defer { position += length }
    return position..<position + length
  }

  /// The bytes of a byte string head.
  public mutating func bytes(of head: Head) throws(CBORError) -> [UInt8] {
    Array(UnsafeRawBufferPointer(rebasing: buffer[try content(of: head)]))
  }

  /// The text of a text string head, refused when it is not valid UTF-8.
  public mutating func text(of head: Head) throws(CBORError) -> String {
    let range = try content(of: head)
    let slice = UnsafeRawBufferPointer(rebasing: buffer[range])
    guard CBORReader.isValidUTF8(slice) else {
      throw CBORError(.invalidUTF8, offset: head.start, "text string of \(range.count) bytes is not valid UTF-8")
    }
    return String(decoding: slice, as: UTF8.self)
  }

  /// Whether `bytes` is well-formed UTF-8 (Unicode table 3-7: no overlong forms, no
  /// surrogates, nothing above U+10FFFF). Written out because the standard library's
  /// validating initialiser is generic and costs a metadata lookup per string, which showed in
  /// the vault's profile.
  public static func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
    var index = 0
    let count = bytes.count
    while index < count {
      let lead = bytes[index]
      if lead < 0x80 {
        index += 1
        continue
      }
      let length: Int
      var low: UInt8 = 0x80
      var high: UInt8 = 0xBF
      switch lead {
      case 0xC2...0xDF: length = 2
      case 0xE0:
        length = 3
        low = 0xA0
      case 0xE1...0xEC, 0xEE...0xEF: length = 3
      case 0xED:
        length = 3
        high = 0x9F
      case 0xF0:
        length = 4
        low = 0x90
      case 0xF1...0xF3: length = 4
      case 0xF4:
        length = 4
        high = 0x8F
      default: return false
      }
      guard index + length <= count else { return false }
      let second = bytes[index + 1]
      guard second >= low, second <= high else { return false }
      for offset in 2..<max(length, 2) where bytes[index + offset] & 0xC0 != 0x80 { return false }
      index += length
    }
    return true
  }

  /// One whole data item, nested items included.
  public mutating func item(depth: Int) throws(CBORError) -> CBOR {
    let head = try head()
    switch head.major {
    case 0: return .unsigned(head.argument)
    case 1: return .negative(head.argument)
    case 2: return .bytes(try bytes(of: head))
    case 3: return .text(try text(of: head))
    case 4:
      try checkDepth(depth, start: head.start)
      let count = try count(of: head)
      var items = [CBOR]()
      items.reserveCapacity(count)
      for _ in 0..<count { items.append(try item(depth: depth + 1)) }
      return .array(items)
    case 5:
      try checkDepth(depth, start: head.start)
      let count = try count(of: head, itemSize: 2)
      var entries = [CBOR.Entry]()
      entries.reserveCapacity(count)
      var previousKey = 0..<0
      for index in 0..<count {
        let keyStart = position
        let key = try item(depth: depth + 1)
        let keyRange = keyStart..<position
        if index > 0 { try checkKeyOrder(previousKey, keyRange, key: key) }
        previousKey = keyRange
        entries.append(CBOR.Entry(key, try item(depth: depth + 1)))
      }
      return .map(entries)
    case 6:
      try checkDepth(depth, start: head.start)
      let content = try item(depth: depth + 1)
      if let reason = CBOR.bignumViolation(tag: head.argument, content: content) {
        throw CBORError(.bignumNotPreferred, offset: head.start, reason)
      }
      return .tagged(head.argument, content)
    default:
      return head.argument == 22 ? .null : .bool(head.argument == 21)
    }
  }

  /// Refuses a map key whose encoding (at `current`) does not sort strictly after the
  /// previous key's (at `previous`).
  public func checkKeyOrder(_ previous: Range<Int>, _ current: Range<Int>, key: CBOR) throws(CBORError) {
    let order = compare(previous, current)
    if order == 0 {
      throw CBORError(.duplicateMapKey, offset: current.lowerBound, "map key \(key.diagnostic) appears twice")
    }
    if order > 0 {
      throw CBORError(
        .unsortedMapKeys, offset: current.lowerBound,
        "map key \(key.diagnostic) follows a key whose encoding sorts after it (keys must be in bytewise lexicographic order)"
      )
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
