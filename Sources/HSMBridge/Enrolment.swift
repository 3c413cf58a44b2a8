import Crypto
import Custody
import Foundation

/// The roles Custos emulates above SoftHSM's SO and User (DESIGN.md section 5), plus the unseal
/// key holders who activate a device.
public enum Role: String, Codable, Sendable, CaseIterable, CustomStringConvertible {
  case securityOfficer = "Security Officer"
  case cryptoOfficer = "Crypto Officer"
  case auditUser = "Audit User"
  case domainUser = "Domain User"
  case cryptoUser = "Crypto User"
  case unsealKeyHolder = "Unseal Key Holder"

  /// Roles proved with an officer token and its PIN.
  public static let officerRoles: [Role] = [.securityOfficer, .cryptoOfficer, .auditUser, .domainUser]

  /// Whether the role proves itself with an officer token.
  public var usesOfficerToken: Bool { Role.officerRoles.contains(self) }

  public var description: String { rawValue }
}

/// An officer as the device knows them: name, roles and the public key of their token.
public struct EnrolledOfficer: Codable, Hashable, Sendable {
  public var name: String
  public var roles: [Role]
  /// The token's P-256 public key, X9.63 uncompressed (65 bytes), in hex.
  public var publicKey: String
  /// The first 16 hex digits of SHA-256 of the public key, to name the key in records.
  public var keyID: String
  /// The serial of the officer token's SoftHSM token.
  public var tokenSerial: String

  public init(name: String, roles: [Role], publicKey: [UInt8], tokenSerial: String) {
    self.name = name
    self.roles = roles
    self.publicKey = Hex.encode(publicKey)
    self.keyID = EnrolledOfficer.keyID(of: publicKey)
    self.tokenSerial = tokenSerial
  }

  /// The short name of a public key: the first 8 bytes of its SHA-256, in hex.
  public static func keyID(of publicKey: [UInt8]) -> String {
    Hex.encode(SHA256.hash(data: publicKey).prefix(8))
  }
}

/// An unseal key holder: who holds which share of the activation secret.
public struct EnrolledUnsealHolder: Codable, Hashable, Sendable {
  public var name: String
  /// The share's x coordinate (1...count).
  public var shareIndex: Int

  public init(name: String, shareIndex: Int) {
    self.name = name
    self.shareIndex = shareIndex
  }
}

/// How the device's partition PINs come from its activation secret.
public struct ActivationRecord: Codable, Hashable, Sendable {
  /// Shares needed.
  public var threshold: Int
  /// Shares made.
  public var shares: Int
  /// The partitions whose PINs derive from the secret.
  public var partitions: [String]
  /// HKDF-SHA256 of the secret under the check label, hex: recognises the right secret without
  /// revealing anything about it.
  public var check: String

  public init(threshold: Int, shares: Int, partitions: [String], check: [UInt8]) {
    self.threshold = threshold
    self.shares = shares
    self.partitions = partitions
    self.check = Hex.encode(check)
  }
}

/// Who is enrolled on a device, kept in `DIR/enrolment.json` (0600).
///
/// ```
/// {
///   "format": 1,
///   "device": "<device serial>",
///   "officers": [{"name", "roles": ["Crypto Officer", ...], "publicKey": "04...", "keyID", "tokenSerial"}],
///   "unsealHolders": [{"name", "shareIndex"}],
///   "activation": {"threshold": 2, "shares": 3, "partitions": ["custody", "admin"], "check": "<hex>"},
///   "cryptoUser": {"kdf": {"algorithm": "argon2id", "version": 19, "t": 3, "m": 65536, "p": 4, "salt"}, "hash"},
///   "transcripts": ["transcripts/<ceremony>.jsonl"]
/// }
/// ```
///
/// Nothing in it is secret: public keys, share numbers, a check value and a password-hash
/// verifier.
public struct Enrolment: Codable, Hashable, Sendable {
  public static let fileName = "enrolment.json"
  public static let currentFormat = 1

  public var format: Int
  /// The serial of the device this enrolment belongs to.
  public var device: String
  public var officers: [EnrolledOfficer]
  public var unsealHolders: [EnrolledUnsealHolder]
  public var activation: ActivationRecord?
  public var cryptoUser: CredentialVerifier?
  /// Transcripts of the ceremonies run on the device, relative to its directory.
  public var transcripts: [String]

  public init(device: String) {
    self.format = Enrolment.currentFormat
    self.device = device
    self.officers = []
    self.unsealHolders = []
    self.activation = nil
    self.cryptoUser = nil
    self.transcripts = []
  }

  /// The officer called `name`, if enrolled.
  public func officer(named name: String) -> EnrolledOfficer? {
    officers.first { $0.name == name }
  }

  /// Checks that `officer` is enrolled for `role` and that `signature` (raw r || s) over
  /// `challenge` verifies under their enrolled public key. Throws `officerRefused` naming the
  /// reason otherwise.
  public func checkAuthorisation(
    role: Role, officer name: String, challenge: [UInt8], signature: [UInt8]
  ) throws {
    guard let officer = officer(named: name) else {
      throw HSMBridgeError(.officerRefused, "\(name) is not an enrolled officer of this device")
    }
    guard officer.roles.contains(role) else {
      let held = officer.roles.map(\.rawValue).joined(separator: ", ")
      throw HSMBridgeError(
        .officerRefused, "\(name) is enrolled as \(held.isEmpty ? "no role" : held), not as \(role)")
    }
    guard let key = Hex.decode(officer.publicKey),
      OfficerSignature.isValid(signature, over: challenge, publicKey: key)
    else {
      throw HSMBridgeError(
        .officerRefused, "the signature of \(name)'s token does not verify under their enrolled key \(officer.keyID)")
    }
  }
}

/// ECDSA P-256 over SHA-256, as officer tokens sign: raw r || s over the SHA-256 of a challenge.
public enum OfficerSignature {
  /// Whether `signature` (64 bytes r || s) over `message` verifies under `publicKey` (X9.63).
  public static func isValid(_ signature: [UInt8], over message: [UInt8], publicKey: [UInt8]) -> Bool {
    guard let key = try? P256.Signing.PublicKey(x963Representation: publicKey),
      let parsed = try? P256.Signing.ECDSASignature(rawRepresentation: signature)
    else { return false }
    return key.isValidSignature(parsed, for: SHA256.hash(data: message))
  }
}

extension Device {
  /// The path of the device's enrolment file.
  public var enrolmentPath: String { directory + "/" + Enrolment.fileName }

  /// The device's enrolment; `enrolmentInvalid` when it has none (never initialised by a
  /// ceremony) or it does not parse.
  public func enrolment() throws -> Enrolment {
    guard let data = FileManager.default.contents(atPath: enrolmentPath) else {
      throw HSMBridgeError(
        .enrolmentInvalid, "\(enrolmentPath) is missing: the device was not initialised by the init-device ceremony")
    }
    let enrolment: Enrolment
    do {
      enrolment = try JSONDecoder().decode(Enrolment.self, from: data)
    } catch {
      throw HSMBridgeError(.enrolmentInvalid, "\(enrolmentPath) is not a valid enrolment: \(error)")
    }
    guard enrolment.format == Enrolment.currentFormat else {
      throw HSMBridgeError(
        .enrolmentInvalid,
        "\(enrolmentPath) has format \(enrolment.format); this build reads \(Enrolment.currentFormat)")
    }
    guard enrolment.device == manifest.serial else {
      throw HSMBridgeError(
        .enrolmentInvalid, "\(enrolmentPath) belongs to device \(enrolment.device), not \(manifest.serial)")
    }
    return enrolment
  }

  /// Writes the enrolment (0600, atomically).
  public func writeEnrolment(_ enrolment: Enrolment) throws {
    guard enrolment.device == manifest.serial else {
      throw HSMBridgeError(
        .invalidArgument, "enrolment for device \(enrolment.device) cannot be written to \(manifest.serial)")
    }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    try writeAtomically(Array(try encoder.encode(enrolment)) + [0x0A], to: enrolmentPath)
  }
}
