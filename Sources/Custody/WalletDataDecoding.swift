#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Decoding wallet data: read item by item with a `CBORReader` (no CBOR tree is built, since
// the vault decodes every leaf preimage it is sent and this is on its hot path), then
// validated with the same `validate()` the encoder runs.

extension WalletData {
  /// Decodes and validates a wallet encoding. Everything that is not a valid wallet in
  /// deterministic form is refused, with the field and the rule named.
  public static func decode(_ bytes: [UInt8]) throws(WalletDataError) -> WalletData {
    do {
      return try bytes.withUnsafeBytes { raw in try decode(raw) }
    } catch let error as WalletDataError {
      throw error
    } catch {
      fatalError("WalletData.decode throws only WalletDataError")
    }
  }

  /// Decodes and validates the wallet encoding in `buffer`.
  ///
  /// When the input breaks a rule of deterministic CBOR anywhere, that is the error reported
  /// (found, on this error path only, by the strict tree decoder), even where reading field by
  /// field stumbled on something else first: a map with its keys swapped is an encoding
  /// problem, not a missing field.
  public static func decode(_ buffer: UnsafeRawBufferPointer) throws(WalletDataError) -> WalletData {
    let wallet = try WalletReader.read(buffer) { reader throws(WalletDataError) in try decodeFields(&reader) }
    try wallet.validate()
    return wallet
  }

  private static func decodeFields(_ reader: inout WalletReader) throws(WalletDataError) -> WalletData {
    var fields = try reader.object("wallet", domain: domain, version: currentVersion)
    // Arguments are evaluated left to right, so fields are read in key order.
    let wallet = WalletData(
      version: currentVersion,
      id: try reader.unsigned(0, "id", in: &fields),
      threshold: try reader.unsigned(1, "threshold", in: &fields),
      custodial: try reader.bool(2, "custodial", in: &fields),
      approvers: try reader.array(3, "approvers", in: &fields) { reader, path throws(WalletDataError) in
        try Approver.decode(&reader, path)
      },
      curve: try reader.either(4, "curve", in: &fields, Curve.secp256k1.rawValue, Curve.ed25519.rawValue)
        ? .secp256k1 : .ed25519,
      derivation: try reader.either(
        5, "derivation", in: &fields, DerivationScheme.bip32.rawValue, DerivationScheme.slip10.rawValue)
        ? .bip32 : .slip10,
      requestNonce: try reader.unsigned(6, "requestNonce", in: &fields),
      policy: try reader.require(7, "policy", in: &fields) { reader, path throws(WalletDataError) in
        try Policy.decode(&reader, path)
      },
      policyState: try reader.require(8, "policyState", in: &fields) { reader, path throws(WalletDataError) in
        try PolicyState.decode(&reader, path)
      })
    try reader.end(&fields)
    return wallet
  }
}

extension Approver {
  static func decode(_ reader: inout WalletReader, _ path: FieldPath) throws(WalletDataError) -> Approver {
    var fields = try reader.map(path)
    let id = try reader.text(0, "id", in: &fields)
    let credential: Credential
    if try reader.either(1, "kind", in: &fields, "passkey", "bot") {
      let credentialID = try reader.bytes(2, "credentialID", in: &fields)
      let publicKey = try reader.bytes(3, "publicKey", in: &fields)
      let rpID = try reader.text(4, "rpID", in: &fields)
      let origins = try reader.array(5, "allowedOrigins", in: &fields) { reader, path throws(WalletDataError) in
        try reader.text(path)
      }
      let signCount = try reader.unsigned(6, "signCount", in: &fields)
      guard signCount <= UInt64(UInt32.max) else {
        throw WalletDataError(.invalidValue, field: path["signCount"].text, "sign count \(signCount) exceeds 32 bits")
      }
      credential = .passkey(
        Passkey(
          credentialID: credentialID, publicKey: publicKey, rpID: rpID, allowedOrigins: origins,
          signCount: UInt32(signCount),
          requireUserVerification: try reader.bool(7, "requireUserVerification", in: &fields)))
    } else {
      let p256 = try reader.either(
        2, "algorithm", in: &fields, BotKey.Algorithm.p256.rawValue, BotKey.Algorithm.ed25519.rawValue)
      credential = .bot(
        BotKey(algorithm: p256 ? .p256 : .ed25519, publicKey: try reader.bytes(3, "publicKey", in: &fields)))
    }
    try reader.end(&fields)
    return Approver(id: id, credential: credential)
  }
}

extension Policy {
  static func decode(_ reader: inout WalletReader, _ path: FieldPath) throws(WalletDataError) -> Policy {
    var fields = try reader.map(path)
    var policy = Policy()
    policy.perTransactionLimit = try reader.optional(0, "perTransactionLimit", in: &fields) {
      reader, path throws(WalletDataError) in try reader.amount(path)
    }
    policy.rollingWindow = try reader.optional(1, "rollingWindow", in: &fields) {
      reader, path throws(WalletDataError) in
      try reader.pair(path)
      return RollingLimit(seconds: try reader.unsigned(path["seconds"]), limit: try reader.amount(path["limit"]))
    }
    policy.destinationAllowlist = try reader.array(2, "destinationAllowlist", in: &fields) {
      reader, path throws(WalletDataError) in try reader.text(path)
    }
    policy.timeOfDay = try reader.optional(3, "timeOfDay", in: &fields) { reader, path throws(WalletDataError) in
      try reader.pair(path)
      let from = try reader.unsigned(path)
      let to = try reader.unsigned(path)
      guard from < 1440, to < 1440 else {
        throw WalletDataError(.invalidValue, field: path.text, "expected two minutes of the day, 0 to 1439")
      }
      return TimeOfDayWindow(fromMinute: UInt16(from), toMinute: UInt16(to))
    }
    try reader.end(&fields)
    return policy
  }
}

extension PolicyState {
  static func decode(_ reader: inout WalletReader, _ path: FieldPath) throws(WalletDataError) -> PolicyState {
    var fields = try reader.map(path)
    let spent = try reader.array(0, "spent", in: &fields) { reader, path throws(WalletDataError) in
      try reader.pair(path)
      return Spend(timestamp: try reader.unsigned(path["timestamp"]), amount: try reader.amount(path["amount"]))
    }
    try reader.end(&fields)
    return PolicyState(spent: spent)
  }
}

/// A map being read field by field. Its keys are unsigned integers, read in increasing order:
/// for such keys that is the bytewise order of their encodings, which deterministic CBOR
/// requires.
struct MapFields {
  let path: FieldPath
  var remaining: Int
  /// The key read but not yet asked for.
  var pending: UInt64?
  var last: UInt64?
}

/// Reads wallet data item by item from deterministic CBOR, naming the field of each refusal.
struct WalletReader {
  var cbor: CBORReader

  init(_ buffer: UnsafeRawBufferPointer) throws(WalletDataError) {
    do {
      cbor = try CBORReader(buffer)
    } catch {
      throw WalletDataError(.cbor, field: "", "not deterministic CBOR: \(error)")
    }
  }

  /// Reads one whole object from `buffer` with `body`. When the input breaks a rule of
  /// deterministic CBOR anywhere, that is the error reported (found, on this error path only,
  /// by the strict tree decoder), even where reading field by field stumbled on something else
  /// first: a map with its keys swapped is an encoding problem, not a missing field.
  static func read<T>(
    _ buffer: UnsafeRawBufferPointer, _ body: (inout WalletReader) throws(WalletDataError) -> T
  ) throws(WalletDataError) -> T {
    do {
      var reader = try WalletReader(buffer)
      let value = try body(&reader)
      try reader.finish()
      return value
    } catch  where error.code != .cbor {
      do {
        _ = try CBORDecoder().decode(buffer)
      } catch let encoding {
        throw WalletDataError(.cbor, field: "", "not deterministic CBOR: \(encoding)")
      }
      throw error
    }
  }

  /// The opening every Custos object shares: a 3-item array of the domain tag, the version
  /// (which must be `version`) and the fields map, whose reading this starts.
  mutating func object(_ kind: String, domain: String, version: UInt64) throws(WalletDataError) -> MapFields {
    let whole = FieldPath()
    let top = try head(whole)
    guard top.major == 4, top.argument == 3 else {
      throw WalletDataError(
        .wrongDomain, field: "",
        "a \(kind) is a 3-item array [\"\(domain)\", version, fields]; got \(top.major == 4 ? "an array of \(top.argument)" : top.kindName)"
      )
    }
    let tag = try head(whole)
    guard tag.major == 3, try text(of: tag, whole) == domain else {
      throw WalletDataError(.wrongDomain, field: "", "the array does not open with the domain tag \"\(domain)\"")
    }
    let found = try unsigned(FieldPath("version"))
    guard found == version else {
      throw WalletDataError(
        .unsupportedVersion, field: "version", "\(kind) version \(found) is not supported (this build reads \(version))"
      )
    }
    return try map(whole)
  }

  func wrap(_ error: CBORError, _ path: FieldPath) -> WalletDataError {
    WalletDataError(.cbor, field: path.text, "not deterministic CBOR: \(error)")
  }

  private func wrongType(_ path: FieldPath, _ expected: String, _ head: CBORReader.Head) -> WalletDataError {
    WalletDataError(.wrongType, field: path.text, "expected \(expected), got \(head.kindName)")
  }

  mutating func head(_ path: FieldPath) throws(WalletDataError) -> CBORReader.Head {
    do { return try cbor.head() } catch { throw wrap(error, path) }
  }

  mutating func finish() throws(WalletDataError) {
    do { try cbor.finish() } catch { throw wrap(error, FieldPath()) }
  }

  mutating func expect(
    _ major: UInt8, _ path: FieldPath, _ expected: String
  ) throws(WalletDataError)
    -> CBORReader.Head
  {
    let head = try head(path)
    guard head.major == major else { throw wrongType(path, expected, head) }
    return head
  }

  // MARK: Values

  mutating func text(of head: CBORReader.Head, _ path: FieldPath) throws(WalletDataError) -> String {
    do { return try cbor.text(of: head) } catch { throw wrap(error, path) }
  }

  mutating func unsigned(_ path: FieldPath) throws(WalletDataError) -> UInt64 {
    try expect(0, path, "unsigned integer").argument
  }

  mutating func bool(_ path: FieldPath) throws(WalletDataError) -> Bool {
    let head = try head(path)
    guard head.major == 7, head.argument != 22 else { throw wrongType(path, "boolean", head) }
    return head.argument == 21
  }

  mutating func text(_ path: FieldPath) throws(WalletDataError) -> String {
    try text(of: try expect(3, path, "text string"), path)
  }

  mutating func bytes(_ path: FieldPath) throws(WalletDataError) -> [UInt8] {
    let head = try expect(2, path, "byte string")
    do { return try cbor.bytes(of: head) } catch { throw wrap(error, path) }
  }

  /// An amount: a byte string with no leading zero byte, at most 32 bytes.
  mutating func amount(_ path: FieldPath) throws(WalletDataError) -> Amount {
    let head = try head(path)
    guard head.major == 2 else {
      throw WalletDataError(.wrongType, field: path.text, "an amount is a byte string, not \(head.kindName)")
    }
    let range: Range<Int>
    do { range = try cbor.content(of: head) } catch { throw wrap(error, path) }
    let magnitude = UnsafeRawBufferPointer(rebasing: cbor.buffer[range])
    guard magnitude.first != 0 else {
      throw WalletDataError(
        .invalidValue, field: path.text, "an amount has no leading zero byte (zero is the empty string)")
    }
    guard let amount = Amount(bigEndian: magnitude) else {
      throw WalletDataError(.invalidValue, field: path.text, "an amount has at most 32 bytes, not \(magnitude.count)")
    }
    return amount
  }

  /// The head of a 2-item array; its items follow.
  mutating func pair(_ path: FieldPath) throws(WalletDataError) {
    let head = try head(path)
    guard head.major == 4, head.argument == 2 else {
      throw WalletDataError(
        .wrongType, field: path.text,
        "expected a 2-item array, got \(head.major == 4 ? "\(head.argument) items" : head.kindName)")
    }
  }

  /// The items of an array, each read by `element` with its path.
  @inline(__always)
  mutating func array<T>(
    _ path: FieldPath, _ element: (inout WalletReader, FieldPath) throws(WalletDataError) -> T
  ) throws(WalletDataError) -> [T] {
    let head = try expect(4, path, "array")
    let count: Int
    do { count = try cbor.count(of: head) } catch { throw wrap(error, path) }
    var items = [T]()
    items.reserveCapacity(count)
    for index in 0..<count { items.append(try element(&self, path.element(index))) }
    return items
  }

  // MARK: Maps

  mutating func map(_ path: FieldPath) throws(WalletDataError) -> MapFields {
    let head = try head(path)
    guard head.major == 5 else {
      throw WalletDataError(.wrongType, field: path.text, "expected a map, got \(head.kindName)")
    }
    do {
      return MapFields(path: path, remaining: try cbor.count(of: head, itemSize: 2))
    } catch {
      throw wrap(error, path)
    }
  }

  /// Whether field `key` comes next in `map` (its key is then consumed); false when the map
  /// does not have it. A key below `key` that nobody asked for is an unknown field.
  mutating func has(_ key: UInt64, in map: inout MapFields) throws(WalletDataError) -> Bool {
    if map.pending == nil && map.remaining > 0 {
      let head = try head(map.path)
      guard head.major == 0 else {
        throw WalletDataError(
          .unknownField, field: map.path.text, "a \(head.kindName) key; field keys are unsigned integers")
      }
      if let last = map.last, head.argument <= last {
        throw wrap(
          CBORError(
            head.argument == last ? .duplicateMapKey : .unsortedMapKeys, offset: head.start,
            head.argument == last
              ? "map key \(last) appears twice"
              : "map key \(head.argument) follows key \(last) (keys must be in bytewise order)"),
          map.path)
      }
      map.pending = head.argument
      map.last = head.argument
      map.remaining -= 1
    }
    guard let pending = map.pending else { return false }
    if pending == key {
      map.pending = nil
      return true
    }
    if pending < key { throw WalletDataError(.unknownField, field: map.path.text, "unknown field \(pending)") }
    return false
  }

  /// Refuses what is left of `map`: fields nobody asked for.
  mutating func end(_ map: inout MapFields) throws(WalletDataError) {
    if let pending = map.pending {
      throw WalletDataError(.unknownField, field: map.path.text, "unknown field \(pending)")
    }
    if map.remaining > 0 {
      let head = try head(map.path)
      throw WalletDataError(
        .unknownField, field: map.path.text,
        "unknown field \(head.major == 0 ? "\(head.argument)" : "with a \(head.kindName) key")")
    }
  }

  @inline(__always)
  mutating func require<T>(
    _ key: UInt64, _ field: StaticString, in map: inout MapFields,
    _ value: (inout WalletReader, FieldPath) throws(WalletDataError) -> T
  ) throws(WalletDataError) -> T {
    guard try has(key, in: &map) else {
      throw WalletDataError(.missingField, field: map.path[field].text, "field \(key) (\(field)) is missing")
    }
    return try value(&self, map.path[field])
  }

  @inline(__always)
  mutating func optional<T>(
    _ key: UInt64, _ field: StaticString, in map: inout MapFields,
    _ value: (inout WalletReader, FieldPath) throws(WalletDataError) -> T
  ) throws(WalletDataError) -> T? {
    guard try has(key, in: &map) else { return nil }
    return try value(&self, map.path[field])
  }

  mutating func unsigned(
    _ key: UInt64, _ field: StaticString, in map: inout MapFields
  ) throws(WalletDataError) -> UInt64 {
    try require(key, field, in: &map) { reader, path throws(WalletDataError) in try reader.unsigned(path) }
  }

  mutating func bool(_ key: UInt64, _ field: StaticString, in map: inout MapFields) throws(WalletDataError) -> Bool {
    try require(key, field, in: &map) { reader, path throws(WalletDataError) in try reader.bool(path) }
  }

  mutating func text(_ key: UInt64, _ field: StaticString, in map: inout MapFields) throws(WalletDataError) -> String {
    try require(key, field, in: &map) { reader, path throws(WalletDataError) in try reader.text(path) }
  }

  mutating func bytes(_ key: UInt64, _ field: StaticString, in map: inout MapFields) throws(WalletDataError) -> [UInt8]
  {
    try require(key, field, in: &map) { reader, path throws(WalletDataError) in try reader.bytes(path) }
  }

  @inline(__always)
  mutating func array<T>(
    _ key: UInt64, _ field: StaticString, in map: inout MapFields,
    _ element: (inout WalletReader, FieldPath) throws(WalletDataError) -> T
  ) throws(WalletDataError) -> [T] {
    try require(key, field, in: &map) { reader, path throws(WalletDataError) in try reader.array(path, element) }
  }

  /// A text field that must be `first` or `second` (every choice in wallet data is between
  /// two names): true for `first`. Matched on the bytes, so no string is built for it.
  @inline(__always)
  mutating func either(
    _ key: UInt64, _ field: StaticString, in map: inout MapFields, _ first: String, _ second: String
  ) throws(WalletDataError) -> Bool {
    try require(key, field, in: &map) { reader, path throws(WalletDataError) in
      let head = try reader.expect(3, path, "text string")
      let range: Range<Int>
      do throws(CBORError) { range = try reader.cbor.content(of: head) } catch { throw reader.wrap(error, path) }
      let bytes = UnsafeRawBufferPointer(rebasing: reader.cbor.buffer[range])
      if sameBytes(first, bytes) { return true }
      if sameBytes(second, bytes) { return false }
      throw WalletDataError(
        .invalidValue, field: path.text,
        "'\(String(decoding: bytes, as: UTF8.self))' is neither '\(first)' nor '\(second)'")
    }
  }

}

/// Whether `text`'s UTF-8 is exactly `bytes`.
@inline(__always)
func sameBytes(_ text: String, _ bytes: UnsafeRawBufferPointer) -> Bool {
  var text = text
  return text.withUTF8 { utf8 in
    utf8.count == bytes.count && (utf8.isEmpty || memcmp(utf8.baseAddress!, bytes.baseAddress!, utf8.count) == 0)
  }
}
