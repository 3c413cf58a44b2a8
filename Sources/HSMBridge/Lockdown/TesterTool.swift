import Custody
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Runs a tester's own tool (pkcs11-tool, a python-pkcs11 script, anything that loads a PKCS #11
/// module) against one partition of an activated device.
///
/// The tool gets `PKCS11_MODULE`, `SOFTHSM2_CONF`, `PKCS11_TOKEN_LABEL` and `PKCS11_PIN` (the
/// partition's User PIN) in ITS environment only: they are passed to `posix_spawnp` and never
/// set in this process's environment (HSMBridge sets `SOFTHSM2_CONF` only around
/// `C_Initialize`). The PIN is copied into the child's environment block from its zeroing
/// buffer, and that block is zeroed as soon as the child has started.
///
/// How the tool opens the token while this process keeps the device locked: `device.lock` is
/// Custos's own advisory `flock(2)`, taken by Custos processes only and opened close-on-exec,
/// so the child neither holds nor waits for it. SoftHSM never looks at it: its file store
/// coordinates processes with its own locks (`token.lock` and one per object file, `fcntl`
/// record locks) and re-reads a token when another process changed it. Before starting the tool
/// this process proves the PIN logs in, then lets go of its own module instance, so the token
/// is the tool's alone while it runs.
public enum TesterTool {
  /// The variables the tool gets, in its environment only.
  public static let variables = ["PKCS11_MODULE", "SOFTHSM2_CONF", "PKCS11_TOKEN_LABEL", "PKCS11_PIN"]

  /// Starts `command` (looked up on `PATH`) with the partition's variables, waits for it, and
  /// returns its exit status (128 + the signal number if a signal ended it).
  ///
  /// - Parameters:
  ///   - standardOutput, standardError: files to send the tool's output to (created 0600),
  ///     instead of this process's.
  public static func run(
    _ command: [String], device: Device, partition name: String, pins: PartitionPINs,
    standardOutput: String? = nil, standardError: String? = nil, logger: Logger
  ) throws -> Int32 {
    guard let executable = command.first, !executable.isEmpty else {
      throw HSMBridgeError(.invalidArgument, "no command to run (give it after --)")
    }
    guard let entry = device.manifest.partitions.first(where: { $0.name == name }) else {
      throw HSMBridgeError(
        .invalidArgument,
        "device \(device.manifest.name) has no partition '\(name)' (it has \(device.manifest.partitions.map(\.name).joined(separator: ", ")))"
      )
    }
    try proveLogin(device: device, partition: name, pins: pins)

    let values: [(String, String)] = [
      ("PKCS11_MODULE", PKCS11Module.configuredPath),
      ("SOFTHSM2_CONF", device.configurationPath(ofPartition: name)),
      ("PKCS11_TOKEN_LABEL", entry.tokenLabel),
    ]
    var environment = [UnsafeMutablePointer<CChar>?]()
    var index = 0
    while let variable = environ[index] {
      index += 1
      let text = String(cString: variable)
      if variables.contains(where: { text.hasPrefix($0 + "=") }) { continue }
      environment.append(strdup(variable))
    }
    for (key, value) in values { environment.append(strdup("\(key)=\(value)")) }
    let pinPrefix = Array("PKCS11_PIN=".utf8)
    let pinLength = pinPrefix.count + pins.user.count + 1
    let pinEntry = UnsafeMutableRawBufferPointer.allocate(byteCount: pinLength, alignment: 1)
    pinEntry.initializeMemory(as: UInt8.self, repeating: 0)
    pins.user.withUnsafeBytes { pin in
      for (offset, byte) in pinPrefix.enumerated() { pinEntry[offset] = byte }
      for (offset, byte) in pin.enumerated() { pinEntry[pinPrefix.count + offset] = byte }
    }
    environment.append(pinEntry.baseAddress!.assumingMemoryBound(to: CChar.self))
    environment.append(nil)
    var arguments = command.map { strdup($0) } + [nil]
    defer {
      SecretBytes.zero(pinEntry)
      pinEntry.deallocate()
      for entry in environment.dropLast(2) { free(entry) }
      for argument in arguments { free(argument) }
    }

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if let standardOutput {
      posix_spawn_file_actions_addopen(&actions, 1, standardOutput, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    }
    if let standardError {
      posix_spawn_file_actions_addopen(&actions, 2, standardError, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    }
    var pid: pid_t = 0
    let started = posix_spawnp(&pid, executable, &actions, nil, &arguments, &environment)
    // The child has its own copy of the environment block now.
    SecretBytes.zero(pinEntry)
    guard started == 0 else {
      throw HSMBridgeError(.toolFailed, "cannot start \(executable): \(String(cString: strerror(started)))")
    }
    logger.info(
      "tester tool started",
      metadata: ["hsm.device": "\(device.directory)", "hsm.partition": "\(name)", "tool.command": "\(executable)"])
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
      guard errno == EINTR else {
        throw HSMBridgeError(.toolFailed, "waiting for \(executable): \(String(cString: strerror(errno)))")
      }
    }
    let signal = status & 0x7F
    let code = signal == 0 ? (status >> 8) & 0xFF : 128 + signal
    logger.info("tester tool finished", metadata: ["hsm.partition": "\(name)", "tool.status": "\(code)"])
    return code
  }

  /// Writes the partition's configuration for where the device is now, proves the User PIN
  /// logs in, and lets go of this process's session (the module instance goes with the last
  /// reference to the partition).
  private static func proveLogin(device: Device, partition name: String, pins: PartitionPINs) throws {
    let session = try device.partition(name).openSession(readWrite: false)
    try session.login(.user, pin: pins.user)
    try session.logout()
    try session.close()
  }
}
