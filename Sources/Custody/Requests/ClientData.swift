/// The members of a WebAuthn clientDataJSON (`CollectedClientData`) the vault checks, read by
/// a strict JSON parser (RFC 8259): one object, valid UTF-8, every escape decoded, no
/// duplicate member names at the top level (a second `type` or `origin` would let two readers
/// disagree), nothing after the object. Members the vault does not know are parsed and
/// skipped, as WebAuthn requires of relying parties.
public struct ClientData: Equatable, Sendable {
  public var type: String
  public var challenge: String
  public var origin: String
  public var crossOrigin: Bool?
  public var topOrigin: String?

  public init(type: String, challenge: String, origin: String, crossOrigin: Bool? = nil, topOrigin: String? = nil) {
    self.type = type
    self.challenge = challenge
    self.origin = origin
    self.crossOrigin = crossOrigin
    self.topOrigin = topOrigin
  }

  /// Deepest nesting accepted in members the vault skips.
  public static let maxDepth = 16

  /// Parses `bytes`; the error says what is wrong and where.
  public static func parse(_ bytes: [UInt8]) throws(RequestError) -> ClientData {
    let result = bytes.withUnsafeBytes { raw in
      Result { () throws(RequestError) -> ClientData in
        var parser = JSONParser(raw)
        return try parser.clientData()
      }
    }
    return try result.get()
  }
}

/// A recursive-descent JSON parser over a byte buffer, just large enough for client data.
private struct JSONParser {
  let buffer: UnsafeRawBufferPointer
  var position = 0

  init(_ buffer: UnsafeRawBufferPointer) {
    self.buffer = buffer
  }

  func refuse(_ reason: String) -> RequestError {
    RequestError(.malformedClientData, "clientDataJSON \(reason) (at byte \(position))")
  }

  mutating func skipSpace() {
    while position < buffer.count {
      switch buffer[position] {
      case 0x20, 0x09, 0x0A, 0x0D: position += 1
      default: return
      }
    }
  }

  mutating func expect(_ byte: UInt8) throws(RequestError) {
    skipSpace()
    guard position < buffer.count, buffer[position] == byte else {
      throw refuse("expected '\(Character(Unicode.Scalar(byte)))'")
    }
    position += 1
  }

  mutating func peek() -> UInt8? {
    skipSpace()
    return position < buffer.count ? buffer[position] : nil
  }

  mutating func clientData() throws(RequestError) -> ClientData {
    guard CBORReader.isValidUTF8(buffer) else { throw refuse("is not valid UTF-8") }
    var type: String? = nil
    var challenge: String? = nil
    var origin: String? = nil
    var crossOrigin: Bool? = nil
    var topOrigin: String? = nil
    var seen = Set<String>()
    try expect(UInt8(ascii: "{"))
    if peek() == UInt8(ascii: "}") {
      position += 1
    } else {
      while true {
        let name = try string()
        guard seen.insert(name).inserted else { throw refuse("names member \"\(name)\" twice") }
        try expect(UInt8(ascii: ":"))
        switch name {
        case "type": type = try string()
        case "challenge": challenge = try string()
        case "origin": origin = try string()
        case "topOrigin": topOrigin = try string()
        case "crossOrigin":
          guard let value = try boolean() else { throw refuse("has a crossOrigin that is not true or false") }
          crossOrigin = value
        default: try skipValue(depth: 1)
        }
        guard let next = peek() else { throw refuse("ends inside the object") }
        position += 1
        if next == UInt8(ascii: "}") { break }
        guard next == UInt8(ascii: ",") else { throw refuse("expected ',' or '}'") }
      }
    }
    skipSpace()
    guard position == buffer.count else { throw refuse("has bytes after the object") }
    guard let type, let challenge, let origin else {
      throw RequestError(.malformedClientData, "clientDataJSON lacks one of type, challenge and origin")
    }
    return ClientData(
      type: type, challenge: challenge, origin: origin, crossOrigin: crossOrigin, topOrigin: topOrigin)
  }

  /// `true`, `false`, or nil (and nothing consumed) for anything else.
  mutating func boolean() throws(RequestError) -> Bool? {
    skipSpace()
    if literal("true") { return true }
    if literal("false") { return false }
    return nil
  }

  mutating func literal(_ word: StaticString) -> Bool {
    let count = word.utf8CodeUnitCount
    guard position + count <= buffer.count else { return false }
    for offset in 0..<count where buffer[position + offset] != word.utf8Start[offset] { return false }
    position += count
    return true
  }

  /// A JSON string, escapes decoded (surrogate pairs joined; a lone surrogate is refused).
  mutating func string() throws(RequestError) -> String {
    try expect(UInt8(ascii: "\""))
    var scalars = String.UnicodeScalarView()
    var plainStart = position
    func flush(_ end: Int, into scalars: inout String.UnicodeScalarView) {
      if end > plainStart {
        scalars.append(
          contentsOf: String(decoding: UnsafeRawBufferPointer(rebasing: buffer[plainStart..<end]), as: UTF8.self)
            .unicodeScalars)
      }
    }
    while true {
      guard position < buffer.count else { throw refuse("ends inside a string") }
      let byte = buffer[position]
      switch byte {
      case UInt8(ascii: "\""):
        flush(position, into: &scalars)
        position += 1
        return String(scalars)
      case UInt8(ascii: "\\"):
        flush(position, into: &scalars)
        position += 1
        guard position < buffer.count else { throw refuse("ends inside an escape") }
        let escape = buffer[position]
        position += 1
        switch escape {
        case UInt8(ascii: "\""): scalars.append("\"")
        case UInt8(ascii: "\\"): scalars.append("\\")
        case UInt8(ascii: "/"): scalars.append("/")
        case UInt8(ascii: "b"): scalars.append("\u{08}")
        case UInt8(ascii: "f"): scalars.append("\u{0C}")
        case UInt8(ascii: "n"): scalars.append("\n")
        case UInt8(ascii: "r"): scalars.append("\r")
        case UInt8(ascii: "t"): scalars.append("\t")
        case UInt8(ascii: "u"):
          var value = try hex4()
          if (0xD800..<0xDC00).contains(value) {
            guard literal("\\u") else { throw refuse("has a high surrogate without its low one") }
            let low = try hex4()
            guard (0xDC00..<0xE000).contains(low) else { throw refuse("has a broken surrogate pair") }
            value = 0x10000 + ((value - 0xD800) << 10) + (low - 0xDC00)
          } else if (0xDC00..<0xE000).contains(value) {
            throw refuse("has a lone low surrogate")
          }
          scalars.append(Unicode.Scalar(value)!)
        default: throw refuse("has an unknown escape")
        }
        plainStart = position
      case 0x00..<0x20:
        throw refuse("has a control character inside a string")
      default:
        position += 1
      }
    }
  }

  mutating func hex4() throws(RequestError) -> UInt32 {
    guard position + 4 <= buffer.count else { throw refuse("ends inside a \\u escape") }
    var value: UInt32 = 0
    for _ in 0..<4 {
      let byte = buffer[position]
      let digit: UInt8
      switch byte {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
      case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
      case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
      default: throw refuse("has a bad \\u escape")
      }
      value = value << 4 | UInt32(digit)
      position += 1
    }
    return value
  }

  /// Any JSON value, checked and skipped.
  mutating func skipValue(depth: Int) throws(RequestError) {
    guard depth <= ClientData.maxDepth else { throw refuse("nests deeper than \(ClientData.maxDepth) levels") }
    guard let first = peek() else { throw refuse("ends where a value should start") }
    switch first {
    case UInt8(ascii: "\""): _ = try string()
    case UInt8(ascii: "{"), UInt8(ascii: "["):
      let isObject = first == UInt8(ascii: "{")
      position += 1
      let close = isObject ? UInt8(ascii: "}") : UInt8(ascii: "]")
      if peek() == close {
        position += 1
        return
      }
      while true {
        if isObject {
          _ = try string()
          try expect(UInt8(ascii: ":"))
        }
        try skipValue(depth: depth + 1)
        guard let next = peek() else { throw refuse("ends inside a nested value") }
        position += 1
        if next == close { return }
        guard next == UInt8(ascii: ",") else { throw refuse("expected ',' in a nested value") }
      }
    case UInt8(ascii: "t"), UInt8(ascii: "f"):
      guard try boolean() != nil else { throw refuse("has an unknown literal") }
    case UInt8(ascii: "n"):
      guard literal("null") else { throw refuse("has an unknown literal") }
    default:
      try number()
    }
  }

  /// A JSON number (RFC 8259 section 6 grammar), skipped.
  mutating func number() throws(RequestError) {
    func digits(_ parser: inout JSONParser) -> Int {
      var count = 0
      while parser.position < parser.buffer.count, (0x30...0x39).contains(parser.buffer[parser.position]) {
        parser.position += 1
        count += 1
      }
      return count
    }
    if position < buffer.count, buffer[position] == UInt8(ascii: "-") { position += 1 }
    guard position < buffer.count else { throw refuse("has a bad number") }
    if buffer[position] == UInt8(ascii: "0") {
      position += 1
    } else {
      guard digits(&self) > 0 else { throw refuse("has a bad number") }
    }
    if position < buffer.count, buffer[position] == UInt8(ascii: ".") {
      position += 1
      guard digits(&self) > 0 else { throw refuse("has a bad number") }
    }
    if position < buffer.count, buffer[position] | 0x20 == UInt8(ascii: "e") {
      position += 1
      if position < buffer.count, buffer[position] == UInt8(ascii: "+") || buffer[position] == UInt8(ascii: "-") {
        position += 1
      }
      guard digits(&self) > 0 else { throw refuse("has a bad number") }
    }
  }
}
