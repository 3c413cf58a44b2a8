import Crypto
import Custody
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// An approver's key file: a bot's P-256 or Ed25519 key, or a software passkey (the same
/// `SoftwareAuthenticator` the tests use, driven from the command line for the demo).
///
/// The format, JSON in a file of mode 0600 (a file readable by group or others is refused):
///
/// ```
/// {"format": "custos-approver-key", "version": 1, "kind": "bot", "approverId": "bot-a",
///  "algorithm": "p256" | "ed25519", "privateKey": "<64 hex digits>", "publicKey": "<base64url>"}
/// {"format": "custos-approver-key", "version": 1, "kind": "passkey", "approverId": "carol",
///  "algorithm": "es256" | "eddsa", "privateKey": "<64 hex digits>", "credentialId": "<base64url>",
///  "rpId": "custody.example", "origin": "https://custody.example", "signCount": 7,
///  "publicKey": "<base64url COSE_Key>"}
/// ```
///
/// `approverId` is optional (the id the wallet enrols the key under; `--as` overrides it).
/// `publicKey` is what enrolment needs and is checked against the private key when loaded.
/// A passkey's `signCount` is the last counter it reported; each approval raises it and the
/// file is rewritten before the approval leaves, so a counter is never used twice.
public final class ApproverKey: Sendable {
  /// The text that opens every key file (`format`).
  public static let format = "custos-approver-key"
  public static let version = 1

  /// What signs.
  public enum Signer: Sendable {
    case bot(SoftwareBot, BotKey.Algorithm)
    case passkey(SoftwareAuthenticator)
  }

  public let signer: Signer
  /// The approver id stored in the file, if any.
  public let approverID: String?
  /// Where the key was read from (passkeys write their counter back there).
  public let path: String?

  init(signer: Signer, approverID: String?, path: String?) {
    self.signer = signer
    self.approverID = approverID
    self.path = path
  }

  /// Whether this is a bot key (not a passkey).
  public var isBot: Bool {
    if case .bot = signer { return true }
    return false
  }

  /// The approver as a wallet proposal enrols it (`ApproverInput` of openapi.yaml), as JSON
  /// text: `{"id": ..., "bot": {...}}` or `{"id": ..., "passkey": {...}}`.
  public func enrolmentJSON(id: String) -> String {
    let body: String
    switch signer {
    case .bot(let bot, let algorithm):
      body =
        "\"bot\": {\"algorithm\": \"\(algorithm.rawValue)\", \"publicKey\": \"\(Base64URL.encode(bot.botKey.publicKey))\"}"
    case .passkey(let authenticator):
      body =
        "\"passkey\": {\"credentialId\": \"\(Base64URL.encode(authenticator.credentialID))\", "
        + "\"publicKey\": \"\(Base64URL.encode(authenticator.coseKey))\", \"rpId\": \(Self.json(authenticator.rpID)), "
        + "\"allowedOrigins\": [\(Self.json(authenticator.origin))]}"
    }
    return "{\"id\": \(Self.json(id)), \(body)}"
  }

  /// The approver this key is, as a wallet enrols it (the counter left at 0).
  public func approver(id: String) -> Approver {
    switch signer {
    case .bot(let bot, _): bot.approver(id)
    case .passkey(let authenticator): authenticator.approver(id)
    }
  }

  // MARK: Making keys

  /// A fresh bot key written to `path` (mode 0600; an existing file is refused).
  public static func createBot(
    _ algorithm: BotKey.Algorithm, approverID: String?, at path: String
  ) throws(ApproverError)
    -> ApproverKey
  {
    var secret = SystemRandom.bytes(32)
    defer { SecretBytes.zero(&secret) }
    let bot: SoftwareBot
    do {
      bot = try SoftwareBot(algorithm, privateKey: secret)
    } catch {
      throw ApproverError(.keyFileInvalid, "cannot make a \(algorithm.rawValue) key: \(error)")
    }
    let key = ApproverKey(signer: .bot(bot, algorithm), approverID: approverID, path: path)
    try write(key, privateKey: secret, signCount: 0, to: path, replace: false)
    return key
  }

  /// A fresh software passkey written to `path` (mode 0600; an existing file is refused).
  public static func createPasskey(
    _ algorithm: SoftwareAuthenticator.Algorithm, rpID: String, origin: String, approverID: String?, at path: String
  ) throws(ApproverError) -> ApproverKey {
    guard !rpID.isEmpty, !origin.isEmpty else {
      throw ApproverError(.keyFileInvalid, "a passkey needs an RP id and an origin")
    }
    var secret = SystemRandom.bytes(32)
    defer { SecretBytes.zero(&secret) }
    let authenticator: SoftwareAuthenticator
    do {
      authenticator = try SoftwareAuthenticator(
        algorithm, rpID: rpID, origin: origin, credentialID: SystemRandom.bytes(32), privateKey: secret)
    } catch {
      throw ApproverError(.keyFileInvalid, "cannot make a passkey: \(error)")
    }
    let key = ApproverKey(signer: .passkey(authenticator), approverID: approverID, path: path)
    try write(key, privateKey: secret, signCount: 0, to: path, replace: false)
    return key
  }

  // MARK: Reading keys

  /// Reads a key file; refuses one readable by group or others, of another format, or whose
  /// public key is not its private key's.
  public static func load(_ path: String) throws(ApproverError) -> ApproverKey {
    var info = stat()
    guard stat(path, &info) == 0 else {
      throw ApproverError(.keyFileInvalid, "cannot read key file \(path): \(String(cString: strerror(errno)))")
    }
    guard info.st_mode & 0o077 == 0 else {
      throw ApproverError(
        .keyFileInvalid,
        "key file \(path) is open to group or others (mode \(String(info.st_mode & 0o777, radix: 8))): chmod 600 it")
    }
    guard let data = FileManager.default.contents(atPath: path),
      let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    else { throw ApproverError(.keyFileInvalid, "key file \(path) is not a JSON object") }
    func fail(_ reason: String) -> ApproverError { ApproverError(.keyFileInvalid, "key file \(path): \(reason)") }
    guard object["format"] as? String == format else { throw fail("not a \(format) file (format)") }
    guard object["version"] as? Int == version else { throw fail("version \(object["version"] ?? "none") is not 1") }
    let allowed: Set<String> = [
      "format", "version", "kind", "approverId", "algorithm", "privateKey", "publicKey", "credentialId", "rpId",
      "origin", "signCount",
    ]
    if let unknown = object.keys.sorted().first(where: { !allowed.contains($0) }) {
      throw fail("unknown field '\(unknown)'")
    }
    let approverID = object["approverId"] as? String
    if object["approverId"] != nil, approverID?.isEmpty != false { throw fail("approverId is not a non-empty string") }
    guard let hex = object["privateKey"] as? String, hex.utf8.count == 64, var secret = Hex.decode(hex) else {
      throw fail("privateKey is not 64 hex digits")
    }
    defer { SecretBytes.zero(&secret) }
    let publicKey = (object["publicKey"] as? String).flatMap { Base64URL.decode($0) }
    let algorithm = object["algorithm"] as? String ?? ""
    let key: ApproverKey
    switch object["kind"] as? String {
    case "bot":
      guard let botAlgorithm = BotKey.Algorithm(rawValue: algorithm) else {
        throw fail("a bot's algorithm is p256 or ed25519, not '\(algorithm)'")
      }
      guard let bot = try? SoftwareBot(botAlgorithm, privateKey: secret) else {
        throw fail("privateKey is not a \(algorithm) private key")
      }
      key = ApproverKey(signer: .bot(bot, botAlgorithm), approverID: approverID, path: path)
      guard publicKey == bot.botKey.publicKey else { throw fail("publicKey is not the private key's") }
    case "passkey":
      let passkeyAlgorithm: SoftwareAuthenticator.Algorithm
      switch algorithm {
      case "es256": passkeyAlgorithm = .es256
      case "eddsa": passkeyAlgorithm = .edDSA
      default: throw fail("a passkey's algorithm is es256 or eddsa, not '\(algorithm)'")
      }
      guard let credential = (object["credentialId"] as? String).flatMap({ Base64URL.decode($0) }),
        !credential.isEmpty
      else { throw fail("credentialId is not base64url") }
      guard let rpID = object["rpId"] as? String, !rpID.isEmpty else { throw fail("rpId is missing") }
      guard let origin = object["origin"] as? String, !origin.isEmpty else { throw fail("origin is missing") }
      guard let count = object["signCount"] as? Int, (0...Int(UInt32.max - 1)).contains(count) else {
        throw fail("signCount is not a counter (0 to 2^32-2)")
      }
      guard
        let authenticator = try? SoftwareAuthenticator(
          passkeyAlgorithm, rpID: rpID, origin: origin, credentialID: credential, privateKey: secret,
          signCount: UInt32(count))
      else { throw fail("privateKey is not a \(algorithm) private key") }
      key = ApproverKey(signer: .passkey(authenticator), approverID: approverID, path: path)
      guard publicKey == authenticator.coseKey else { throw fail("publicKey is not the private key's COSE key") }
    default:
      throw fail("kind is 'bot' or 'passkey', not '\(object["kind"] ?? "none")'")
    }
    return key
  }

  // MARK: Approving

  /// This key's approval of `envelope` as `approverID`. A passkey raises its counter and
  /// writes it back to its file first (so no counter is ever reported twice).
  public func approve(_ envelope: [UInt8], as approverID: String) throws(ApproverError) -> Approval {
    switch signer {
    case .bot(let bot, _):
      return bot.approve(envelope, as: approverID)
    case .passkey(let authenticator):
      let next = authenticator.signCount + 1
      if let path { try persistCounter(next, at: path) }
      var options = SoftwareAuthenticator.Options()
      options.signCount = next
      return authenticator.approve(envelope, as: approverID, options: options)
    }
  }

  /// Rewrites the key file with the passkey's new counter (atomically, 0600).
  private func persistCounter(_ count: UInt32, at path: String) throws(ApproverError) {
    guard let data = FileManager.default.contents(atPath: path),
      var object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    else { throw ApproverError(.keyFileInvalid, "cannot read key file \(path) to record the signature counter") }
    object["signCount"] = Int(count)
    try Self.writeObject(object, to: path, replace: true)
  }

  // MARK: Files

  private static func write(
    _ key: ApproverKey, privateKey: [UInt8], signCount: UInt32, to path: String, replace: Bool
  ) throws(ApproverError) {
    var object: [String: Any] = ["format": format, "version": version, "privateKey": Hex.encode(privateKey)]
    if let id = key.approverID { object["approverId"] = id }
    switch key.signer {
    case .bot(let bot, let algorithm):
      object["kind"] = "bot"
      object["algorithm"] = algorithm.rawValue
      object["publicKey"] = Base64URL.encode(bot.botKey.publicKey)
    case .passkey(let authenticator):
      object["kind"] = "passkey"
      object["algorithm"] = authenticator.algorithm == .es256 ? "es256" : "eddsa"
      object["credentialId"] = Base64URL.encode(authenticator.credentialID)
      object["rpId"] = authenticator.rpID
      object["origin"] = authenticator.origin
      object["signCount"] = Int(signCount)
      object["publicKey"] = Base64URL.encode(authenticator.coseKey)
    }
    try writeObject(object, to: path, replace: replace)
  }

  /// Writes `object` to a temporary sibling created 0600, then renames it into place (or, when
  /// `replace` is false, links it, so an existing file is never overwritten).
  private static func writeObject(_ object: [String: Any], to path: String, replace: Bool) throws(ApproverError) {
    guard var data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
    else { throw ApproverError(.keyFileInvalid, "cannot encode the key file") }
    data.append(0x0A)
    defer { data.resetBytes(in: 0..<data.count) }
    let temporary = path + ".tmp-\(getpid())"
    let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    guard descriptor >= 0 else {
      throw ApproverError(.keyFileInvalid, "cannot create \(temporary): \(String(cString: strerror(errno)))")
    }
    let written = data.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
    let synced = fsync(descriptor) == 0
    close(descriptor)
    guard written == data.count, synced else {
      unlink(temporary)
      throw ApproverError(.keyFileInvalid, "cannot write \(temporary)")
    }
    if replace {
      guard rename(temporary, path) == 0 else {
        unlink(temporary)
        throw ApproverError(.keyFileInvalid, "cannot replace \(path): \(String(cString: strerror(errno)))")
      }
    } else {
      let linked = link(temporary, path)
      let failure = errno
      unlink(temporary)
      guard linked == 0 else {
        throw failure == EEXIST
          ? ApproverError(.keyFileExists, "\(path) exists already; a key file is never overwritten")
          : ApproverError(.keyFileInvalid, "cannot create \(path): \(String(cString: strerror(failure)))")
      }
    }
  }

  /// `text` as a JSON string literal.
  static func json(_ text: String) -> String {
    let data = (try? JSONSerialization.data(withJSONObject: [text], options: [.withoutEscapingSlashes])) ?? Data()
    return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
  }
}
