/// The data of one wallet: what a Merkle leaf commits to (`walletHash = SHA-256(encoding)`).
///
/// The whitepaper's fields (version, id, threshold, custodial, approvers) plus what the vault
/// enforces: the curve and derivation scheme, the per-wallet request nonce, and the policy with
/// its state. The encoding is deterministic CBOR with a domain tag and a version:
///
/// ```
/// wallet   = ["custos/wallet", 1, {
///              0: id (uint, >= 1),            1: threshold (uint),
///              2: custodial (bool),           3: [approver, ...] (sorted by id, distinct),
///              4: curve ("secp256k1" / "ed25519"),
///              5: derivation ("bip32" / "slip10"),
///              6: request nonce (uint, the last one used),
///              7: policy,                     8: policy state }]
/// approver = {0: id (text), 1: "passkey", 2: credential id (bytes), 3: COSE key (bytes),
///             4: RP id (text), 5: [origin, ...] (sorted, distinct), 6: sign count (uint32),
///             7: require user verification (bool)}
///          / {0: id (text), 1: "bot", 2: "p256" / "ed25519", 3: raw public key (bytes)}
/// policy   = {?0: per-transaction limit (amount), ?1: [window seconds, window limit],
///             2: [destination, ...] (sorted, distinct; empty = any), ?3: [from minute, to minute]}
/// state    = {0: [[timestamp, amount], ...] (timestamps non-decreasing)}
/// amount   = bytes: big-endian magnitude, no leading zero byte, at most 32 bytes
/// ```
///
/// Absent optional fields are omitted (never null). `WalletData.decode` refuses anything that
/// is not exactly this shape in deterministic form, so a wallet has one encoding:
/// `decode(encode(x)) == x` and `encode(decode(b)) == b`.
public struct WalletData: Sendable, Hashable {
  /// The text that opens every wallet encoding, so no other Custos object can pass for one.
  public static let domain = "custos/wallet"
  /// The version this build writes and reads.
  public static let currentVersion: UInt64 = 1
  /// Most approvers on one wallet.
  public static let maxApprovers = 32

  /// Layout version of the encoding.
  public var version: UInt64
  /// Assigned by the vault in insertion order, from 1 (0 is the tree's initial empty leaf).
  public var id: UInt64
  /// Distinct approvals a request needs, 1 ... approvers.count.
  public var threshold: UInt64
  /// Whether the vault holds the whole key (true) or one share of a 2-party scheme (false).
  public var custodial: Bool
  /// Who may approve, sorted by approver id.
  public var approvers: [Approver]
  public var curve: Curve
  public var derivation: DerivationScheme
  /// The last request nonce the vault accepted; the next must be greater.
  public var requestNonce: UInt64
  public var policy: Policy
  public var policyState: PolicyState

  public init(
    version: UInt64 = WalletData.currentVersion, id: UInt64, threshold: UInt64, custodial: Bool,
    approvers: [Approver], curve: Curve, derivation: DerivationScheme, requestNonce: UInt64 = 0,
    policy: Policy = Policy(), policyState: PolicyState = PolicyState()
  ) {
    self.version = version
    self.id = id
    self.threshold = threshold
    self.custodial = custodial
    self.approvers = approvers
    self.curve = curve
    self.derivation = derivation
    self.requestNonce = requestNonce
    self.policy = policy
    self.policyState = policyState
  }

  /// The signing curve of the wallet's keys.
  public enum Curve: String, Sendable, Hashable, CaseIterable {
    case secp256k1
    case ed25519
  }

  /// How keys are derived from the wallet seed.
  public enum DerivationScheme: String, Sendable, Hashable, CaseIterable {
    /// BIP-32 (secp256k1 only).
    case bip32
    /// SLIP-10 (secp256k1 or ed25519).
    case slip10
  }

  // MARK: Encoding

  /// The deterministic CBOR encoding. Fails when the wallet is not valid (see `validate()`).
  public func encoded() throws(WalletDataError) -> [UInt8] {
    try validate()
    do {
      return try cbor.encoded()
    } catch {
      throw WalletDataError(.cbor, field: "", "cannot encode: \(error)")
    }
  }

  /// `SHA-256(encoded())`: the wallet's Merkle leaf.
  public func walletHash() throws(WalletDataError) -> Hash256 {
    Hash256.sha256(try encoded())
  }

  /// The wallet as a CBOR value (not validated).
  public var cbor: CBOR {
    .array([
      .text(WalletData.domain), .unsigned(version),
      CBOR.map([
        (0, .unsigned(id)), (1, .unsigned(threshold)), (2, .bool(custodial)), (3, .array(approvers.map(\.cbor))),
        (4, .text(curve.rawValue)), (5, .text(derivation.rawValue)), (6, .unsigned(requestNonce)),
        (7, policy.cbor), (8, policyState.cbor),
      ]),
    ])
  }

  // MARK: Validation

  /// Checks every rule a wallet must meet to be encoded or accepted.
  public func validate() throws(WalletDataError) {
    guard version == WalletData.currentVersion else {
      throw WalletDataError(.unsupportedVersion, field: "version", "version \(version) is not supported")
    }
    guard id >= 1 else {
      throw WalletDataError(.invalidValue, field: "id", "wallet ids start at 1 (0 is the tree's initial empty leaf)")
    }
    guard !approvers.isEmpty, approvers.count <= WalletData.maxApprovers else {
      throw WalletDataError(
        .invalidValue, field: "approvers",
        "a wallet has 1 to \(WalletData.maxApprovers) approvers, not \(approvers.count)")
    }
    guard threshold >= 1, threshold <= UInt64(approvers.count) else {
      throw WalletDataError(
        .invalidValue, field: "threshold",
        "threshold \(threshold) is not between 1 and the \(approvers.count) approvers")
    }
    if curve == .ed25519 && derivation == .bip32 {
      throw WalletDataError(
        .invalidValue, field: "derivation", "BIP-32 derives secp256k1 keys only; ed25519 wallets use SLIP-10")
    }
    for (index, approver) in approvers.enumerated() {
      let path = FieldPath("approvers", index)
      try approver.validate(path)
      if index > 0 {
        let previous = approvers[index - 1]
        guard previous.id.utf8.lexicographicallyPrecedes(approver.id.utf8) else {
          throw WalletDataError(
            .invalidValue, field: path["id"].text,
            "approver ids must be distinct and sorted; '\(approver.id)' comes after '\(previous.id)'")
        }
      }
      // One key, one approver: the same credential or key under two names would count twice.
      for earlier in 0..<index where approvers[earlier].sharesIdentity(with: approver) {
        throw WalletDataError(
          .invalidValue, field: path.text,
          "approver '\(approver.id)' has the same credential or key as '\(approvers[earlier].id)'")
      }
    }
    try policy.validate(FieldPath("policy"))
    try policyState.validate(FieldPath("policyState"))
  }
}

// MARK: - Approvers

/// Someone (a person's passkey) or something (a bot's key) whose approval counts toward a
/// wallet's threshold. The id is the approver's stable name within the wallet.
public struct Approver: Sendable, Hashable {
  /// Stable name, 1 to 128 bytes of UTF-8 without control characters.
  public var id: String
  public var credential: Credential

  public init(id: String, credential: Credential) {
    self.id = id
    self.credential = credential
  }

  /// How an approver proves an approval.
  public enum Credential: Sendable, Hashable {
    case passkey(Passkey)
    case bot(BotKey)
  }

  /// The approver as a CBOR value (not validated).
  public var cbor: CBOR {
    switch credential {
    case .passkey(let passkey):
      return .map([
        (0, .text(id)), (1, .text("passkey")), (2, .bytes(passkey.credentialID)), (3, .bytes(passkey.publicKey)),
        (4, .text(passkey.rpID)), (5, .array(passkey.allowedOrigins.map(CBOR.text))),
        (6, .unsigned(UInt64(passkey.signCount))), (7, .bool(passkey.requireUserVerification)),
      ])
    case .bot(let bot):
      return .map([(0, .text(id)), (1, .text("bot")), (2, .text(bot.algorithm.rawValue)), (3, .bytes(bot.publicKey))])
    }
  }

  func validate(_ path: FieldPath) throws(WalletDataError) {
    try checkText(id, path["id"], maxBytes: 128)
    switch credential {
    case .passkey(let passkey): try passkey.validate(path)
    case .bot(let bot): try bot.validate(path)
    }
  }

  /// Whether the two approvers have the same credential id (passkeys) or key (bots).
  func sharesIdentity(with other: Approver) -> Bool {
    switch (credential, other.credential) {
    case (.passkey(let a), .passkey(let b)): a.credentialID == b.credentialID
    case (.bot(let a), .bot(let b)): a.publicKey == b.publicKey
    default: false
    }
  }
}

/// A WebAuthn credential (DESIGN.md section 8): the vault checks assertions against it.
public struct Passkey: Sendable, Hashable {
  /// The credential id the authenticator gave at registration (1 to 1023 bytes).
  public var credentialID: [UInt8]
  /// The credential's COSE_Key as registered: ES256 (EC2, P-256) or EdDSA (OKP, Ed25519).
  public var publicKey: [UInt8]
  /// The relying party id whose SHA-256 the authenticator data must carry.
  public var rpID: String
  /// Origins a client data JSON may name, sorted and distinct (1 to 16).
  public var allowedOrigins: [String]
  /// The last signature counter seen (0 when the authenticator keeps none).
  public var signCount: UInt32
  /// Whether assertions must carry the UV flag.
  public var requireUserVerification: Bool

  public init(
    credentialID: [UInt8], publicKey: [UInt8], rpID: String, allowedOrigins: [String], signCount: UInt32 = 0,
    requireUserVerification: Bool = true
  ) {
    self.credentialID = credentialID
    self.publicKey = publicKey
    self.rpID = rpID
    self.allowedOrigins = allowedOrigins
    self.signCount = signCount
    self.requireUserVerification = requireUserVerification
  }

  /// The COSE key, parsed (its algorithm and raw public key).
  public func coseKey() throws(WalletDataError) -> COSEPublicKey {
    try COSEPublicKey(publicKey)
  }

  func validate(_ path: FieldPath) throws(WalletDataError) {
    guard (1...1023).contains(credentialID.count) else {
      throw WalletDataError(
        .invalidValue, field: path["credentialID"].text,
        "a credential id has 1 to 1023 bytes, not \(credentialID.count)")
    }
    try COSEPublicKey.check(publicKey, path["publicKey"])
    try checkText(rpID, path["rpID"], maxBytes: 253)
    guard (1...16).contains(allowedOrigins.count) else {
      throw WalletDataError(
        .invalidValue, field: path["allowedOrigins"].text,
        "a passkey names 1 to 16 origins, not \(allowedOrigins.count)")
    }
    try checkSortedDistinct(allowedOrigins, path["allowedOrigins"], maxBytes: 512)
  }
}

/// A COSE_Key (RFC 9053) of the two algorithms passkeys may use here.
public struct COSEPublicKey: Sendable, Hashable {
  public enum Algorithm: Int64, Sendable, Hashable {
    /// ECDSA with SHA-256 on P-256 (COSE alg -7).
    case es256 = -7
    /// EdDSA on Ed25519 (COSE alg -8).
    case edDSA = -8
  }
  public let algorithm: Algorithm
  /// ES256: the uncompressed SEC1 point 0x04 || x || y (65 bytes). EdDSA: the 32-byte key.
  public let rawPublicKey: [UInt8]

  /// Parses `bytes` as a deterministic CBOR COSE_Key: kty, alg, crv and coordinates, nothing
  /// else beyond an optional kid.
  public init(_ bytes: [UInt8]) throws(WalletDataError) {
    let parsed = try COSEPublicKey.parse(bytes, FieldPath("publicKey"))
    algorithm = parsed.algorithm
    rawPublicKey =
      parsed.algorithm == .es256
      ? [0x04] + bytes[parsed.x] + bytes[parsed.y!] : Array(bytes[parsed.x])
  }

  /// Checks `bytes` is a COSE key this type accepts, without building it.
  static func check(_ bytes: [UInt8], _ path: FieldPath) throws(WalletDataError) {
    _ = try parse(bytes, path)
  }

  /// The algorithm and where the coordinates are in `bytes`.
  static func parse(
    _ bytes: [UInt8], _ path: FieldPath
  ) throws(WalletDataError) -> (algorithm: Algorithm, x: Range<Int>, y: Range<Int>?) {
    let result = bytes.withUnsafeBytes { raw in
      Result { () throws(WalletDataError) -> (algorithm: Algorithm, x: Range<Int>, y: Range<Int>?) in
        try parse(raw, path)
      }
    }
    return try result.get()
  }

  private static func parse(
    _ buffer: UnsafeRawBufferPointer, _ path: FieldPath
  ) throws(WalletDataError) -> (algorithm: Algorithm, x: Range<Int>, y: Range<Int>?) {
    // Labels 1 (kty), 2 (kid), 3 (alg), -1 (crv), -2 (x), -3 (y) have the heads 0x01 0x02 0x03
    // 0x20 0x21 0x22, so bytewise order is this order.
    var kty: Int64? = nil
    var alg: Int64? = nil
    var crv: Int64? = nil
    var x: Range<Int>? = nil
    var y: Range<Int>? = nil
    func refuse(_ reason: String) -> WalletDataError { WalletDataError(.invalidValue, field: path.text, reason) }
    do {
      var reader = try CBORReader(buffer, limits: .init(maxDepth: 2, maxLength: 64, maxInputSize: 256))
      let map = try reader.head()
      guard map.major == 5 else { throw refuse("a COSE key is a map, not \(map.kindName)") }
      var previous = -1
      for _ in 0..<(try reader.count(of: map, itemSize: 2)) {
        let key = try reader.head()
        let slot: Int
        switch (key.major, key.argument) {
        case (0, 1...3): slot = Int(key.argument) - 1
        case (1, 0...2): slot = Int(key.argument) + 3
        default: throw refuse("the COSE key has an unexpected label (a \(key.kindName) \(key.argument))")
        }
        guard slot > previous else {
          throw CBORError(
            slot == previous ? .duplicateMapKey : .unsortedMapKeys, offset: key.start, "COSE key labels out of order")
        }
        previous = slot
        let value = try reader.head()
        var integer: Int64? = nil
        var content: Range<Int>? = nil
        switch value.major {
        case 0, 1:
          guard value.argument < UInt64(Int64.max) else { throw refuse("a COSE key value is out of range") }
          integer = value.major == 0 ? Int64(value.argument) : -1 - Int64(value.argument)
        case 2, 3: content = try reader.content(of: value)
        default: throw refuse("the COSE key holds a \(value.kindName); only integers and strings")
        }
        switch slot {
        case 0: kty = integer
        case 2: alg = integer
        case 3: crv = integer
        case 4: x = value.major == 2 ? content : nil
        case 5: y = value.major == 2 ? content : 0..<0
        default: break  // kid
        }
      }
      try reader.finish()
    } catch let error as WalletDataError {
      throw error
    } catch {
      throw refuse("the COSE key is not deterministic CBOR: \(error)")
    }
    switch (kty, alg, crv) {
    case (2, -7, 1):  // EC2, ES256, P-256
      guard let x, let y, x.count == 32, y.count == 32 else {
        throw refuse("an ES256 COSE key needs 32-byte x and y coordinates")
      }
      return (.es256, x, y)
    case (1, -8, 6):  // OKP, EdDSA, Ed25519
      guard let x, x.count == 32, y == nil else { throw refuse("an EdDSA COSE key needs a 32-byte x and no y") }
      return (.edDSA, x, nil)
    default:
      throw refuse(
        "the COSE key is neither ES256 on P-256 (kty 2, alg -7, crv 1) nor EdDSA on Ed25519 (kty 1, alg -8, crv 6)")
    }
  }

  /// The COSE_Key encoding of a raw key: `0x04 || x || y` for ES256, 32 bytes for EdDSA.
  public static func encode(_ algorithm: Algorithm, rawPublicKey: [UInt8]) throws(WalletDataError) -> [UInt8] {
    let item: CBOR
    switch algorithm {
    case .es256:
      guard rawPublicKey.count == 65, rawPublicKey[0] == 0x04 else {
        throw WalletDataError(.invalidValue, field: "publicKey", "an ES256 key is 65 bytes 0x04 || x || y")
      }
      item = .map([
        CBOR.Entry(.integer(1), .integer(2)), CBOR.Entry(.integer(3), .integer(-7)),
        CBOR.Entry(.integer(-1), .integer(1)),
        CBOR.Entry(.integer(-2), .bytes(Array(rawPublicKey[1..<33]))),
        CBOR.Entry(.integer(-3), .bytes(Array(rawPublicKey[33..<65]))),
      ])
    case .edDSA:
      guard rawPublicKey.count == 32 else {
        throw WalletDataError(.invalidValue, field: "publicKey", "an Ed25519 key is 32 bytes")
      }
      item = .map([
        CBOR.Entry(.integer(1), .integer(1)), CBOR.Entry(.integer(3), .integer(-8)),
        CBOR.Entry(.integer(-1), .integer(6)),
        CBOR.Entry(.integer(-2), .bytes(rawPublicKey)),
      ])
    }
    do { return try item.encoded() } catch { throw WalletDataError(.cbor, field: "publicKey", "\(error)") }
  }
}

/// A bot approver's raw public key.
public struct BotKey: Sendable, Hashable {
  public enum Algorithm: String, Sendable, Hashable, CaseIterable {
    /// ECDSA P-256; the key is the uncompressed SEC1 point (65 bytes, 0x04 || x || y).
    case p256
    /// Ed25519; the key is 32 bytes.
    case ed25519
  }
  public var algorithm: Algorithm
  public var publicKey: [UInt8]

  public init(algorithm: Algorithm, publicKey: [UInt8]) {
    self.algorithm = algorithm
    self.publicKey = publicKey
  }

  func validate(_ path: FieldPath) throws(WalletDataError) {
    switch algorithm {
    case .p256:
      guard publicKey.count == 65, publicKey[0] == 0x04 else {
        throw WalletDataError(
          .invalidValue, field: path["publicKey"].text,
          "a P-256 bot key is the 65-byte uncompressed point 0x04 || x || y (one form, so one key is one approver)")
      }
    case .ed25519:
      guard publicKey.count == 32 else {
        throw WalletDataError(
          .invalidValue, field: path["publicKey"].text, "an Ed25519 bot key has 32 bytes, not \(publicKey.count)")
      }
    }
  }
}

// MARK: - Policy

/// What the vault enforces on a wallet's requests (the approvals issue fills in the checks).
public struct Policy: Sendable, Hashable {
  /// Largest amount of one transaction; nil = no limit.
  public var perTransactionLimit: Amount?
  /// Most spent within a rolling window; nil = no window.
  public var rollingWindow: RollingLimit?
  /// Destinations a transaction may pay, sorted and distinct; empty = any.
  public var destinationAllowlist: [String]
  /// When in the day (UTC) requests may be signed; nil = any time.
  public var timeOfDay: TimeOfDayWindow?

  public init(
    perTransactionLimit: Amount? = nil, rollingWindow: RollingLimit? = nil, destinationAllowlist: [String] = [],
    timeOfDay: TimeOfDayWindow? = nil
  ) {
    self.perTransactionLimit = perTransactionLimit
    self.rollingWindow = rollingWindow
    self.destinationAllowlist = destinationAllowlist
    self.timeOfDay = timeOfDay
  }

  /// The policy as a CBOR value (not validated).
  public var cbor: CBOR {
    var fields = [(UInt64, CBOR)]()
    if let perTransactionLimit { fields.append((0, amountCBOR(perTransactionLimit))) }
    if let rollingWindow {
      fields.append((1, .array([.unsigned(rollingWindow.seconds), amountCBOR(rollingWindow.limit)])))
    }
    fields.append((2, .array(destinationAllowlist.map(CBOR.text))))
    if let timeOfDay {
      fields.append((3, .array([.unsigned(UInt64(timeOfDay.fromMinute)), .unsigned(UInt64(timeOfDay.toMinute))])))
    }
    return .map(fields)
  }

  func validate(_ path: FieldPath) throws(WalletDataError) {
    if let rollingWindow, rollingWindow.seconds == 0 {
      throw WalletDataError(
        .invalidValue, field: path["rollingWindow"]["seconds"].text, "a rolling window lasts at least one second")
    }
    guard destinationAllowlist.count <= 1024 else {
      throw WalletDataError(
        .invalidValue, field: path["destinationAllowlist"].text,
        "at most 1024 destinations, not \(destinationAllowlist.count)")
    }
    try checkSortedDistinct(destinationAllowlist, path["destinationAllowlist"], maxBytes: 256)
    if let timeOfDay {
      guard timeOfDay.fromMinute < 1440, timeOfDay.toMinute < 1440, timeOfDay.fromMinute != timeOfDay.toMinute else {
        throw WalletDataError(
          .invalidValue, field: path["timeOfDay"].text,
          "minutes are 0 to 1439 and from != to (omit the window to allow any time); got \(timeOfDay.fromMinute)-\(timeOfDay.toMinute)"
        )
      }
    }
  }
}

/// At most `limit` spent in any `seconds`-long window.
public struct RollingLimit: Sendable, Hashable {
  public var seconds: UInt64
  public var limit: Amount
  public init(seconds: UInt64, limit: Amount) {
    self.seconds = seconds
    self.limit = limit
  }
}

/// Minutes of the day in UTC, from `fromMinute` (included) to `toMinute` (excluded), wrapping
/// past midnight when `fromMinute > toMinute`.
public struct TimeOfDayWindow: Sendable, Hashable {
  public var fromMinute: UInt16
  public var toMinute: UInt16
  public init(fromMinute: UInt16, toMinute: UInt16) {
    self.fromMinute = fromMinute
    self.toMinute = toMinute
  }

  /// `minute` of the day as a 24-hour clock reads it: `08:05`.
  public static func clockText(_ minute: UInt16) -> String {
    let hours = minute / 60
    let minutes = minute % 60
    return (hours < 10 ? "0" : "") + "\(hours):" + (minutes < 10 ? "0" : "") + "\(minutes)"
  }

  /// Whether `minute` (0 ... 1439) falls in the window.
  public func contains(minute: UInt16) -> Bool {
    fromMinute < toMinute
      ? (minute >= fromMinute && minute < toMinute) : (minute >= fromMinute || minute < toMinute)
  }
}

/// What the policy needs to remember between requests.
public struct PolicyState: Sendable, Hashable {
  /// Most remembered spends.
  public static let maxSpends = 1024

  /// Spends still inside the rolling window, oldest first.
  public var spent: [Spend]

  public init(spent: [Spend] = []) {
    self.spent = spent
  }

  /// One signed transaction's amount and when (Unix seconds, UTC).
  public struct Spend: Sendable, Hashable {
    public var timestamp: UInt64
    public var amount: Amount
    public init(timestamp: UInt64, amount: Amount) {
      self.timestamp = timestamp
      self.amount = amount
    }
  }

  /// The state as a CBOR value (not validated).
  public var cbor: CBOR {
    .map([(0, .array(spent.map { .array([.unsigned($0.timestamp), amountCBOR($0.amount)]) }))])
  }

  func validate(_ path: FieldPath) throws(WalletDataError) {
    guard spent.count <= PolicyState.maxSpends else {
      throw WalletDataError(
        .invalidValue, field: path["spent"].text, "at most \(PolicyState.maxSpends) spends, not \(spent.count)")
    }
    for (index, spend) in spent.enumerated() {
      if spend.amount == .zero {
        throw WalletDataError(.invalidValue, field: path["spent", index]["amount"].text, "a recorded spend is not zero")
      }
      if index > 0 && spent[index - 1].timestamp > spend.timestamp {
        throw WalletDataError(
          .invalidValue, field: path["spent", index]["timestamp"].text, "spends are in time order, oldest first")
      }
    }
  }
}

// MARK: - Errors

/// A wallet encoding or value that is refused: which field and which rule.
public struct WalletDataError: Error, Hashable, Sendable, CustomStringConvertible {
  /// What kind of failure this is. Extensible: new codes are added as static members.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public var description: String { name }

    /// Not deterministic CBOR (the message carries the CBOR rule and offset).
    public static let cbor = Code("cbor")
    /// Not a wallet: the domain tag or the outer shape is wrong.
    public static let wrongDomain = Code("wrongDomain")
    public static let unsupportedVersion = Code("unsupportedVersion")
    public static let missingField = Code("missingField")
    public static let unknownField = Code("unknownField")
    public static let wrongType = Code("wrongType")
    public static let invalidValue = Code("invalidValue")
  }

  public let code: Code
  /// The field, as a path (`approvers[1].rpID`); empty for the whole wallet.
  public let field: String
  public let reason: String

  public init(_ code: Code, field: String, _ reason: String) {
    self.code = code
    self.field = field
    self.reason = reason
  }

  public var description: String {
    field.isEmpty ? "wallet data \(code): \(reason)" : "wallet data \(code) at \(field): \(reason)"
  }
}

// MARK: - Helpers

func amountCBOR(_ amount: Amount) -> CBOR { .bytes(amount.bigEndianBytes) }

/// Where a field is (`approvers[1].allowedOrigins[0]`), put into words only when an error
/// names it: reading a wallet touches dozens of fields, and the vault reads a wallet for every
/// leaf it is sent, so building this text for each would cost an allocation each on its hot
/// path. Three names deep, the first two optionally indexed, is as deep as wallet data goes.
struct FieldPath {
  // Names are literals (StaticString), so a path is a few words copied by value: no
  // allocation, no reference counting.
  private var names: (StaticString, StaticString, StaticString) = ("", "", "")
  private var indices: (Int, Int) = (-1, -1)
  private var depth = 0

  /// The whole wallet.
  init() {}

  /// A top-level field, optionally an element of it.
  init(_ name: StaticString, _ index: Int = -1) {
    self = FieldPath()[name, index]
  }

  /// A field inside this one, optionally an element of it.
  subscript(_ name: StaticString, _ index: Int = -1) -> FieldPath {
    var next = self
    switch depth {
    case 0:
      next.names.0 = name
      next.indices.0 = index
    case 1:
      next.names.1 = name
      next.indices.1 = index
    default:
      next.names.2 = name
    }
    next.depth = min(depth + 1, 3)
    return next
  }

  /// Element `index` of this field.
  func element(_ index: Int) -> FieldPath {
    var next = self
    if depth == 1 { next.indices.0 = index } else if depth == 2 { next.indices.1 = index }
    return next
  }

  /// `approvers[1].rpID` style; empty for the whole wallet.
  var text: String {
    var parts = [String]()
    if depth >= 1 { parts.append("\(names.0)" + (indices.0 >= 0 ? "[\(indices.0)]" : "")) }
    if depth >= 2 { parts.append("\(names.1)" + (indices.1 >= 0 ? "[\(indices.1)]" : "")) }
    if depth >= 3 { parts.append("\(names.2)") }
    return parts.joined(separator: ".")
  }
}

func checkText(_ text: String, _ path: FieldPath, maxBytes: Int) throws(WalletDataError) {
  let count = text.utf8.count
  guard count >= 1, count <= maxBytes else {
    throw WalletDataError(.invalidValue, field: path.text, "expected 1 to \(maxBytes) bytes of text, got \(count)")
  }
  // Control characters (general category Cc: U+0000-U+001F, U+007F-U+009F), found on the
  // UTF-8 bytes: C1 controls are 0xC2 0x80 ... 0xC2 0x9F.
  var copy = text
  let clean = copy.withUTF8 { utf8 in
    var previous: UInt8 = 0
    for byte in utf8 {
      if byte < 0x20 || byte == 0x7F || (previous == 0xC2 && byte <= 0x9F) { return false }
      previous = byte
    }
    return true
  }
  guard clean else {
    throw WalletDataError(.invalidValue, field: path.text, "control characters are not allowed")
  }
}

func checkSortedDistinct(_ texts: [String], _ path: FieldPath, maxBytes: Int) throws(WalletDataError) {
  for (index, text) in texts.enumerated() {
    try checkText(text, path.element(index), maxBytes: maxBytes)
    if index > 0 && !texts[index - 1].utf8.lexicographicallyPrecedes(text.utf8) {
      throw WalletDataError(
        .invalidValue, field: path.element(index).text,
        "entries must be distinct and sorted bytewise; '\(text)' is out of place")
    }
  }
}
