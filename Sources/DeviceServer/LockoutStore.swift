import Foundation
import HSMBridge
import Synchronization

/// Which backoff: unseal shares, or the Crypto User credential.
public enum BackoffKind: String, Sendable, CaseIterable {
  case unseal
  case cryptoUser
}

/// The device's two backoffs, kept in `DIR/lockout.json` (0600) so that a restart does not
/// clear them (it would otherwise be a way around them). Rewritten atomically on every change.
///
/// ```
/// {"format": 1, "unseal": {"failures": 5, "lockedUntil": 1732200000000}, "cryptoUser": {"failures": 0}}
/// ```
/// (`lockedUntil` in milliseconds since 1970.) A missing file is a device without failures; a
/// file that does not parse stops the device from starting.
public final class LockoutStore: Sendable {
  public static let fileName = "lockout.json"
  static let currentFormat = 1

  struct File: Codable, Equatable {
    var format: Int
    var unseal: BackoffState
    var cryptoUser: BackoffState
  }

  private let device: Device
  private let file: Mutex<File>

  /// Reads the device's lockout file.
  public init(device: Device) throws {
    self.device = device
    guard let bytes = device.readFile(LockoutStore.fileName) else {
      file = Mutex(File(format: LockoutStore.currentFormat, unseal: BackoffState(), cryptoUser: BackoffState()))
      return
    }
    let decoder = JSONDecoder()
    decoder.dateDecodingStrategy = .millisecondsSince1970
    let path = device.directory + "/" + LockoutStore.fileName
    let parsed: File
    do {
      parsed = try decoder.decode(File.self, from: Data(bytes))
    } catch {
      throw DeviceServerError(
        .lockoutFileInvalid,
        "\(path) does not parse (\(error)); the device will not start without its lockouts: restore the file or investigate"
      )
    }
    guard parsed.format == LockoutStore.currentFormat, parsed.unseal.failures >= 0, parsed.cryptoUser.failures >= 0
    else {
      throw DeviceServerError(.lockoutFileInvalid, "\(path) has format \(parsed.format) or negative counts")
    }
    file = Mutex(parsed)
  }

  /// The current state of one backoff.
  public func state(_ kind: BackoffKind) -> BackoffState {
    file.withLock { kind == .unseal ? $0.unseal : $0.cryptoUser }
  }

  /// Changes one backoff and writes the file before returning. When the write fails the change
  /// still holds in memory (a failure is never forgotten) and the error is thrown.
  @discardableResult
  public func update(_ kind: BackoffKind, _ change: (inout BackoffState) -> Void) throws -> BackoffState {
    let (snapshot, state) = file.withLock { file -> (File, BackoffState) in
      switch kind {
      case .unseal: change(&file.unseal)
      case .cryptoUser: change(&file.cryptoUser)
      }
      return (file, kind == .unseal ? file.unseal : file.cryptoUser)
    }
    let encoder = JSONEncoder()
    encoder.dateEncodingStrategy = .millisecondsSince1970
    encoder.outputFormatting = [.sortedKeys]
    do {
      try device.writeFile(LockoutStore.fileName, contents: Array(try encoder.encode(snapshot)) + [0x0A])
    } catch {
      throw DeviceServerError(.lockoutFileWrite, "cannot write \(LockoutStore.fileName): \(error)")
    }
    return state
  }
}
