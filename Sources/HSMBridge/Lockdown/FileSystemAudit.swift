import Custody
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Who may read a device directory: its mode, its owner, and every file or directory inside
/// that is open to group or others. Used by `custos doctor` and the lockdown audit.
public struct DevicePermissions: Hashable, Sendable {
  /// The directory inspected.
  public let path: String
  /// Its permission bits.
  public let mode: Int
  /// Its owner's uid.
  public let owner: UInt
  /// Paths (relative, with their octal mode) open to group or others.
  public let exposed: [String]

  /// Whether the directory is 0700, owned by this process's user, with nothing inside open to
  /// group or others.
  public var isPrivate: Bool { mode == 0o700 && owner == UInt(getuid()) && exposed.isEmpty }

  /// Reads the modes of `path` and of everything under it.
  public static func inspect(_ path: String) throws -> DevicePermissions {
    let fileManager = FileManager.default
    guard let attributes = try? fileManager.attributesOfItem(atPath: path) else {
      throw HSMBridgeError(.deviceNotFound, "\(path) does not exist")
    }
    var exposed = [String]()
    if let walker = fileManager.enumerator(atPath: path) {
      for case let relative as String in walker {
        let mode = ((try? fileManager.attributesOfItem(atPath: path + "/" + relative))?[.posixPermissions] as? Int) ?? 0
        if mode & 0o077 != 0 { exposed.append("\(relative) (\(String(mode, radix: 8)))") }
      }
    }
    return DevicePermissions(
      path: path, mode: (attributes[.posixPermissions] as? Int) ?? 0,
      owner: (attributes[.ownerAccountID] as? UInt) ?? UInt.max, exposed: exposed.sorted())
  }
}

/// Searches the files under a directory for byte strings: the lockdown audit's check that no
/// key value and no PIN sits in plaintext in a token store or a device directory.
public enum PlaintextScan {
  /// One byte string to look for, with a name for reports (never the bytes themselves).
  public struct Needle: Sendable {
    /// What the bytes are, for reports.
    public let name: String
    /// The bytes searched for.
    public let bytes: SecretBytes

    /// A needle named `name`.
    public init(name: String, bytes: SecretBytes) {
      self.name = name
      self.bytes = bytes
    }
  }

  /// Every (relative file path, needle name) where a needle occurs in a regular file under
  /// `directory`.
  public static func find(_ needles: [Needle], under directory: String) -> [(file: String, needle: String)] {
    var found = [(file: String, needle: String)]()
    guard let walker = FileManager.default.enumerator(atPath: directory) else { return found }
    for case let relative as String in walker {
      let path = directory + "/" + relative
      var isDirectory: ObjCBool = false
      guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
        var contents = FileManager.default.contents(atPath: path)
      else { continue }
      for needle in needles where needle.bytes.count > 0 {
        let hit = needle.bytes.withUnsafeBytes { contents.range(of: Data($0)) != nil }
        if hit { found.append((relative, needle.name)) }
      }
      contents.withUnsafeMutableBytes { SecretBytes.zero($0) }
    }
    return found
  }

  /// The needles of one secret value: its bytes, and its hex in lower and upper case.
  public static func needles(_ name: String, _ value: SecretBytes) -> [Needle] {
    let lower = value.hexEncoded()
    let upper = lower.withUnsafeBytes { raw in
      SecretBytes(count: raw.count) { out in
        for (index, byte) in raw.enumerated() {
          out[index] = (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte) ? byte - 32 : byte
        }
      }
    }
    return [
      Needle(name: name, bytes: value), Needle(name: "\(name) (hex)", bytes: lower),
      Needle(name: "\(name) (HEX)", bytes: upper),
    ]
  }
}

extension Device {
  /// Copies the whole device directory to `destination` (which must not exist) and opens the
  /// copy as a device of its own, with its own lock and module instances.
  ///
  /// Token files are encrypted under the partition PINs, so the copy opens with the same PINs.
  /// The lockdown audit runs destructive attacks against such a copy, never the device itself.
  /// The caller holds this device open (and so locked) while it copies, so the copy is
  /// consistent.
  public func snapshot(to destination: String, logger: Logger) throws -> Device {
    let destination = absolutePath(destination)
    guard !FileManager.default.fileExists(atPath: destination) else {
      throw HSMBridgeError(.deviceExists, "\(destination) already exists; a snapshot is never copied over anything")
    }
    do {
      try FileManager.default.copyItem(atPath: directory, toPath: destination)
      try Device.restrictPermissions(destination)
    } catch let error as HSMBridgeError {
      throw error
    } catch {
      try? FileManager.default.removeItem(atPath: destination)
      throw HSMBridgeError(.fileSystem, "cannot copy \(directory) to \(destination): \(error)")
    }
    return try Device.open(at: destination, logger: logger)
  }
}
