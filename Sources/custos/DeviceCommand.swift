import ArgumentParser
import Ceremony
import Custody
import Foundation
import HSMBridge

struct DeviceCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "device",
    abstract: "Create and inspect emulated HSM devices.",
    subcommands: [Create.self, Info.self, Activate.self])

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Create a device directory with one SoftHSM token per partition.",
      discussion: """
        Each partition gets the mechanism allow-list of softhsm/<name>.mechanisms (or
        softhsm/default.mechanisms). PINs given here are test PINs: the key ceremony derives
        real partition PINs that nobody types. Without --so-pin/--user-pin you are prompted.
        """)

    @Argument(help: "The device directory to create (must not exist).")
    var directory: String

    @Option(name: .customLong("partition"), help: "A partition to create (repeatable).")
    var partitions: [String] = []

    @Option(help: "The device's name (default: the directory's name).")
    var name: String?

    @Option(name: .customLong("so-pin"), help: "Test Security Officer PIN for every partition.")
    var soPIN: String?

    @Option(name: .customLong("user-pin"), help: "Test user PIN for every partition.")
    var userPIN: String?

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
      if partitions.isEmpty { throw ValidationError("name at least one --partition") }
    }

    func run() async throws {
      let logger = logging.makeLogger("custos.device")
      let so =
        try soPIN.map(SecretBytes.init(utf8:)) ?? TerminalInput.secret("Security Officer PIN for the new partitions")
      let user = try userPIN.map(SecretBytes.init(utf8:)) ?? TerminalInput.secret("User PIN for the new partitions")
      let device = try Device.create(
        at: directory, name: name ?? URL(fileURLWithPath: directory).lastPathComponent,
        partitions: partitions.map { PartitionSetup(name: $0, soPIN: so, userPIN: user) },
        logger: logger)
      print("created device \(device.manifest.name) (serial \(device.manifest.serial)) at \(device.directory)")
      for partition in device.manifest.partitions {
        print(
          "  partition \(partition.name): token serial \(partition.tokenSerial), \(partition.mechanisms.count) mechanisms (profile \(partition.profile))"
        )
      }
    }
  }

  struct Info: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Show a device's partitions, tokens, mechanisms and object counts.")

    @Argument(help: "The device directory.")
    var directory: String

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
      let logger = logging.makeLogger("custos.device")
      let device = try Device.open(at: directory, logger: logger)
      let report = try DeviceReport(device)
      if json {
        try printJSON(report)
      } else {
        print(report.text)
      }
    }
  }
}

/// What `custos device info` shows.
struct DeviceReport: Codable {
  struct MechanismEntry: Codable {
    var name: String
    var minKeySize: UInt
    var maxKeySize: UInt
    var usages: [String]
  }
  struct PartitionEntry: Codable {
    var name: String
    var tokenLabel: String
    var tokenSerial: String
    var manufacturer: String
    var model: String
    var library: String
    var flags: [String]
    var storedObjects: Int
    var profile: String
    var mechanisms: [MechanismEntry]
  }
  var name: String
  var serial: String
  var created: String
  var directory: String
  var partitions: [PartitionEntry]

  init(_ device: Device) throws {
    name = device.manifest.name
    serial = device.manifest.serial
    created = device.manifest.created
    directory = device.directory
    partitions = try device.manifest.partitions.map { entry in
      let partition = try device.partition(entry.name)
      let token = try partition.tokenInfo()
      var flags = [String]()
      if token.initialized { flags.append("initialized") }
      if token.userPINInitialized { flags.append("user-pin-set") }
      if token.loginRequired { flags.append("login-required") }
      if token.hasRandomNumberGenerator { flags.append("rng") }
      if token.writeProtected { flags.append("write-protected") }
      if token.userPINLocked { flags.append("user-pin-locked") }
      if token.soPINLocked { flags.append("so-pin-locked") }
      let mechanisms = try partition.mechanisms().sorted().map { type in
        let info = try partition.module.mechanismInfo(type, slot: partition.slot)
        return MechanismEntry(
          name: type.name, minKeySize: info.minKeySize, maxKeySize: info.maxKeySize, usages: info.usages)
      }
      return PartitionEntry(
        name: entry.name, tokenLabel: token.label, tokenSerial: token.serialNumber,
        manufacturer: token.manufacturer, model: token.model,
        library:
          "\(partition.module.info.manufacturer): \(partition.module.info.libraryDescription) \(partition.module.info.libraryVersion)",
        flags: flags, storedObjects: try device.storedObjectCount(ofPartition: entry.name),
        profile: entry.profile, mechanisms: mechanisms)
    }
  }

  var text: String {
    var lines = ["device \(name)  serial \(serial)  created \(created)", "  at \(directory)"]
    for partition in partitions {
      lines.append("")
      lines.append("partition \(partition.name)")
      lines.append(
        "  token      '\(partition.tokenLabel)'  serial \(partition.tokenSerial)  (\(partition.manufacturer) \(partition.model))"
      )
      lines.append("  library    \(partition.library)")
      lines.append("  flags      \(partition.flags.joined(separator: ", "))")
      lines.append("  objects    \(partition.storedObjects) stored")
      lines.append("  mechanisms \(partition.mechanisms.count), allow-list profile '\(partition.profile)':")
      let width = partition.mechanisms.map(\.name.count).max() ?? 0
      for mechanism in partition.mechanisms {
        let sizes = mechanism.maxKeySize == 0 ? "" : "  key \(mechanism.minKeySize)-\(mechanism.maxKeySize)"
        lines.append(
          "    \(mechanism.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(mechanism.usages.joined(separator: ","))\(sizes)"
        )
      }
    }
    return lines.joined(separator: "\n")
  }
}

extension DeviceCommand {
  struct Activate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Check that a quorum of unseal key holders activates a device.",
      discussion: """
        Each holder's share file opens with their password (asked on the terminal without echo); \
        the shares combine into the activation secret, which the device recognises, and every \
        partition's derived User and SO PIN logs in. Nothing is shown and nothing changes. With \
        --rehearsal, share files and passwords come from the participants file.
        """)

    @Argument(help: "The device directory.")
    var directory: String

    @Option(name: .customLong("share"), help: "A holder's share file (repeatable).")
    var shares: [String] = []

    @Option(name: .customLong("holder"), help: "With --rehearsal: a holder of the participants file (repeatable).")
    var holders: [String] = []

    @Flag(help: "Take share files and passwords from the participants file.")
    var rehearsal = false

    @Option(help: "With --rehearsal: the participants file.")
    var participants: String?

    @Option(
      name: .customLong("rehearsal-dir"),
      help: "With --rehearsal: the rehearsal directory (default: rehearsal/ beside the device).")
    var rehearsalDirectory: String?

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
      let logger = logging.makeLogger("custos.device")
      let device = try Device.open(at: directory, logger: logger)
      var unseal = [UnsealShare]()
      if rehearsal {
        guard let participants else { throw ValidationError("--rehearsal needs --participants FILE") }
        let people = try Participants.load(
          participants, baseDirectory: rehearsalBase(device: device.directory, rehearsalDirectory))
        do {
          unseal = try people.unsealShares(holders: holders, threshold: holders.count, rehearsal: true)
        } catch let error as CeremonyError {
          throw CommandFailure(error.description)
        }
      } else {
        for path in shares {
          let file = try UnsealShareFile.read(path)
          unseal.append(
            UnsealShare(
              path: path, password: try TerminalInput.secret("\(file.holder), the password of your share file")))
        }
      }
      do {
        let activation = try device.activate(shares: unseal)
        try device.checkActivation(activation)
        print(
          "device \(device.manifest.name) activated by \(activation.holders.joined(separator: " and ")): the PINs of \(device.manifest.partitions.map(\.name).joined(separator: ", ")) derive and log in (not shown)"
        )
      } catch let error as HSMBridgeError {
        throw CommandFailure("activation refused: \(error.reason)")
      }
    }
  }
}

/// The directory a rehearsal's relative paths resolve against: `--rehearsal-dir`, else
/// `rehearsal/` beside the device.
func rehearsalBase(device directory: String, _ rehearsalDirectory: String?) -> String {
  URL(
    fileURLWithPath: rehearsalDirectory
      ?? ((URL(fileURLWithPath: directory).standardizedFileURL.path as NSString).deletingLastPathComponent
        + "/rehearsal")
  ).standardizedFileURL.path
}
