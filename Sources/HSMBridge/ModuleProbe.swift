import Custody
import Foundation
import Logging

/// What a PKCS #11 module offers, learned by loading it against an empty, throw-away token
/// store (for `custos doctor`): its identity and the mechanisms of its free slot.
public struct ModuleProbe: Sendable {
  public let path: String
  public let info: ModuleInfo
  public let mechanisms: [MechanismType]

  /// Loads the module at `path` with a temporary SoftHSM configuration that allows every
  /// mechanism, reads what it offers, and removes the temporary store.
  public init(path: String = PKCS11Module.configuredPath, logger: Logger) throws {
    let scratch = NSTemporaryDirectory() + "custos-probe-\(getpid())-\(Hex.encode(SystemRandom.bytes(4)))"
    try FileManager.default.createDirectory(
      atPath: scratch + "/tokens", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    defer { try? FileManager.default.removeItem(atPath: scratch) }
    let configuration = MechanismAllowList.configurationTemplate
      .replacingOccurrences(of: "@TOKENDIR@", with: scratch + "/tokens")
      .replacingOccurrences(of: "@MECHANISMS@", with: "ALL")
    try writeAtomically(Array(configuration.utf8), to: scratch + "/softhsm2.conf")
    let module = try PKCS11Module(path: path, softHSMConfiguration: scratch + "/softhsm2.conf", logger: logger)
    self.path = path
    self.info = module.info
    self.mechanisms = try module.slots(tokenPresent: false).first.map { try module.mechanisms($0) } ?? []
  }
}
