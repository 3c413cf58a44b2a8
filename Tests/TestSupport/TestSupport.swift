import Custody
import Foundation
import HSMBridge
import Logging

// Shared by the test targets: temporary directories and real SoftHSM devices in them.

/// A directory under the system's temporary directory, removed when the value goes away.
public final class TemporaryDirectory: @unchecked Sendable {
  public let path: String

  public init(_ prefix: String = "custos-test") throws {
    var template = Array((NSTemporaryDirectory() + "\(prefix)-XXXXXX").utf8CString)
    guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
      throw POSIXError(.EIO)
    }
    path = String(cString: made)
  }

  deinit { try? FileManager.default.removeItem(atPath: path) }

  public func appending(_ component: String) -> String { path + "/" + component }
}

public enum TestPINs {
  public static let so = "so-pin-1234"
  public static let user = "user-pin-5678"
}

public let testLogger: Logger = {
  var logger = Logger(label: "custos.tests")
  logger.logLevel = .warning
  return logger
}()

/// A fresh device with the named partitions, in its own temporary directory, with the test
/// PINs on every partition.
public struct TestDevice {
  public let directory: TemporaryDirectory
  public let device: Device

  /// - Parameter ownAllowLists: give each partition the allow-list of its name
  ///   (`softhsm/custody.mechanisms`, ...) instead of the `default` profile.
  public init(partitions: [String] = ["scratch"], name: String = "test", ownAllowLists: Bool = false) throws {
    directory = try TemporaryDirectory()
    device = try Device.create(
      at: directory.appending("device"), name: name,
      partitions: partitions.map {
        PartitionSetup(
          name: $0, soPIN: SecretBytes(utf8: TestPINs.so), userPIN: SecretBytes(utf8: TestPINs.user),
          allowList: ownAllowLists ? nil : MechanismAllowList.profile("default"))
      }, logger: testLogger)
  }

  /// The test PINs of every partition, as an activation would give them.
  public var activation: DeviceActivation {
    DeviceActivation(
      partitions: Dictionary(
        uniqueKeysWithValues: device.manifest.partitions.map {
          (
            $0.name,
            PartitionPINs(
              partition: $0.name, securityOfficer: SecretBytes(utf8: TestPINs.so),
              user: SecretBytes(utf8: TestPINs.user))
          )
        }), holders: [])
  }

  /// A read-write session logged in as the user.
  public func userSession(_ partition: String = "scratch") throws -> Session {
    let session = try device.partition(partition).openSession(readWrite: true)
    try session.login(.user, pin: SecretBytes(utf8: TestPINs.user))
    return session
  }
}
