import Crypto
import Synchronization

/// A passkey held in software (P-256 for ES256, Ed25519 for EdDSA) that produces real WebAuthn
/// assertions: authenticatorData with the RP id hash, flags and signature counter, and
/// clientDataJSON with type, challenge and origin serialised as WebAuthn's client does
/// (section 5.8.1.1 of the Level 3 specification). Tests, benchmarks and the demo and bot
/// tools approve requests with it; a person's browser does the same with a hardware key.
///
/// The private key lives in swift-crypto's key type (memory only, never exported).
public final class SoftwareAuthenticator: Sendable {
  /// The credential's signature algorithm.
  public enum Algorithm: String, Sendable, Hashable, CaseIterable {
    /// ECDSA P-256 with SHA-256 (COSE -7); signatures in DER.
    case es256
    /// Ed25519 (COSE -8); 64-byte signatures.
    case edDSA
  }

  public let algorithm: Algorithm
  public let credentialID: [UInt8]
  public let rpID: String
  /// The origin the client reports (the approver page's).
  public let origin: String
  /// Whether the authenticator keeps a signature counter (synced passkeys report 0 forever).
  public let countsSignatures: Bool
  /// Whether it verifies its user (sets UV) unless an assertion's options say otherwise.
  public let verifiesUser: Bool
  private let key: SoftwareKey
  private let counter: Mutex<UInt32>

  /// An authenticator with a fresh random key and credential id, or with the 32-byte
  /// `privateKey` given (reproducible keys for tests and fixtures).
  public init(
    _ algorithm: Algorithm, rpID: String = "custody.example", origin: String = "https://custody.example",
    credentialID: [UInt8]? = nil, privateKey: [UInt8]? = nil, countsSignatures: Bool = true,
    verifiesUser: Bool = true, signCount: UInt32 = 0
  ) throws {
    self.algorithm = algorithm
    self.rpID = rpID
    self.origin = origin
    self.countsSignatures = countsSignatures
    self.verifiesUser = verifiesUser
    switch algorithm {
    case .es256:
      key = .p256(
        try privateKey.map { try P256.Signing.PrivateKey(rawRepresentation: $0) } ?? P256.Signing.PrivateKey())
    case .edDSA:
      key = .ed25519(
        try privateKey.map { try Curve25519.Signing.PrivateKey(rawRepresentation: $0) }
          ?? Curve25519.Signing.PrivateKey())
    }
    self.credentialID = credentialID ?? SystemRandom.bytes(32)
    counter = Mutex(signCount)
  }

  /// The raw public key: 65-byte uncompressed P-256 point, or 32-byte Ed25519 key.
  public var rawPublicKey: [UInt8] { key.rawPublicKey }

  /// The credential's COSE_Key, as registration gives it to the relying party.
  public var coseKey: [UInt8] {
    try! COSEPublicKey.encode(algorithm == .es256 ? .es256 : .edDSA, rawPublicKey: rawPublicKey)
  }

  /// The signature counter's current value.
  public var signCount: UInt32 { counter.withLock { $0 } }

  /// The passkey to enrol for this credential.
  public func passkey(allowedOrigins: [String]? = nil, requireUserVerification: Bool = true) -> Passkey {
    Passkey(
      credentialID: credentialID, publicKey: coseKey, rpID: rpID, allowedOrigins: allowedOrigins ?? [origin],
      signCount: signCount, requireUserVerification: requireUserVerification)
  }

  /// An approver named `id` holding this passkey.
  public func approver(_ id: String, requireUserVerification: Bool = true) -> Approver {
    Approver(id: id, credential: .passkey(passkey(requireUserVerification: requireUserVerification)))
  }

  /// What a client and authenticator put into an assertion. The defaults are an honest one;
  /// tests change them to model faults and attacks (another origin, a missing UP flag, a
  /// counter that went back).
  public struct Options: Sendable, Hashable {
    /// clientDataJSON `type`.
    public var type = "webauthn.get"
    /// clientDataJSON `origin`; nil for the authenticator's.
    public var origin: String? = nil
    /// `crossOrigin` (true when the page was embedded in another origin's page).
    public var crossOrigin = false
    /// The RP id whose SHA-256 goes into authenticatorData; nil for the authenticator's.
    public var rpID: String? = nil
    /// The UP flag.
    public var userPresent = true
    /// The UV flag; nil for the authenticator's own setting.
    public var userVerified: Bool? = nil
    /// The counter to report; nil to count on (or report 0 if the authenticator keeps none).
    public var signCount: UInt32? = nil
    /// The challenge to sign instead of SHA-256 of the envelope.
    public var challenge: [UInt8]? = nil

    public init() {}
  }

  /// An approval of `envelope` (its encoding) by the approver `approverID`.
  public func approve(_ envelope: [UInt8], as approverID: String, options: Options = Options()) -> Approval {
    let challenge = options.challenge ?? RequestEnvelope.challenge(of: envelope).bytes
    return Approval(approverID: approverID, proof: .passkey(assert(challenge: challenge, options: options)))
  }

  /// A WebAuthn assertion over `challenge`: authenticatorData || SHA-256(clientDataJSON) signed.
  public func assert(challenge: [UInt8], options: Options = Options()) -> PasskeyAssertion {
    let count: UInt32 =
      options.signCount
      ?? counter.withLock { value in
        guard countsSignatures else { return 0 }
        value &+= 1
        return value
      }
    var flags: UInt8 = 0
    if options.userPresent { flags |= 0x01 }
    if options.userVerified ?? verifiesUser { flags |= 0x04 }
    var authenticatorData = Hash256.sha256(Array((options.rpID ?? rpID).utf8)).bytes
    authenticatorData.append(flags)
    for shift in stride(from: 24, through: 0, by: -8) {
      authenticatorData.append(UInt8(truncatingIfNeeded: count >> UInt32(shift)))
    }
    let clientData = SoftwareAuthenticator.clientDataJSON(
      type: options.type, challenge: challenge, origin: options.origin ?? origin, crossOrigin: options.crossOrigin)
    let signature = key.sign(authenticatorData + Hash256.sha256(clientData).bytes)
    return PasskeyAssertion(
      credentialID: credentialID, authenticatorData: authenticatorData, clientDataJSON: clientData,
      signature: signature)
  }

  /// The client data as WebAuthn's client serialises it: `{"type":...,"challenge":...,
  /// "origin":...,"crossOrigin":...}`, strings escaped as JSON.
  public static func clientDataJSON(type: String, challenge: [UInt8], origin: String, crossOrigin: Bool) -> [UInt8] {
    var json = "{\"type\":" + jsonString(type)
    json += ",\"challenge\":" + jsonString(Base64URL.encode(challenge))
    json += ",\"origin\":" + jsonString(origin)
    json += ",\"crossOrigin\":" + (crossOrigin ? "true" : "false") + "}"
    return Array(json.utf8)
  }

  /// `text` as a JSON string literal (CCDToString's escaping: quote, backslash, controls).
  static func jsonString(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\u{00}"..."\u{1F}":
        let digits = String(scalar.value, radix: 16)
        out += "\\u" + String(repeating: "0", count: 4 - digits.count) + digits
      default: out.unicodeScalars.append(scalar)
      }
    }
    return out + "\""
  }
}

/// A bot approver's key held in software (P-256 or Ed25519): it signs a request's encoding.
public final class SoftwareBot: Sendable {
  private let key: SoftwareKey

  /// A bot with a fresh random key, or the 32-byte `privateKey` given.
  public init(_ algorithm: BotKey.Algorithm, privateKey: [UInt8]? = nil) throws {
    key = try SoftwareKey(p256: algorithm == .p256, privateKey: privateKey)
  }

  /// The public key to enrol.
  public var botKey: BotKey {
    BotKey(algorithm: key.isP256 ? .p256 : .ed25519, publicKey: key.rawPublicKey)
  }

  /// An approver named `id` holding this key.
  public func approver(_ id: String) -> Approver {
    Approver(id: id, credential: .bot(botKey))
  }

  /// The bot's signature over `message`: DER ECDSA-SHA256 for P-256, Ed25519 otherwise.
  public func signature(over message: [UInt8]) -> [UInt8] { key.sign(message) }

  /// An approval of `envelope` (its encoding) by the approver `approverID`.
  public func approve(_ envelope: [UInt8], as approverID: String) -> Approval {
    Approval(approverID: approverID, proof: .bot(signature: signature(over: envelope)))
  }
}

/// A signing key in swift-crypto's key types (memory only), shared by the software passkey and
/// bot: P-256 signing SHA-256 of the message into DER, or Ed25519.
private enum SoftwareKey: Sendable {
  case p256(P256.Signing.PrivateKey)
  case ed25519(Curve25519.Signing.PrivateKey)

  /// A fresh random key, or the one whose 32-byte private key is `privateKey`.
  init(p256: Bool, privateKey: [UInt8]?) throws {
    if p256 {
      self = .p256(
        try privateKey.map { try P256.Signing.PrivateKey(rawRepresentation: $0) } ?? P256.Signing.PrivateKey())
    } else {
      self = .ed25519(
        try privateKey.map { try Curve25519.Signing.PrivateKey(rawRepresentation: $0) }
          ?? Curve25519.Signing.PrivateKey())
    }
  }

  var isP256: Bool {
    if case .p256 = self { return true }
    return false
  }

  /// 65-byte uncompressed P-256 point, or 32-byte Ed25519 key.
  var rawPublicKey: [UInt8] {
    switch self {
    case .p256(let key): Array(key.publicKey.x963Representation)
    case .ed25519(let key): Array(key.publicKey.rawRepresentation)
    }
  }

  func sign(_ message: [UInt8]) -> [UInt8] {
    switch self {
    case .p256(let key): Array(try! key.signature(for: message).derRepresentation)
    case .ed25519(let key): Array(try! key.signature(for: message))
    }
  }
}
