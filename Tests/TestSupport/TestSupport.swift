import Custody
import Foundation
import HSMBridge
import Logging
import ProcessSupport

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

/// Runs `executable` to completion with no standard input (it dies with the test process);
/// its end, standard output and standard error.
public func runProcess(_ executable: String, _ arguments: [String]) throws -> ChildProcess.Completion {
  try ChildProcess.run(executable, arguments)
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

/// A fresh device with the named partitions, in its own temporary directory. Each partition
/// gets the allow-list of `profile` (softhsm/<profile>.mechanisms).
public struct TestDevice {
  public let directory: TemporaryDirectory
  public let device: Device

  /// `profile` names the allow-list of every partition; nil gives each partition the profile
  /// of its name, as a real device has (softhsm/<name>.mechanisms).
  public init(partitions: [String] = ["scratch"], name: String = "test", profile: String? = "default") throws {
    directory = try TemporaryDirectory()
    device = try Device.create(
      at: directory.appending("device"), name: name, partitions: TestDevice.setups(partitions, profile: profile),
      logger: testLogger)
  }

  /// Creates a device, runs `populate` on it, and closes it again, for tests that open it
  /// themselves (perhaps from another process). Keep the directory alive while it is used.
  public static func createClosed(
    partitions: [String], name: String = "test", profile: String? = "default", populate: (Device) throws -> Void
  ) throws -> (directory: TemporaryDirectory, path: String) {
    let directory = try TemporaryDirectory()
    let path = directory.appending("device")
    _ = try Device.create(
      at: path, name: name, partitions: setups(partitions, profile: profile), logger: testLogger, populate: populate)
    return (directory, path)
  }

  static func setups(_ partitions: [String], profile: String?) -> [PartitionSetup] {
    partitions.map {
      PartitionSetup(
        name: $0, soPIN: SecretBytes(utf8: TestPINs.so), userPIN: SecretBytes(utf8: TestPINs.user),
        allowList: profile.flatMap { MechanismAllowList.profile($0) })
    }
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

/// Fills `partition` with what the attribute policy table describes: every key generated from
/// its rows, and each data row's objects (the vault's root-state slots) created from the row's
/// template, as many as its cardinality says. `weaken` replaces the template of the named
/// secret key (to build a deliberately weak device).
public func populateFromPolicyTable(
  partition: String, session: Session, weaken: [String: ([Attribute]) -> [Attribute]] = [:]
) throws {
  let rows = AttributePolicy.rows(partition: partition)
  for label in Set(rows.filter { $0.kind != .data }.compactMap(\.label)).sorted() {
    let keyRows = AttributePolicy.rows(key: label, partition: partition)
    if let change = weaken[label], keyRows.count == 1 {
      _ = try session.generateKey(.aesKeyGen, change(keyRows[0].template))
    } else {
      _ = try AttributePolicy.generateKey(label, partition: partition, session: session)
    }
  }
  for row in rows where row.kind == .data {
    guard case .exactly(let count) = row.cardinality else { continue }
    for _ in 0..<count { _ = try session.createObject(row.template) }
  }
}
