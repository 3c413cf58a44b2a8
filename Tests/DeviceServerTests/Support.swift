import Ceremony
import Custody
import Foundation
import HSMBridge
import Logging
import Synchronization
import TestSupport
import Testing
import Vault
import VaultWire

#if canImport(Glibc)
import Glibc
#endif

/// The repository's root, found from this file's path.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  .deletingLastPathComponent().path

/// An executable built beside this test binary (`custos-hsm`, `custos`).
func builtExecutable(_ name: String) -> String {
  URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    .appendingPathComponent(name).path
}

/// The unseal passwords of the example participants file.
let holderPasswords = [
  "frank": "frank-rehearsal-password", "grace": "grace-rehearsal-password", "heidi": "heidi-rehearsal-password",
]

/// One init-device rehearsal (Ceremonies/init-device.yaml with the example participants), made
/// once per test process: Argon2 runs at its real cost. Tests that leave marks on a device
/// (failures, lockouts, commits) work on a `copy()`.
final class RehearsedDevice: @unchecked Sendable {
  static let shared = Result { try RehearsedDevice() }
  static func get() throws -> RehearsedDevice { try shared.get() }

  let directory: TemporaryDirectory
  let serial: String
  var device: String { directory.appending("device") }
  var rehearsal: String { directory.appending("rehearsal") }
  var participants: String { directory.appending("participants.yaml") }
  var credential: String { rehearsal + "/crypto-user.credential" }
  func share(_ holder: String) -> String { rehearsal + "/shares/\(holder).share" }

  private init() throws {
    directory = try TemporaryDirectory("custos-hsm-rehearsal")
    try FileManager.default.createDirectory(atPath: directory.appending("rehearsal"), withIntermediateDirectories: true)
    try FileManager.default.copyItem(
      atPath: repositoryRoot + "/Ceremonies/participants.example.yaml", toPath: directory.appending("participants.yaml")
    )
    let people = try Participants.load(
      directory.appending("participants.yaml"), baseDirectory: directory.appending("rehearsal"))
    let outcome = try CeremonyEngine(
      script: try CeremonyScript.load(repositoryRoot + "/Ceremonies/init-device.yaml"), participants: people,
      deviceDirectory: directory.appending("device"), rehearsal: true,
      prompter: RehearsalPrompter(participants: people, output: { _ in }), logger: testLogger
    ).run()
    serial = outcome.serial
    rehearsedPath = directory.path
    atexit { if let path = rehearsedPath { try? FileManager.default.removeItem(atPath: path) } }
  }

  /// A copy of the device in its own directory (same serial, same shares and credential).
  func copy() throws -> DeviceCopy {
    let target = try TemporaryDirectory("custos-hsm-copy")
    try FileManager.default.copyItem(atPath: device, toPath: target.appending("device"))
    return DeviceCopy(directory: target, source: self)
  }

  /// The share of `holder` with its password (or `password`).
  func unsealShare(_ holder: String, password: String? = nil) throws -> (file: [UInt8], password: SecretBytes) {
    let bytes = try #require(FileManager.default.contents(atPath: share(holder)))
    return (Array(bytes), SecretBytes(utf8: password ?? holderPasswords[holder]!))
  }

  /// The Crypto User credential the ceremony wrote.
  func cryptoUserCredential() throws -> SecretBytes { try VaultClient.readCredential(at: credential) }

  /// Activates `path` in this process with frank's and grace's shares (for tests that look at
  /// or prepare a device while no custos-hsm holds it).
  func activate(_ device: Device) throws -> DeviceActivation {
    try device.activate(
      shares: ["frank", "grace"].map {
        UnsealShare(path: share($0), password: SecretBytes(utf8: holderPasswords[$0]!))
      })
  }
}

nonisolated(unsafe) private var rehearsedPath: String?

/// A copy of the rehearsed device.
struct DeviceCopy {
  let directory: TemporaryDirectory
  let source: RehearsedDevice
  var device: String { directory.appending("device") }
}

/// A running `custos-hsm` child process.
final class HSMProcess: @unchecked Sendable {
  let process = Process()
  /// What it announced it listens on (`unix:PATH` or `tls:HOST:PORT`).
  private(set) var address = ""
  let socket: String?
  private let errorPath: String
  private let logs: TemporaryDirectory

  /// Starts custos-hsm on `device` and waits until it listens. `extra` are further arguments.
  init(device: String, socket: String?, extra: [String] = []) throws {
    logs = try TemporaryDirectory("custos-hsm-logs")
    errorPath = logs.appending("stderr")
    _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
    self.socket = socket
    process.executableURL = URL(fileURLWithPath: builtExecutable("custos-hsm"))
    process.arguments = ["--device", device] + (socket.map { ["--socket", $0] } ?? []) + extra
    var environment = ProcessInfo.processInfo.environment
    environment["CUSTOS_LOG_LEVEL"] = "info"
    process.environment = environment
    let output = Pipe()
    process.standardOutput = output
    process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errorPath))
    try process.run()
    // A process that never announces is killed after a minute, so a broken start fails the
    // test instead of hanging it.
    let started = process
    let announced = Flag()
    DispatchQueue.global().asyncAfter(deadline: .now() + 60) {
      if !announced.value.withLock({ $0 }) && started.isRunning { kill(started.processIdentifier, SIGKILL) }
    }
    // Read lines until it announces where it listens (or exits).
    var text = ""
    while !text.contains("listening on ") || !text.hasSuffix("\n") {
      let chunk = output.fileHandleForReading.availableData
      if chunk.isEmpty { break }
      text += String(decoding: chunk, as: UTF8.self)
    }
    guard let line = text.split(separator: "\n").first(where: { $0.contains("listening on ") }) else {
      process.waitUntilExit()
      throw HSMStartFailure(status: process.terminationStatus, errors: standardError)
    }
    announced.value.withLock { $0 = true }
    address = String(line.split(separator: " ").last!)
  }

  /// What it wrote on standard error so far.
  var standardError: String { (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "" }

  /// A client on its socket.
  func client() throws -> VaultClient {
    try VaultClient(endpoint: .unixSocket(path: try #require(socket)))
  }

  /// Sends `signal` and waits for the exit; the exit status (or the signal that ended it).
  @discardableResult
  func stop(_ signal: Int32 = SIGTERM) -> (status: Int32, reason: Process.TerminationReason) {
    kill(process.processIdentifier, signal)
    process.waitUntilExit()
    return (process.terminationStatus, process.terminationReason)
  }

  deinit {
    if process.isRunning {
      kill(process.processIdentifier, SIGKILL)
      process.waitUntilExit()
    }
  }
}

/// A flag shared with a timer.
private final class Flag: Sendable {
  let value = Mutex(false)
}

/// custos-hsm exited before it listened.
struct HSMStartFailure: Error, CustomStringConvertible {
  let status: Int32
  let errors: String
  var description: String { "custos-hsm exited with \(status) before listening: \(errors)" }
}

/// A short socket path (Unix socket paths are limited to 107 bytes).
func socketPath(_ directory: TemporaryDirectory, _ name: String = "hsm.sock") -> String {
  directory.appending(name)
}

/// The refusal a device call ended with (nil when it was accepted).
func refusal<T>(_ body: () async throws -> T) async -> VaultWireError? {
  do {
    _ = try await body()
    return nil
  } catch {
    return VaultWireError.from(error)
  }
}

/// Unseals with frank's and grace's shares; the state after each.
@discardableResult
func unseal(_ client: VaultClient, _ rehearsed: RehearsedDevice) async throws -> [DeviceState] {
  var states = [DeviceState]()
  for holder in ["frank", "grace"] {
    let share = try rehearsed.unsealShare(holder)
    states.append(try await client.unseal(shareFile: share.file, password: share.password).state)
  }
  return states
}
