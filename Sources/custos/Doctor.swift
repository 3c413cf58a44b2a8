import ArgumentParser
import CSecp256k1
import Foundation
import HSMBridge
import ProcessSupport

/// Checks that this machine can run Custos, and says what to do about anything missing.
struct Doctor: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Check SoftHSM, libsecp256k1, system packages and (optionally) a device's permissions.")

  @Option(help: "Also check this device directory's permissions and lock.")
  var device: String?

  @Flag(help: "Print JSON instead of text.")
  var json = false

  @OptionGroup var logging: LoggingOptions

  /// The Debian packages `make` installs.
  static let packages = [
    "softhsm2", "libsofthsm2-dev", "libsecp256k1-dev", "libp11-kit-dev", "libssl-dev", "libargon2-dev", "opensc",
    "zlib1g-dev",
  ]

  struct Check: Codable {
    var name: String
    var ok: Bool
    var detail: String
    var fix: String?
  }

  func run() async throws {
    let logger = logging.makeLogger("custos.doctor")
    var checks = [Check]()

    let missing = Self.packages.filter { Self.installedVersion(of: $0) == nil }
    checks.append(
      Check(
        name: "debian packages", ok: missing.isEmpty,
        detail: missing.isEmpty
          ? Self.packages.map { "\($0) \(Self.installedVersion(of: $0)!)" }.joined(separator: ", ")
          : "missing: \(missing.joined(separator: " "))",
        fix: missing.isEmpty ? nil : "apt-get update && apt-get install -y \(missing.joined(separator: " "))"))

    let modulePath = PKCS11Module.configuredPath
    do {
      let probe = try ModuleProbe(path: modulePath, logger: logger)
      checks.append(
        Check(
          name: "pkcs11 module", ok: true,
          detail:
            "\(modulePath): \(probe.info.manufacturer) \(probe.info.libraryDescription) \(probe.info.libraryVersion), cryptoki \(probe.info.cryptokiVersion), \(probe.mechanisms.count) mechanisms"
        ))
    } catch {
      checks.append(
        Check(
          name: "pkcs11 module", ok: false, detail: "\(modulePath): \(error)",
          fix: "apt-get install -y softhsm2 (or set CUSTOS_PKCS11_MODULE to a module's path)"))
    }

    let secp = Self.checkSecp256k1()
    checks.append(
      Check(
        name: "libsecp256k1", ok: secp,
        detail: secp
          ? "libsecp256k1 \(Self.installedVersion(of: "libsecp256k1-dev") ?? "?"): 1·G computed correctly"
          : "libsecp256k1 did not compute 1·G",
        fix: secp ? nil : "apt-get install --reinstall -y libsecp256k1-1 libsecp256k1-dev"))

    let tool = FileManager.default.isExecutableFile(atPath: "/usr/bin/pkcs11-tool")
    checks.append(
      Check(
        name: "pkcs11-tool", ok: tool,
        detail: tool ? "/usr/bin/pkcs11-tool (opensc), for testers' own checks" : "not found",
        fix: tool ? nil : "apt-get install -y opensc"))

    let setpriv = ChildProcess.setpriv
    checks.append(
      Check(
        name: "setpriv", ok: setpriv != nil,
        detail: setpriv.map { "\($0) (util-linux): children of custos bench api die with it" } ?? "not found",
        fix: setpriv == nil ? "apt-get install -y util-linux" : nil))

    if let device { checks += Self.checkDevice(device) }

    if json {
      try printJSON(checks)
    } else {
      for check in checks {
        print("\(check.ok ? "ok  " : "FAIL") \(check.name): \(check.detail)")
        if let fix = check.fix { print("     fix: \(fix)") }
      }
    }
    if checks.contains(where: { !$0.ok }) { throw ExitCode(1) }
  }

  static func installedVersion(of package: String) -> String? {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/dpkg-query")
    process.arguments = ["-W", "-f=${Status}|${Version}", package]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    guard (try? process.run()) != nil else { return nil }
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    let parts = output.split(separator: "|")
    guard process.terminationStatus == 0, parts.count == 2, parts[0].hasSuffix("installed") else { return nil }
    return String(parts[1])
  }

  /// Computes the public key of the secret 1, which must be the generator G.
  static func checkSecp256k1() -> Bool {
    guard let context = secp256k1_context_create(UInt32(SECP256K1_CONTEXT_NONE)) else { return false }
    defer { secp256k1_context_destroy(context) }
    var secret = [UInt8](repeating: 0, count: 32)
    secret[31] = 1
    var publicKey = secp256k1_pubkey()
    guard secp256k1_ec_pubkey_create(context, &publicKey, secret) == 1 else { return false }
    var output = [UInt8](repeating: 0, count: 33)
    var length = 33
    secp256k1_ec_pubkey_serialize(context, &output, &length, &publicKey, UInt32(SECP256K1_EC_COMPRESSED))
    return output.prefix(4) == [0x02, 0x79, 0xBE, 0x66] && output.suffix(2) == [0x17, 0x98]
  }

  static func checkDevice(_ path: String) -> [Check] {
    guard let permissions = try? DevicePermissions.inspect(path) else {
      return [
        Check(
          name: "device", ok: false, detail: "\(path) does not exist",
          fix: "custos device create \(path) --partition ...")
      ]
    }
    var checks = [Check]()
    let owned = permissions.owner == UInt(getuid())
    checks.append(
      Check(
        name: "device directory", ok: permissions.mode == 0o700 && owned,
        detail: "\(path) mode \(String(permissions.mode, radix: 8)), owner uid \(permissions.owner)",
        fix: permissions.mode == 0o700
          ? (owned ? nil : "chown -R \(getuid()) \(path)") : "chmod -R go-rwx \(path)"))
    let exposed = permissions.exposed
    checks.append(
      Check(
        name: "device files", ok: exposed.isEmpty,
        detail: exposed.isEmpty
          ? "no file or directory is open to group or others" : "open to others: \(exposed.joined(separator: ", "))",
        fix: exposed.isEmpty ? nil : "chmod -R go-rwx \(path)"))
    // The lock: free, or held by a running device process.
    let descriptor = open(path + "/device.lock", O_RDWR | O_CLOEXEC)
    if descriptor >= 0 {
      let free = flock(descriptor, LOCK_EX | LOCK_NB) == 0
      close(descriptor)
      checks.append(Check(name: "device lock", ok: true, detail: free ? "free" : "held by a running process"))
    } else {
      checks.append(Check(name: "device lock", ok: false, detail: "\(path)/device.lock missing: not a Custos device"))
    }
    return checks
  }
}
