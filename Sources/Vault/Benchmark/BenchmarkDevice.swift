import Custody
import Foundation
import HSMBridge
import Logging

/// A throw-away device with one custody partition for the benchmarks: its PINs are random and
/// never shown, its user session is open and logged in, and `remove()` deletes it.
public struct BenchmarkDevice {
  public let path: String
  public let device: Device
  /// A read-write user session of the custody partition.
  public let session: Session
  private let userPIN: SecretBytes

  /// Creates the device under `scratchDirectory`, with the custody partition's allow-list.
  public init(in scratchDirectory: String, logger: Logger) throws {
    path = scratchDirectory + "/custos-bench-\(UUID().uuidString)"
    var random = SystemRandomNumberGenerator()
    func pin() -> SecretBytes { SecretBytes((0..<24).map { _ in UInt8.random(in: 0x61...0x7A, using: &random) }) }
    let userPIN = pin()
    device = try Device.create(
      at: path, name: "bench",
      partitions: [
        PartitionSetup(
          name: "custody", soPIN: pin(), userPIN: userPIN, allowList: MechanismAllowList.profile("custody"))
      ], logger: logger)
    session = try device.partition("custody").openSession(readWrite: true)
    try session.login(.user, pin: userPIN)
    self.userPIN = userPIN
  }

  /// Request sessions renewed as the device renews them (`custos-hsm`'s default), so the
  /// in-process benchmark does the same token work as the device.
  public func recycling(operations: Int = SessionRecycling.deviceDefault) throws -> SessionRecycling {
    let partition = try device.partition("custody")
    let pin = userPIN
    return SessionRecycling(operations: operations) { try partition.openUserSessionInNewInstance(pin: pin) }
  }

  /// The custody partition's token directory (what commits flush).
  public var tokenDirectory: String { device.tokenDirectory(ofPartition: "custody") }

  /// Deletes the device's directory.
  public func remove() {
    try? FileManager.default.removeItem(atPath: path)
  }
}
