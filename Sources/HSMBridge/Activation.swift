import Crypto
import Custody
import Foundation

/// A partition's raw PINs, derived from the device's activation secret. Nobody types them:
/// only code that has activated the device holds them.
public struct PartitionPINs: Sendable {
  public let partition: String
  /// The partition token's Security Officer PIN.
  public let securityOfficer: SecretBytes
  /// The partition token's User PIN.
  public let user: SecretBytes

  public init(partition: String, securityOfficer: SecretBytes, user: SecretBytes) {
    self.partition = partition
    self.securityOfficer = securityOfficer
    self.user = user
  }
}

/// The result of activating (unsealing) a device: every partition's PINs.
public struct DeviceActivation: Sendable {
  /// PINs by partition name.
  public let partitions: [String: PartitionPINs]
  /// The unseal key holders whose shares were used.
  public let holders: [String]

  /// An activation from PINs already at hand (a test device's, whose PINs are known).
  public init(partitions: [String: PartitionPINs], holders: [String]) {
    self.partitions = partitions
    self.holders = holders
  }

  /// The PINs of `partition`.
  public func pins(_ partition: String) throws -> PartitionPINs {
    guard let pins = partitions[partition] else {
      throw HSMBridgeError(
        .invalidArgument,
        "activation has no PINs for partition '\(partition)' (it has \(partitions.keys.sorted().joined(separator: ", ")))"
      )
    }
    return pins
  }
}

/// The activation secret: 32 bytes from the token's RNG, from which every partition's SO and
/// User PIN derive with HKDF-SHA256, split 2-of-3 among unseal key holders and then zeroed.
public enum ActivationSecret {
  /// Bytes in a secret.
  public static let length = 32
  /// HKDF salt of every derivation from the secret (versioned domain separation).
  static let salt = Array("custos.activation.v1".utf8)

  /// The PINs of each partition: lower-case hex of HKDF-SHA256(secret, salt, "pin|NAME|so" or
  /// "pin|NAME|user"), 64 characters.
  public static func partitionPINs(from secret: SecretBytes, partitions: [String]) -> [String: PartitionPINs] {
    var pins = [String: PartitionPINs]()
    for partition in partitions {
      pins[partition] = PartitionPINs(
        partition: partition,
        securityOfficer: derive(secret, info: "pin|\(partition)|so").hexEncoded(),
        user: derive(secret, info: "pin|\(partition)|user").hexEncoded())
    }
    return pins
  }

  /// HKDF-SHA256(secret, salt, "check"): recorded in the enrolment so the device recognises
  /// the right secret. Reveals nothing about the secret or the PINs.
  public static func checkValue(of secret: SecretBytes) -> [UInt8] {
    derive(secret, info: "check").withUnsafeBytes { Array($0) }
  }

  static func derive(_ secret: SecretBytes, info: String) -> SecretBytes {
    let key = secret.withUnsafeBytes { SymmetricKey(data: $0) }
    let derived = HKDF<SHA256>.deriveKey(
      inputKeyMaterial: key, salt: salt, info: Array(info.utf8), outputByteCount: 32)
    return derived.withUnsafeBytes { SecretBytes($0) }
  }
}

/// One unseal key holder's share file: their Shamir share of the activation secret, encrypted
/// with AES-256-GCM under Argon2id(t=3, m=64 MiB, p=4) of their password.
///
/// ```
/// {
///   "format": "custos-unseal-share", "version": 1,
///   "device": "<device serial>", "holder": "frank", "index": 1, "threshold": 2, "count": 3,
///   "kdf": {"algorithm": "argon2id", "version": 19, "t": 3, "m": 65536, "p": 4, "salt": "<hex 16>"},
///   "cipher": {"algorithm": "AES-256-GCM", "nonce": "<hex 12>", "ciphertext": "<hex>", "tag": "<hex 16>"}
/// }
/// ```
///
/// The associated data binds the ciphertext to the device, holder, index and threshold, so a
/// share cannot be passed off for another holder or device.
public struct UnsealShareFile: Codable, Hashable, Sendable {
  public struct Cipher: Codable, Hashable, Sendable {
    public var algorithm: String
    public var nonce: String
    public var ciphertext: String
    public var tag: String
  }

  public static let formatName = "custos-unseal-share"
  public static let currentVersion = 1

  public var format: String
  public var version: Int
  public var device: String
  public var holder: String
  public var index: Int
  public var threshold: Int
  public var count: Int
  public var kdf: Argon2.Record
  public var cipher: Cipher

  /// Encrypts `share` for `holder` under `password`. `salt` (16 bytes) and `nonce` (12 bytes)
  /// come from the token's RNG.
  public static func seal(
    _ share: ShamirShare, holder: String, device: String, threshold: Int, count: Int,
    password: SecretBytes, salt: [UInt8], nonce: [UInt8], parameters: Argon2.Parameters = .custos
  ) throws -> UnsealShareFile {
    guard salt.count == 16, nonce.count == 12 else {
      throw HSMBridgeError(.invalidArgument, "a share file needs a 16-byte salt and a 12-byte nonce")
    }
    var file = UnsealShareFile(
      format: formatName, version: currentVersion, device: device, holder: holder, index: Int(share.index),
      threshold: threshold, count: count,
      kdf: Argon2.Record(salt: salt, parameters: parameters),
      cipher: Cipher(algorithm: "AES-256-GCM", nonce: Hex.encode(nonce), ciphertext: "", tag: ""))
    let key = try file.key(password: password)
    let sealed = try share.value.withUnsafeBytes { plaintext in
      try AES.GCM.seal(
        plaintext, using: key, nonce: AES.GCM.Nonce(data: nonce), authenticating: file.associatedData)
    }
    file.cipher.ciphertext = Hex.encode(sealed.ciphertext)
    file.cipher.tag = Hex.encode(sealed.tag)
    return file
  }

  /// Decrypts the share with `password`: `wrongPassword` when it does not open.
  public func open(password: SecretBytes, path: String) throws -> ShamirShare {
    guard let nonce = Hex.decode(cipher.nonce), let ciphertext = Hex.decode(cipher.ciphertext),
      let tag = Hex.decode(cipher.tag), cipher.algorithm == "AES-256-GCM", (1...255).contains(index)
    else {
      throw HSMBridgeError(.shareInvalid, "\(path): the share file's cipher fields are not valid")
    }
    let key = try self.key(password: password)
    do {
      let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: nonce), ciphertext: ciphertext, tag: tag)
      var plaintext = try AES.GCM.open(box, using: key, authenticating: associatedData)
      defer { plaintext.withUnsafeMutableBytes { SecretBytes.zero($0) } }
      return ShamirShare(index: UInt8(index), value: SecretBytes(plaintext))
    } catch {
      throw HSMBridgeError(
        .wrongPassword,
        "the share file \(path) of \(holder) does not open with the password given (a wrong password, or the file was altered)"
      )
    }
  }

  /// Reads and checks the structure of a share file.
  public static func read(_ path: String) throws -> UnsealShareFile {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw HSMBridgeError(.shareInvalid, "no share file at \(path)")
    }
    return try decode(Array(data), source: path)
  }

  /// Checks the structure of a share file's bytes (as a holder submits them to a running
  /// device); `source` names them in errors.
  public static func decode(_ bytes: [UInt8], source: String) throws -> UnsealShareFile {
    let file: UnsealShareFile
    do {
      file = try JSONDecoder().decode(UnsealShareFile.self, from: Data(bytes))
    } catch {
      throw HSMBridgeError(.shareInvalid, "\(source) is not a Custos unseal share file: \(error)")
    }
    guard file.format == formatName, file.version == currentVersion else {
      throw HSMBridgeError(
        .shareInvalid,
        "\(source) is \(file.format) version \(file.version), not \(formatName) version \(currentVersion)")
    }
    return file
  }

  /// Writes the file (0600). Refuses to replace an existing file: a share is never overwritten.
  public func write(to path: String) throws {
    guard !FileManager.default.fileExists(atPath: path) else {
      throw HSMBridgeError(.fileSystem, "\(path) already exists; a share file is never overwritten")
    }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try writeAtomically(Array(try encoder.encode(self)) + [0x0A], to: path)
  }

  var associatedData: [UInt8] {
    Array("\(UnsealShareFile.formatName)/\(version)|\(device)|\(holder)|\(index)|\(threshold)|\(count)".utf8)
  }

  private func key(password: SecretBytes) throws -> SymmetricKey {
    do {
      return try kdf.derive(password).withUnsafeBytes { SymmetricKey(data: $0) }
    } catch let error as HSMBridgeError where error.code == .invalidArgument {
      throw HSMBridgeError(.shareInvalid, "share of \(holder): \(error.reason)")
    }
  }

}

/// A share presented for activation: the holder's share file and their password.
public struct UnsealShare: Sendable {
  public let path: String
  public let password: SecretBytes

  public init(path: String, password: SecretBytes) {
    self.path = path
    self.password = password
  }
}

/// A share opened with its holder's password: who holds it and the share itself (secret).
public struct OpenedShare: Sendable {
  public let holder: String
  public let share: ShamirShare
}

extension Device {
  /// Activates (unseals) the device: decrypts each share with its holder's password, combines a
  /// quorum of them into the activation secret, checks it against the enrolment and derives the
  /// partition PINs. The secret is zeroed before this returns.
  ///
  /// Fails, naming the reason, with fewer shares than the threshold (`notEnoughShares`), a share
  /// given twice, a share of another device or holder (`shareInvalid`), a wrong password
  /// (`wrongPassword`), or shares that do not combine into this device's secret
  /// (`activationFailed`). Nothing on the device changes.
  public func activate(shares: [UnsealShare]) throws -> DeviceActivation {
    let record = try activationRecord()
    guard shares.count >= record.threshold else {
      throw HSMBridgeError(
        .notEnoughShares,
        "\(shares.count) share\(shares.count == 1 ? "" : "s") given; device \(manifest.name) needs \(record.threshold) of its \(record.shares) unseal shares"
      )
    }
    var opened = [OpenedShare]()
    for share in shares {
      let file = try UnsealShareFile.read(share.path)
      try checkShare(file, source: share.path, alreadyGiven: opened.map(\.holder))
      opened.append(try openShare(file, password: share.password, source: share.path))
    }
    return try activate(opened: opened)
  }

  /// The device's activation record (threshold, shares, partitions, check value).
  public func activationRecord() throws -> ActivationRecord {
    guard let record = try enrolment().activation else {
      throw HSMBridgeError(.enrolmentInvalid, "device \(manifest.serial) has no activation record")
    }
    return record
  }

  /// Checks, before any password is tried, that `file` is a share of this device held by the
  /// holder enrolled for its number, and not one of `alreadyGiven` (`shareInvalid`,
  /// `notEnoughShares`).
  public func checkShare(_ file: UnsealShareFile, source: String, alreadyGiven: [String] = []) throws {
    guard file.device == manifest.serial else {
      throw HSMBridgeError(
        .shareInvalid, "\(source) is a share of device \(file.device), not of \(manifest.serial)")
    }
    guard try enrolment().unsealHolders.contains(EnrolledUnsealHolder(name: file.holder, shareIndex: file.index))
    else {
      throw HSMBridgeError(
        .shareInvalid, "\(source): \(file.holder) is not enrolled as the holder of share \(file.index)")
    }
    guard !alreadyGiven.contains(file.holder) else {
      throw HSMBridgeError(
        .notEnoughShares, "the share of \(file.holder) was given twice; a quorum needs distinct holders")
    }
  }

  /// Decrypts a share checked by `checkShare` with its holder's password (Argon2id at its
  /// recorded cost): `wrongPassword` when it does not open.
  public func openShare(_ file: UnsealShareFile, password: SecretBytes, source: String) throws -> OpenedShare {
    OpenedShare(holder: file.holder, share: try file.open(password: password, path: source))
  }

  /// Combines opened shares of distinct holders into the activation secret, checks it against
  /// the enrolment and derives every partition's PINs; the secret is zeroed before this returns.
  /// `notEnoughShares` below the threshold, `activationFailed` when they do not combine into
  /// this device's secret.
  public func activate(opened: [OpenedShare]) throws -> DeviceActivation {
    let record = try activationRecord()
    let holders = opened.map(\.holder)
    guard Set(holders).count == opened.count, opened.count >= record.threshold else {
      throw HSMBridgeError(
        .notEnoughShares,
        "\(Set(holders).count) distinct share\(Set(holders).count == 1 ? "" : "s") given; device \(manifest.name) needs \(record.threshold) of its \(record.shares) unseal shares"
      )
    }
    let secret = try Shamir.combine(opened.map(\.share))
    guard
      SecretBytes(ActivationSecret.checkValue(of: secret)).constantTimeEquals(
        SecretBytes(Hex.decode(record.check) ?? []))
    else {
      throw HSMBridgeError(
        .activationFailed, "the shares of \(holders.joined(separator: ", ")) do not combine into this device's secret")
    }
    return DeviceActivation(
      partitions: ActivationSecret.partitionPINs(from: secret, partitions: record.partitions), holders: holders)
  }

  /// Proves an activation: every partition's derived User and SO PINs log in to its token.
  /// Throws the PKCS #11 error of the first that does not.
  public func checkActivation(_ activation: DeviceActivation) throws {
    for entry in manifest.partitions {
      let pins = try activation.pins(entry.name)
      let session = try partition(entry.name).openSession(readWrite: true)
      defer { try? session.close() }
      try session.login(.user, pin: pins.user)
      try session.logout()
      try session.login(.securityOfficer, pin: pins.securityOfficer)
      try session.logout()
    }
  }
}
