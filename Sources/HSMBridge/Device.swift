import Custody
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What `device.json` records of a device.
public struct DeviceManifest: Codable, Hashable, Sendable {
  /// The layout version of the device directory.
  public var format: Int
  public var name: String
  /// A random serial number, unique per device.
  public var serial: String
  /// ISO 8601, UTC.
  public var created: String
  public var partitions: [PartitionManifest]

  public static let currentFormat = 1
}

/// What `device.json` records of one partition.
public struct PartitionManifest: Codable, Hashable, Sendable {
  public var name: String
  /// The label of the partition's token.
  public var tokenLabel: String
  /// The serial SoftHSM gave the token.
  public var tokenSerial: String
  /// The profile its allow-list came from.
  public var profile: String
  /// The allow-list, by `CKM_` name.
  public var mechanisms: [String]
}

/// How to create one partition.
public struct PartitionSetup: Sendable {
  public var name: String
  public var allowList: MechanismAllowList
  public var soPIN: SecretBytes
  public var userPIN: SecretBytes

  /// A partition with the allow-list profile of its name (or `default`).
  public init(name: String, soPIN: SecretBytes, userPIN: SecretBytes, allowList: MechanismAllowList? = nil) {
    self.name = name
    self.allowList = allowList ?? MechanismAllowList.forPartition(name)
    self.soPIN = soPIN
    self.userPIN = userPIN
  }
}

/// An emulated HSM device: a directory (0700) holding one SoftHSM token per partition, each with
/// its own configuration and mechanism allow-list, and an exclusive lock so that one process at
/// a time drives it.
///
/// ```
/// DIR/device.json                        name, serial, partitions
/// DIR/device.lock                        flock(2) held while the device is open
/// DIR/partitions/NAME/softhsm2.conf      the partition's SoftHSM configuration
/// DIR/partitions/NAME/tokens/            its token store (file backend)
/// ```
public final class Device: @unchecked Sendable {
  /// The device directory.
  public let directory: String
  public let manifest: DeviceManifest
  private let lock: DeviceLock
  let logger: Logger
  private let openPartitions = Mutex([String: WeakPartition]())

  private init(directory: String, manifest: DeviceManifest, lock: DeviceLock, logger: Logger) {
    self.directory = directory
    self.manifest = manifest
    self.lock = lock
    self.logger = logger
  }

  /// Opens the device at `directory`, taking its lock.
  ///
  /// Fails with `deviceLocked` when another process (or another `Device` in this one) has it.
  public static func open(at directory: String, logger: Logger) throws -> Device {
    let directory = absolutePath(directory)
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory),
      isDirectory.boolValue
    else {
      throw HSMBridgeError(.deviceNotFound, "no device directory at \(directory)")
    }
    let lock = try DeviceLock(path: directory + "/device.lock")
    let manifest = try readManifest(directory)
    return Device(directory: directory, manifest: manifest, lock: lock, logger: logger)
  }

  /// Creates a device at `directory`, which must not exist.
  ///
  /// The device is built in a temporary sibling directory; `populate` runs there with the device
  /// open (to generate keys, enrol people, ...). Only when every step succeeded is it renamed
  /// into place. Any failure removes it, leaving nothing behind. `populate` must let go of the
  /// partitions it opened before returning.
  public static func create(
    at directory: String, name: String, partitions: [PartitionSetup], logger: Logger,
    populate: (Device) throws -> Void = { _ in }
  ) throws -> Device {
    let directory = absolutePath(directory)
    let fileManager = FileManager.default
    guard !fileManager.fileExists(atPath: directory) else {
      throw HSMBridgeError(.deviceExists, "\(directory) already exists; a device is never created over one")
    }
    let parent = (directory as NSString).deletingLastPathComponent
    guard fileManager.fileExists(atPath: parent) else {
      throw HSMBridgeError(.fileSystem, "parent directory \(parent) does not exist")
    }
    guard !partitions.isEmpty else {
      throw HSMBridgeError(.invalidArgument, "a device needs at least one partition")
    }
    var seen = Set<String>()
    for partition in partitions {
      try validatePartitionName(partition.name)
      guard seen.insert(partition.name).inserted else {
        throw HSMBridgeError(.invalidArgument, "partition '\(partition.name)' is named twice")
      }
    }

    let staging = try makeSiblingDirectory(next: directory, purpose: "creating")
    do {
      let lock = try DeviceLock(path: staging + "/device.lock")
      var partitionManifests = [PartitionManifest]()
      for setup in partitions {
        partitionManifests.append(try initializePartition(setup, in: staging, logger: logger))
      }
      let manifest = DeviceManifest(
        format: DeviceManifest.currentFormat, name: name, serial: Hex.encode(SystemRandom.bytes(8)),
        created: ISO8601DateFormatter().string(from: Date()), partitions: partitionManifests)
      try writeManifest(manifest, to: staging)
      let staged = Device(directory: staging, manifest: manifest, lock: lock, logger: logger)
      try populate(staged)
      try staged.requireNoOpenPartitions()
      try restrictPermissions(staging)
      guard rename(staging, directory) == 0 else {
        throw HSMBridgeError(
          .fileSystem, "cannot move the new device into \(directory): \(String(cString: strerror(errno)))")
      }
      logger.info(
        "device created",
        metadata: ["hsm.device": "\(directory)", "hsm.serial": "\(manifest.serial)"])
      return Device(directory: directory, manifest: manifest, lock: lock, logger: logger)
    } catch {
      try? fileManager.removeItem(atPath: staging)
      throw error
    }
  }

  /// The partition called `name`, its module instance loaded with the partition's own
  /// configuration. One instance per partition per process: asking again returns the same one
  /// while it is alive.
  public func partition(_ name: String) throws -> Partition {
    guard let entry = manifest.partitions.first(where: { $0.name == name }) else {
      throw HSMBridgeError(
        .invalidArgument,
        "device \(manifest.name) has no partition '\(name)' (it has \(manifest.partitions.map(\.name).joined(separator: ", ")))"
      )
    }
    return try openPartitions.withLock { open in
      if let existing = open[name]?.partition { return existing }
      let configuration = try Device.writeConfiguration(
        partitionDirectory: Device.partitionDirectory(name, in: directory),
        allowList: allowList(of: entry))
      let module = try PKCS11Module(softHSMConfiguration: configuration, logger: logger)
      let slot = try module.slot(withTokenLabel: entry.tokenLabel)
      let partition = Partition(device: self, name: name, module: module, slot: slot, configurationPath: configuration)
      open[name] = WeakPartition(partition: partition)
      return partition
    }
  }

  /// The path of the partition's `softhsm2.conf` (for a tester's own tools).
  public func configurationPath(ofPartition name: String) -> String {
    Device.partitionDirectory(name, in: directory) + "/softhsm2.conf"
  }

  /// The path of the partition's token store.
  public func tokenDirectory(ofPartition name: String) -> String {
    Device.partitionDirectory(name, in: directory) + "/tokens"
  }

  /// The bytes of a file of the device directory (`relativePath` inside it), nil when there is none.
  public func readFile(_ relativePath: String) -> [UInt8]? {
    FileManager.default.contents(atPath: directory + "/" + relativePath).map { Array($0) }
  }

  /// Writes a file of the device directory (0600): to a temporary file beside it, synced, then
  /// renamed into place, so a crash leaves the old bytes or the new, never a mix.
  public func writeFile(_ relativePath: String, contents: [UInt8]) throws {
    try writeAtomically(contents, to: directory + "/" + relativePath)
  }

  /// The allow-list recorded for a partition.
  public func allowList(of entry: PartitionManifest) -> MechanismAllowList {
    MechanismAllowList(
      profile: entry.profile, mechanisms: entry.mechanisms.compactMap(MechanismType.init(name:)))
  }

  /// Number of objects stored in a partition's token, public and private, without logging in:
  /// the object files of SoftHSM's file backend (`token.object` is the token itself).
  public func storedObjectCount(ofPartition name: String) throws -> Int {
    let tokens = tokenDirectory(ofPartition: name)
    var count = 0
    for token in try FileManager.default.contentsOfDirectory(atPath: tokens) {
      let files = (try? FileManager.default.contentsOfDirectory(atPath: tokens + "/" + token)) ?? []
      count += files.filter { $0.hasSuffix(".object") && $0 != "token.object" }.count
    }
    return count
  }

  private func requireNoOpenPartitions() throws {
    let stillOpen = openPartitions.withLock { open in
      open.filter { $0.value.partition != nil }.map(\.key)
    }
    guard stillOpen.isEmpty else {
      throw HSMBridgeError(
        .invalidArgument,
        "partitions \(stillOpen.joined(separator: ", ")) are still open at the end of device creation")
    }
  }

  // MARK: Creation steps

  private static func initializePartition(
    _ setup: PartitionSetup, in device: String, logger: Logger
  )
    throws -> PartitionManifest
  {
    let partitionDirectory = partitionDirectory(setup.name, in: device)
    try FileManager.default.createDirectory(
      atPath: partitionDirectory + "/tokens", withIntermediateDirectories: true,
      attributes: [.posixPermissions: 0o700])
    let configuration = try writeConfiguration(
      partitionDirectory: partitionDirectory, allowList: setup.allowList)
    let module = try PKCS11Module(softHSMConfiguration: configuration, logger: logger)
    guard let empty = try module.slots(tokenPresent: true).first(where: { try !module.tokenInfo($0).initialized })
    else {
      throw HSMBridgeError(.tokenNotFound, "SoftHSM offers no free slot for partition \(setup.name)")
    }
    try module.initToken(empty, soPIN: setup.soPIN, label: setup.name)
    let slot = try module.slot(withTokenLabel: setup.name)
    let session = try module.openSession(slot, readWrite: true)
    try session.login(.securityOfficer, pin: setup.soPIN)
    try session.initPIN(setup.userPIN)
    try session.logout()
    try session.close()
    let info = try module.tokenInfo(slot)
    return PartitionManifest(
      name: setup.name, tokenLabel: info.label, tokenSerial: info.serialNumber,
      profile: setup.allowList.profile, mechanisms: setup.allowList.mechanisms.map(\.name))
  }

  static func partitionDirectory(_ name: String, in device: String) -> String {
    device + "/partitions/" + name
  }

  /// Writes the partition's configuration for where the device is now; returns its path.
  private static func writeConfiguration(
    partitionDirectory: String, allowList: MechanismAllowList
  )
    throws -> String
  {
    let path = partitionDirectory + "/softhsm2.conf"
    let text = allowList.softHSMConfiguration(tokenDirectory: partitionDirectory + "/tokens")
    if (try? String(contentsOfFile: path, encoding: .utf8)) != text {
      try writeAtomically(Array(text.utf8), to: path)
    }
    return path
  }

  private static func validatePartitionName(_ name: String) throws {
    let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789-")
    guard !name.isEmpty, name.count <= 32, name.allSatisfy(allowed.contains), name.first != "-"
    else {
      throw HSMBridgeError(
        .invalidArgument,
        "partition name '\(name)' must be 1 to 32 characters of a-z, 0-9 and '-', not starting with '-'")
    }
  }

  /// A fresh 0700 directory `.NAME.PURPOSE-XXXXXX` beside `directory` (same file system, same
  /// protection as the device): for staging a new device, or a lockdown audit's snapshot.
  static func makeSiblingDirectory(next directory: String, purpose: String) throws -> String {
    let parent = (directory as NSString).deletingLastPathComponent
    let base = (directory as NSString).lastPathComponent
    var template = Array("\(parent)/.\(base).\(purpose)-XXXXXX".utf8CString)
    guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
      throw HSMBridgeError(
        .fileSystem, "cannot create a \(purpose) directory in \(parent): \(String(cString: strerror(errno)))")
    }
    let path = String(cString: made)
    chmod(path, 0o700)
    return path
  }

  /// Directories 0700 and files 0600 throughout the device.
  static func restrictPermissions(_ directory: String) throws {
    let fileManager = FileManager.default
    chmod(directory, 0o700)
    guard let walker = fileManager.enumerator(atPath: directory) else { return }
    for case let relative as String in walker {
      let path = directory + "/" + relative
      var isDirectory: ObjCBool = false
      _ = fileManager.fileExists(atPath: path, isDirectory: &isDirectory)
      chmod(path, isDirectory.boolValue ? 0o700 : 0o600)
    }
  }

  private static func readManifest(_ directory: String) throws -> DeviceManifest {
    let path = directory + "/device.json"
    guard let data = FileManager.default.contents(atPath: path) else {
      throw HSMBridgeError(.deviceInvalid, "\(path) is missing: not a Custos device")
    }
    do {
      let manifest = try JSONDecoder().decode(DeviceManifest.self, from: data)
      guard manifest.format == DeviceManifest.currentFormat else {
        throw HSMBridgeError(
          .deviceInvalid, "\(path) has format \(manifest.format); this build reads \(DeviceManifest.currentFormat)")
      }
      return manifest
    } catch let error as HSMBridgeError {
      throw error
    } catch {
      throw HSMBridgeError(.deviceInvalid, "\(path) is not a valid device manifest: \(error)")
    }
  }

  private static func writeManifest(_ manifest: DeviceManifest, to directory: String) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try writeAtomically(Array(try encoder.encode(manifest)) + [0x0A], to: directory + "/device.json")
  }
}

/// One partition of an open device: its module instance and the slot of its token.
public final class Partition: @unchecked Sendable {
  /// The device, kept open (and locked) while the partition is in use.
  public let device: Device
  public let name: String
  public let module: PKCS11Module
  public let slot: SlotID
  /// The `softhsm2.conf` this instance was loaded with.
  public let configurationPath: String

  init(device: Device, name: String, module: PKCS11Module, slot: SlotID, configurationPath: String) {
    self.device = device
    self.name = name
    self.module = module
    self.slot = slot
    self.configurationPath = configurationPath
  }

  /// Opens a session on the partition's token.
  public func openSession(readWrite: Bool = true) throws -> Session {
    try module.openSession(slot, readWrite: readWrite)
  }

  /// A read-write user session, logged in with `pin`, in a new instance of the partition's
  /// module (a private copy with its own SoftHSM state, reading the same token), for work whose
  /// instance is to be finalised on its own: the vault's renewed request sessions. The instance
  /// is finalised and unloaded when its last session goes.
  public func openUserSessionInNewInstance(pin: SecretBytes) throws -> Session {
    let fresh = try PKCS11Module(softHSMConfiguration: configurationPath, logger: device.logger)
    let session = try fresh.openSession(try fresh.slot(withTokenLabel: try tokenInfo().label), readWrite: true)
    try session.login(.user, pin: pin)
    return session
  }

  /// The token's information.
  public func tokenInfo() throws -> TokenInfo { try module.tokenInfo(slot) }

  /// The mechanisms the token offers (its allow-list, as SoftHSM applies it).
  public func mechanisms() throws -> [MechanismType] { try module.mechanisms(slot) }
}

private struct WeakPartition {
  weak var partition: Partition?
}

/// An exclusive flock(2) on a device's lock file, released when the lock is freed.
final class DeviceLock: Sendable {
  private let descriptor: Int32

  init(path: String) throws {
    let descriptor = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    guard descriptor >= 0 else {
      throw HSMBridgeError(.fileSystem, "cannot open \(path): \(String(cString: strerror(errno)))")
    }
    guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
      close(descriptor)
      throw HSMBridgeError(
        .deviceLocked,
        "device \((path as NSString).deletingLastPathComponent) is in use by another process (lock held on \(path))")
    }
    self.descriptor = descriptor
  }

  deinit {
    flock(descriptor, LOCK_UN)
    close(descriptor)
  }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it into place.
func writeAtomically(_ bytes: [UInt8], to path: String, mode: mode_t = 0o600) throws {
  let temporary = path + ".tmp-\(getpid())"
  let descriptor = Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
  guard descriptor >= 0 else {
    throw HSMBridgeError(.fileSystem, "cannot write \(temporary): \(String(cString: strerror(errno)))")
  }
  let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
  let synced = fsync(descriptor)
  close(descriptor)
  guard written == bytes.count, synced == 0, rename(temporary, path) == 0 else {
    unlink(temporary)
    throw HSMBridgeError(.fileSystem, "cannot write \(path): \(String(cString: strerror(errno)))")
  }
}

func absolutePath(_ path: String) -> String {
  let url = URL(fileURLWithPath: path)
  return url.standardizedFileURL.path
}
