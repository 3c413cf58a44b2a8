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

  /// Decodes and validates a wallet encoding. Everything that is not a valid wallet in
  /// deterministic form is refused, with the field and the rule named.
  public static func decode(_ bytes: [UInt8]) throws(WalletDataError) -> WalletData {
    let item: CBOR
    do {
      item = try CBORDecoder().decode(bytes)
    } catch {
      throw WalletDataError(.cbor, field: "", "not deterministic CBOR: \(error)")
    }
    return try decode(item)
  }

  /// Decodes and validates a wallet from a decoded CBOR value.
  public static func decode(_ item: CBOR) throws(WalletDataError) -> WalletData {
    guard case .array(let top) = item, top.count == 3 else {
      throw WalletDataError(
        .wrongDomain, field: "", "a wallet is a 3-item array [\"\(domain)\", version, fields]; got \(item.kindName)")
    }
    guard case .text(let tag) = top[0], tag == domain else {
      throw WalletDataError(.wrongDomain, field: "", "the domain tag is \(top[0].diagnostic), not \"\(domain)\"")
    }
    guard case .unsigned(let version) = top[1] else {
      throw WalletDataError(.wrongType, field: "version", "expected unsigned integer, got \(top[1].kindName)")
    }
    guard version == currentVersion else {
      throw WalletDataError(
        .unsupportedVersion, field: "version", "version \(version) is not supported (this build reads \(currentVersion))")
    }
    var fields = try FieldReader(top[2], path: "")
    let wallet = WalletData(
      version: version,
      id: try fields.unsigned(0, "id"),
      threshold: try fields.unsigned(1, "threshold"),
      custodial: try fields.bool(2, "custodial"),
      approvers: try fields.array(3, "approvers") { item, path throws(WalletDataError) in
        try Approver.decode(item, path: path)
      },
      curve: try fields.enumeration(4, "curve"),
      derivation: try fields.enumeration(5, "derivation"),
      requestNonce: try fields.unsigned(6, "requestNonce"),
      policy: try Policy.decode(try fields.required(7, "policy"), path: "policy"),
      policyState: try PolicyState.decode(try fields.required(8, "policyState"), path: "policyState"))
    try fields.finish()
    try wallet.validate()
    return wallet
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
        .invalidValue, field: "approvers", "a wallet has 1 to \(WalletData.maxApprovers) approvers, not \(approvers.count)")
    }
    guard threshold >= 1, threshold <= UInt64(approvers.count) else {
      throw WalletDataError(
        .invalidValue, field: "threshold", "threshold \(threshold) is not between 1 and the \(approvers.count) approvers")
    }
    if curve == .ed25519 && derivation == .bip32 {
      throw WalletDataError(
        .invalidValue, field: "derivation", "BIP-32 derives secp256k1 keys only; ed25519 wallets use SLIP-10")
    }
    for (index, approver) in approvers.enumerated() {
      try approver.validate(path: "approvers[\(index)]")
      if index > 0 {
        let previous = approvers[index - 1]
        guard previous.id.utf8.lexicographicallyPrecedes(approver.id.utf8) else {
          throw WalletDataError(
            .invalidValue, field: "approvers[\(index)].id",
            "approver ids must be distinct and sorted; '\(approver.id)' comes after '\(previous.id)'")
        }
      }
    }
    // One key, one approver: the same credential or key under two names would count twice.
    var keys = Set<[UInt8]>()
    for (index, approver) in approvers.enumerated() {
      guard keys.insert(approver.identityKey).inserted else {
        throw WalletDataError(
          .invalidValue, field: "approvers[\(index)]",
          "approver '\(approver.id)' has the same credential or key as another approver")
      }
    }
    try policy.validate(path: "policy")
    try policyState.validate(path: "policyState")
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

  static func decode(_ item: CBOR, path: String) throws(WalletDataError) -> Approver {
    var fields = try FieldReader(item, path: path)
    let id = try fields.text(0, "id")
    let kind = try fields.text(1, "kind")
    let credential: Credential
    switch kind {
    case "passkey":
      let signCount = try fields.unsigned(6, "signCount")
      guard signCount <= UInt64(UInt32.max) else {
        throw WalletDataError(.invalidValue, field: path + ".signCount", "sign count \(signCount) exceeds 32 bits")
      }
      credential = .passkey(
        Passkey(
          credentialID: try fields.bytes(2, "credentialID"), publicKey: try fields.bytes(3, "publicKey"),
          rpID: try fields.text(4, "rpID"),
          allowedOrigins: try fields.array(5, "allowedOrigins") { item, path throws(WalletDataError) in
            guard case .text(let origin) = item else {
              throw WalletDataError(.wrongType, field: path, "expected text string, got \(item.kindName)")
            }
            return origin
          },
          signCount: UInt32(signCount), requireUserVerification: try fields.bool(7, "requireUserVerification")))
    case "bot":
      credential = .bot(BotKey(algorithm: try fields.enumeration(2, "algorithm"), publicKey: try fields.bytes(3, "publicKey")))
    default:
      throw WalletDataError(.invalidValue, field: path + ".kind", "approver kind '\(kind)' is neither passkey nor bot")
    }
    try fields.finish()
    return Approver(id: id, credential: credential)
  }

  func validate(path: String) throws(WalletDataError) {
    try checkText(id, path: path + ".id", maxBytes: 128)
    switch credential {
    case .passkey(let passkey): try passkey.validate(path: path)
    case .bot(let bot): try bot.validate(path: path)
    }
  }

  /// What must not repeat between approvers of one wallet.
  var identityKey: [UInt8] {
    switch credential {
    case .passkey(let passkey): [0] + passkey.credentialID
    case .bot(let bot): [1] + bot.publicKey
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
    try COSEPublicKey(publicKey, path: "publicKey")
  }

  func validate(path: String) throws(WalletDataError) {
    guard (1...1023).contains(credentialID.count) else {
      throw WalletDataError(
        .invalidValue, field: path + ".credentialID", "a credential id has 1 to 1023 bytes, not \(credentialID.count)")
    }
    _ = try COSEPublicKey(publicKey, path: path + ".publicKey")
    try checkText(rpID, path: path + ".rpID", maxBytes: 253)
    guard (1...16).contains(allowedOrigins.count) else {
      throw WalletDataError(
        .invalidValue, field: path + ".allowedOrigins", "a passkey names 1 to 16 origins, not \(allowedOrigins.count)")
    }
    try checkSortedDistinct(allowedOrigins, path: path + ".allowedOrigins", maxBytes: 512)
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
  public init(_ bytes: [UInt8], path: String = "publicKey") throws(WalletDataError) {
    let item: CBOR
    do {
      item = try CBORDecoder(limits: .init(maxDepth: 2, maxLength: 64, maxInputSize: 256)).decode(bytes)
    } catch {
      throw WalletDataError(.invalidValue, field: path, "the COSE key is not deterministic CBOR: \(error)")
    }
    guard case .map(let entries) = item else {
      throw WalletDataError(.invalidValue, field: path, "a COSE key is a map, not \(item.kindName)")
    }
    func value(_ label: Int64) -> CBOR? { entries.first { $0.key == .integer(label) }?.value }
    let allowed: Set<CBOR> = [.integer(1), .integer(2), .integer(3), .integer(-1), .integer(-2), .integer(-3)]
    if let unknown = entries.first(where: { !allowed.contains($0.key) }) {
      throw WalletDataError(.invalidValue, field: path, "the COSE key has an unexpected label \(unknown.key.diagnostic)")
    }
    switch (value(1), value(3), value(-1)) {
    case (.unsigned(2), .negative(6), .unsigned(1)):  // EC2, ES256, P-256
      guard case .bytes(let x) = value(-2), case .bytes(let y) = value(-3), x.count == 32, y.count == 32 else {
        throw WalletDataError(.invalidValue, field: path, "an ES256 COSE key needs 32-byte x and y coordinates")
      }
      algorithm = .es256
      rawPublicKey = [0x04] + x + y
    case (.unsigned(1), .negative(7), .unsigned(6)):  // OKP, EdDSA, Ed25519
      guard case .bytes(let x) = value(-2), x.count == 32, value(-3) == nil else {
        throw WalletDataError(.invalidValue, field: path, "an EdDSA COSE key needs a 32-byte x and no y")
      }
      algorithm = .edDSA
      rawPublicKey = x
    default:
      throw WalletDataError(
        .invalidValue, field: path, "the COSE key is neither ES256 on P-256 (kty 2, alg -7, crv 1) nor EdDSA on Ed25519 (kty 1, alg -8, crv 6)")
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
        CBOR.Entry(.integer(1), .integer(2)), CBOR.Entry(.integer(3), .integer(-7)), CBOR.Entry(.integer(-1), .integer(1)),
        CBOR.Entry(.integer(-2), .bytes(Array(rawPublicKey[1..<33]))),
        CBOR.Entry(.integer(-3), .bytes(Array(rawPublicKey[33..<65]))),
      ])
    case .edDSA:
      guard rawPublicKey.count == 32 else {
        throw WalletDataError(.invalidValue, field: "publicKey", "an Ed25519 key is 32 bytes")
      }
      item = .map([
        CBOR.Entry(.integer(1), .integer(1)), CBOR.Entry(.integer(3), .integer(-8)), CBOR.Entry(.integer(-1), .integer(6)),
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

  func validate(path: String) throws(WalletDataError) {
    switch algorithm {
    case .p256:
      guard publicKey.count == 65, publicKey[0] == 0x04 else {
        throw WalletDataError(
          .invalidValue, field: path + ".publicKey",
          "a P-256 bot key is the 65-byte uncompressed point 0x04 || x || y (one form, so one key is one approver)")
      }
    case .ed25519:
      guard publicKey.count == 32 else {
        throw WalletDataError(
          .invalidValue, field: path + ".publicKey", "an Ed25519 bot key has 32 bytes, not \(publicKey.count)")
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

  static func decode(_ item: CBOR, path: String) throws(WalletDataError) -> Policy {
    var fields = try FieldReader(item, path: path)
    var policy = Policy()
    if let limit = try fields.optional(0) { policy.perTransactionLimit = try decodeAmount(limit, path: path + ".perTransactionLimit") }
    if let window = try fields.optional(1) {
      let parts = try pair(window, path: path + ".rollingWindow")
      guard case .unsigned(let seconds) = parts.0 else {
        throw WalletDataError(.wrongType, field: path + ".rollingWindow.seconds", "expected unsigned integer, got \(parts.0.kindName)")
      }
      policy.rollingWindow = RollingLimit(seconds: seconds, limit: try decodeAmount(parts.1, path: path + ".rollingWindow.limit"))
    }
    policy.destinationAllowlist = try fields.array(2, "destinationAllowlist") { item, path throws(WalletDataError) in
      guard case .text(let destination) = item else {
        throw WalletDataError(.wrongType, field: path, "expected text string, got \(item.kindName)")
      }
      return destination
    }
    if let window = try fields.optional(3) {
      let parts = try pair(window, path: path + ".timeOfDay")
      guard case .unsigned(let from) = parts.0, case .unsigned(let to) = parts.1, from < 1440, to < 1440 else {
        throw WalletDataError(.invalidValue, field: path + ".timeOfDay", "expected two minutes of the day, 0 to 1439")
      }
      policy.timeOfDay = TimeOfDayWindow(fromMinute: UInt16(from), toMinute: UInt16(to))
    }
    try fields.finish()
    return policy
  }

  func validate(path: String) throws(WalletDataError) {
    if let rollingWindow, rollingWindow.seconds == 0 {
      throw WalletDataError(.invalidValue, field: path + ".rollingWindow.seconds", "a rolling window lasts at least one second")
    }
    try checkSortedDistinct(destinationAllowlist, path: path + ".destinationAllowlist", maxBytes: 256)
    guard destinationAllowlist.count <= 1024 else {
      throw WalletDataError(
        .invalidValue, field: path + ".destinationAllowlist", "at most 1024 destinations, not \(destinationAllowlist.count)")
    }
    if let timeOfDay {
      guard timeOfDay.fromMinute < 1440, timeOfDay.toMinute < 1440, timeOfDay.fromMinute != timeOfDay.toMinute else {
        throw WalletDataError(
          .invalidValue, field: path + ".timeOfDay",
          "minutes are 0 to 1439 and from != to (omit the window to allow any time); got \(timeOfDay.fromMinute)-\(timeOfDay.toMinute)")
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

  static func decode(_ item: CBOR, path: String) throws(WalletDataError) -> PolicyState {
    var fields = try FieldReader(item, path: path)
    let spent = try fields.array(0, "spent") { item, path throws(WalletDataError) in
      let parts = try pair(item, path: path)
      guard case .unsigned(let timestamp) = parts.0 else {
        throw WalletDataError(.wrongType, field: path + ".timestamp", "expected unsigned integer, got \(parts.0.kindName)")
      }
      return Spend(timestamp: timestamp, amount: try decodeAmount(parts.1, path: path + ".amount"))
    }
    try fields.finish()
    return PolicyState(spent: spent)
  }

  func validate(path: String) throws(WalletDataError) {
    guard spent.count <= PolicyState.maxSpends else {
      throw WalletDataError(.invalidValue, field: path + ".spent", "at most \(PolicyState.maxSpends) spends, not \(spent.count)")
    }
    for (index, spend) in spent.enumerated() {
      if spend.amount == .zero {
        throw WalletDataError(.invalidValue, field: path + ".spent[\(index)].amount", "a recorded spend is not zero")
      }
      if index > 0 && spent[index - 1].timestamp > spend.timestamp {
        throw WalletDataError(.invalidValue, field: path + ".spent[\(index)].timestamp", "spends are in time order, oldest first")
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

  public var description: String { field.isEmpty ? "wallet data \(code): \(reason)" : "wallet data \(code) at \(field): \(reason)" }
}

// MARK: - Helpers

/// Reads a map with unsigned integer keys field by field; `finish()` refuses keys nobody read.
struct FieldReader {
  private let entries: [CBOR.Entry]
  private var used: Set<UInt64> = []
  let path: String

  init(_ item: CBOR, path: String) throws(WalletDataError) {
    guard case .map(let entries) = item else {
      throw WalletDataError(.wrongType, field: path, "expected a map, got \(item.kindName)")
    }
    self.entries = entries
    self.path = path
  }

  private func name(_ field: String) -> String { path.isEmpty ? field : path + "." + field }

  mutating func optional(_ key: UInt64) throws(WalletDataError) -> CBOR? {
    used.insert(key)
    return entries.first { $0.key == .unsigned(key) }?.value
  }

  mutating func required(_ key: UInt64, _ field: String) throws(WalletDataError) -> CBOR {
    guard let value = try optional(key) else {
      throw WalletDataError(.missingField, field: name(field), "field \(key) (\(field)) is missing")
    }
    return value
  }

  mutating func unsigned(_ key: UInt64, _ field: String) throws(WalletDataError) -> UInt64 {
    let value = try required(key, field)
    guard case .unsigned(let number) = value else { throw wrongType(field, "unsigned integer", value) }
    return number
  }

  mutating func bool(_ key: UInt64, _ field: String) throws(WalletDataError) -> Bool {
    let value = try required(key, field)
    guard case .bool(let flag) = value else { throw wrongType(field, "boolean", value) }
    return flag
  }

  mutating func text(_ key: UInt64, _ field: String) throws(WalletDataError) -> String {
    let value = try required(key, field)
    guard case .text(let text) = value else { throw wrongType(field, "text string", value) }
    return text
  }

  mutating func bytes(_ key: UInt64, _ field: String) throws(WalletDataError) -> [UInt8] {
    let value = try required(key, field)
    guard case .bytes(let bytes) = value else { throw wrongType(field, "byte string", value) }
    return bytes
  }

  mutating func enumeration<E: RawRepresentable & CaseIterable>(
    _ key: UInt64, _ field: String
  ) throws(WalletDataError) -> E where E.RawValue == String {
    let text = try text(key, field)
    guard let value = E(rawValue: text) else {
      throw WalletDataError(
        .invalidValue, field: name(field),
        "'\(text)' is not one of \(E.allCases.map { "'\($0.rawValue)'" }.joined(separator: ", "))")
    }
    return value
  }

  mutating func array<T>(
    _ key: UInt64, _ field: String, _ element: (CBOR, String) throws(WalletDataError) -> T
  ) throws(WalletDataError) -> [T] {
    let value = try required(key, field)
    guard case .array(let items) = value else { throw wrongType(field, "array", value) }
    var out = [T]()
    out.reserveCapacity(items.count)
    for (index, item) in items.enumerated() { out.append(try element(item, "\(name(field))[\(index)]")) }
    return out
  }

  func finish() throws(WalletDataError) {
    if let unknown = entries.first(where: { entry in
      guard case .unsigned(let key) = entry.key else { return true }
      return !used.contains(key)
    }) {
      throw WalletDataError(.unknownField, field: path, "unknown field \(unknown.key.diagnostic)")
    }
  }

  private func wrongType(_ field: String, _ expected: String, _ value: CBOR) -> WalletDataError {
    WalletDataError(.wrongType, field: name(field), "expected \(expected), got \(value.kindName)")
  }
}

func amountCBOR(_ amount: Amount) -> CBOR { .bytes(amount.bigEndianBytes) }

func decodeAmount(_ item: CBOR, path: String) throws(WalletDataError) -> Amount {
  guard case .bytes(let bytes) = item else {
    throw WalletDataError(.wrongType, field: path, "an amount is a byte string, not \(item.kindName)")
  }
  guard bytes.first != 0 else {
    throw WalletDataError(.invalidValue, field: path, "an amount has no leading zero byte (zero is the empty string)")
  }
  guard let amount = Amount(bigEndian: bytes) else {
    throw WalletDataError(.invalidValue, field: path, "an amount has at most 32 bytes, not \(bytes.count)")
  }
  return amount
}

func pair(_ item: CBOR, path: String) throws(WalletDataError) -> (CBOR, CBOR) {
  guard case .array(let items) = item, items.count == 2 else {
    throw WalletDataError(.wrongType, field: path, "expected a 2-item array, got \(item.kindName)")
  }
  return (items[0], items[1])
}

func checkText(_ text: String, path: String, maxBytes: Int) throws(WalletDataError) {
  let count = text.utf8.count
  guard count >= 1, count <= maxBytes else {
    throw WalletDataError(.invalidValue, field: path, "expected 1 to \(maxBytes) bytes of text, got \(count)")
  }
  guard !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
    throw WalletDataError(.invalidValue, field: path, "control characters are not allowed")
  }
}

func checkSortedDistinct(_ texts: [String], path: String, maxBytes: Int) throws(WalletDataError) {
  for (index, text) in texts.enumerated() {
    try checkText(text, path: "\(path)[\(index)]", maxBytes: maxBytes)
    if index > 0 && !texts[index - 1].utf8.lexicographicallyPrecedes(text.utf8) {
      throw WalletDataError(
        .invalidValue, field: "\(path)[\(index)]", "entries must be distinct and sorted bytewise; '\(text)' is out of place")
    }
  }
}
