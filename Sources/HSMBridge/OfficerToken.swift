import Custody
import Foundation
import Logging

/// An officer token: the emulated USB token with a PIN pad that one officer carries.
///
/// It is a one-partition `Device` (partition `officer`, allow-list profile `officer`) holding a
/// P-256 key pair generated inside it: the private key signs (after the officer's PIN), is
/// sensitive, private and never extractable. The officer's PIN is the token's User PIN; its SO
/// PIN is random and forgotten at creation, so a token whose PIN is lost is replaced and
/// re-enrolled, never reset.
public final class OfficerToken: @unchecked Sendable {
  /// The token's partition.
  public static let partitionName = "officer"
  /// The label of the officer's key pair.
  public static let keyLabel = "custos.officer"

  /// The token's device (kept open and locked while the token is in use).
  public let device: Device
  /// The officer's name (the device's name).
  public var name: String { device.manifest.name }
  /// The token's public key, X9.63 uncompressed (65 bytes).
  public let publicKey: [UInt8]
  /// The serial of the token's SoftHSM token.
  public var tokenSerial: String { device.manifest.partitions[0].tokenSerial }

  private init(device: Device, publicKey: [UInt8]) {
    self.device = device
    self.publicKey = publicKey
  }

  /// Creates a token for `name` at `directory` (which must not exist), generating the key pair
  /// inside it. Atomic like every device: a failure leaves nothing.
  public static func create(
    at directory: String, name: String, pin: SecretBytes, logger: Logger
  ) throws -> OfficerToken {
    guard (4...255).contains(pin.count) else {
      throw HSMBridgeError(.invalidArgument, "an officer PIN must be 4 to 255 bytes, not \(pin.count)")
    }
    try validateName(name)
    let soPIN = SecretBytes.random(count: 32).hexEncoded()
    let device = try Device.create(
      at: directory, name: name,
      partitions: [
        PartitionSetup(
          name: partitionName, soPIN: soPIN, userPIN: pin, allowList: MechanismAllowList.profile("officer"))
      ], logger: logger
    ) { device in
      let session = try device.partition(partitionName).openSession(readWrite: true)
      try session.login(.user, pin: pin)
      _ = try AttributePolicy.generateKey(keyLabel, partition: partitionName, session: session)
      try session.logout()
      try session.close()
    }
    let token = OfficerToken(device: device, publicKey: try readPublicKey(device))
    logger.info(
      "officer token created",
      metadata: [
        "officer.name": "\(name)", "officer.key_id": "\(EnrolledOfficer.keyID(of: token.publicKey))",
        "hsm.device": "\(directory)",
      ])
    return token
  }

  /// Opens the token at `directory`, reading its public key (no PIN needed).
  public static func open(at directory: String, logger: Logger) throws -> OfficerToken {
    let device = try Device.open(at: directory, logger: logger)
    guard device.manifest.partitions.map(\.name) == [partitionName] else {
      throw HSMBridgeError(.deviceInvalid, "\(directory) is a device, not an officer token")
    }
    return OfficerToken(device: device, publicKey: try readPublicKey(device))
  }

  /// Signs `challenge` with the officer's key after logging in with `pin`: ECDSA P-256 over
  /// SHA-256 of the challenge (digest computed in the token), raw r || s.
  ///
  /// A wrong PIN is `officerRefused` naming the officer and the PKCS #11 code.
  public func sign(_ challenge: [UInt8], pin: SecretBytes) throws -> [UInt8] {
    let session = try device.partition(Self.partitionName).openSession(readWrite: false)
    defer { try? session.close() }
    do {
      try session.login(.user, pin: pin)
    } catch let error as PKCS11Error {
      throw HSMBridgeError(.officerRefused, "\(name)'s officer token refused the PIN (\(error))")
    }
    defer { try? session.logout() }
    guard
      let key = try session.findObjects([.class(.privateKey), .label(Self.keyLabel)]).first
    else {
      throw HSMBridgeError(.deviceInvalid, "\(name)'s officer token has no private key '\(Self.keyLabel)'")
    }
    let digest = try session.digest(.sha256, challenge)
    let signature = try session.sign(.ecdsa, key: key, digest)
    guard OfficerSignature.isValid(signature, over: challenge, publicKey: publicKey) else {
      throw HSMBridgeError(.officerRefused, "\(name)'s officer token made a signature that does not verify")
    }
    return signature
  }

  private static func readPublicKey(_ device: Device) throws -> [UInt8] {
    let session = try device.partition(partitionName).openSession(readWrite: false)
    defer { try? session.close() }
    guard let handle = try session.findObjects([.class(.publicKey), .label(keyLabel)]).first,
      case .ecPoint(let der)? = try session.attribute(.ecPoint, of: handle)
    else {
      throw HSMBridgeError(.deviceInvalid, "\(device.directory) holds no officer public key '\(keyLabel)'")
    }
    // DER OCTET STRING (04 41) around the 65-byte uncompressed point.
    guard der.count == 67, der[0] == 0x04, der[1] == 0x41, der[2] == 0x04 else {
      throw HSMBridgeError(
        .deviceInvalid, "\(device.directory): the officer public key is not an uncompressed P-256 point")
    }
    return Array(der[2...])
  }

  /// Officer names: 1 to 32 characters of a-z, 0-9, '-', '_' and '.'.
  public static func validateName(_ name: String) throws {
    let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    guard !name.isEmpty, name.count <= 32, name.allSatisfy(allowed.contains) else {
      throw HSMBridgeError(
        .invalidArgument, "officer name '\(name)' must be 1 to 32 characters of letters, digits, '-', '_' and '.'")
    }
  }
}
