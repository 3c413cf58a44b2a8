import Ceremony
import Custody
import Foundation
import HSMBridge
import Logging
import ProcessSupport
import VaultWire

#if canImport(Glibc)
import Glibc
#endif

// Real device processes for the tests that need them: one init-device rehearsal per test
// process, copies of its device, and a running custos-hsm child process on one.

/// A test helper's own failure (a missing file, a wrong setup).
public struct TestSupportError: Error, CustomStringConvertible {
  public let description: String
  public init(_ description: String) { self.description = description }
}

/// The repository's root, found from this file's path.
public let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  .deletingLastPathComponent().path

/// An executable built beside this test binary (`custos-hsm`, `custos`).
public func builtExecutable(_ name: String) -> String { siblingExecutable(name) }

/// The unseal passwords of the example participants file.
public let holderPasswords = [
  "frank": "frank-rehearsal-password", "grace": "grace-rehearsal-password", "heidi": "heidi-rehearsal-password",
]

/// One init-device rehearsal (Ceremonies/init-device.yaml with the example participants), made
/// once per test process: Argon2 runs at its real cost. Tests that leave marks on a device
/// (failures, lockouts, commits) work on a `copy()`.
public final class RehearsedDevice: @unchecked Sendable {
  static let shared = Result { try RehearsedDevice() }
  /// The rehearsal of this test process (made at the first call).
  public static func get() throws -> RehearsedDevice { try shared.get() }

  public let directory: TemporaryDirectory
  public let serial: String
  public var device: String { directory.appending("device") }
  public var rehearsal: String { directory.appending("rehearsal") }
  public var participants: String { directory.appending("participants.yaml") }
  public var credential: String { rehearsal + "/crypto-user.credential" }
  public func share(_ holder: String) -> String { rehearsal + "/shares/\(holder).share" }

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
  public func copy() throws -> DeviceCopy {
    let target = try TemporaryDirectory("custos-hsm-copy")
    try FileManager.default.copyItem(atPath: device, toPath: target.appending("device"))
    return DeviceCopy(directory: target, source: self)
  }

  /// The share of `holder` with its password (or `password`).
  public func unsealShare(_ holder: String, password: String? = nil) throws -> (file: [UInt8], password: SecretBytes) {
    guard let bytes = FileManager.default.contents(atPath: share(holder)) else {
      throw TestSupportError("cannot read the share file of \(holder)")
    }
    return (Array(bytes), SecretBytes(utf8: password ?? holderPasswords[holder]!))
  }

  /// The Crypto User credential the ceremony wrote.
  public func cryptoUserCredential() throws -> SecretBytes { try VaultClient.readCredential(at: credential) }

  /// Activates `path` in this process with frank's and grace's shares (for tests that look at
  /// or prepare a device while no custos-hsm holds it).
  public func activate(_ device: Device) throws -> DeviceActivation {
    try device.activate(
      shares: ["frank", "grace"].map {
        UnsealShare(path: share($0), password: SecretBytes(utf8: holderPasswords[$0]!))
      })
  }
}

nonisolated(unsafe) private var rehearsedPath: String?

/// A copy of the rehearsed device.
public struct DeviceCopy {
  public let directory: TemporaryDirectory
  public let source: RehearsedDevice
  public var device: String { directory.appending("device") }
}

/// How long a test's call to a device may take: generous, because an unseal is Argon2id at
/// 64 MiB and several suites unseal their devices at once on a loaded two-core machine (30 s,
/// the client's default, was exceeded there). A call that never answers still fails.
public let testCallTimeout: Duration = .seconds(180)

/// A running `custos-hsm` child process (it dies with the test process).
public final class HSMProcess: @unchecked Sendable {
  public let child: ChildProcess
  /// The Foundation process of `child`.
  public var process: Process { child.process }
  /// What it announced it listens on (`unix:PATH` or `tls:HOST:PORT`).
  public let address: String
  public let socket: String?
  private let logs: TemporaryDirectory

  /// Starts custos-hsm on `device` and waits until it listens. `extra` are further arguments.
  public init(device: String, socket: String?, extra: [String] = []) throws {
    logs = try TemporaryDirectory("custos-hsm-logs")
    self.socket = socket
    var environment = ProcessInfo.processInfo.environment
    environment["CUSTOS_LOG_LEVEL"] = "info"
    child = ChildProcess(
      executable: builtExecutable("custos-hsm"),
      arguments: ["--device", device] + (socket.map { ["--socket", $0] } ?? []) + extra, environment: environment,
      standardErrorPath: logs.appending("stderr"))
    address = try child.startAndAwaitAnnouncement()
  }

  /// What it wrote on standard error so far.
  public var standardError: String { child.standardError }

  /// A client on its socket; its session calls travel as `sessionCalls` says.
  public func client(_ sessionCalls: VaultClient.SessionCalls = .pipelined) throws -> VaultClient {
    guard let socket else { throw TestSupportError("this custos-hsm listens on TCP, not a socket") }
    return try VaultClient(endpoint: .unixSocket(path: socket), timeout: testCallTimeout, sessionCalls: sessionCalls)
  }

  /// Sends `signal` and waits for the exit (a minute at most, then SIGKILL): how it ended.
  @discardableResult
  public func stop(_ signal: Int32 = SIGTERM) -> Termination { child.signalAndAwaitExit(signal) }
}

/// Whether process `pid` runs: it exists and is not a zombie (an orphan's zombie waits for
/// whoever adopted it; it runs nothing and holds no lock, socket or port).
public func isLiveProcess(_ pid: pid_t) -> Bool {
  guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
    let close = stat.lastIndex(of: ")"), stat.index(close, offsetBy: 2) < stat.endIndex
  else { return false }
  return !["Z", "X"].contains(stat[stat.index(close, offsetBy: 2)])
}

/// Polls `condition` every 5 ms until it holds or `seconds` have passed; whether it held. For
/// what happens soon but not at once (a killed parent's child ending), without a fixed sleep.
public func eventually(within seconds: Double = 60, _ condition: () -> Bool) -> Bool {
  let deadline = Date().addingTimeInterval(seconds)
  while !condition() {
    if Date() > deadline { return false }
    usleep(5_000)
  }
  return true
}

/// A short socket path (Unix socket paths are limited to 107 bytes).
public func socketPath(_ directory: TemporaryDirectory, _ name: String = "hsm.sock") -> String {
  directory.appending(name)
}

/// The refusal a device call ended with (nil when it was accepted).
public func refusal<T>(_ body: () async throws -> T) async -> VaultWireError? {
  do {
    _ = try await body()
    return nil
  } catch {
    return VaultWireError.from(error)
  }
}

/// Unseals with frank's and grace's shares; the state after each.
@discardableResult
public func unseal(_ client: VaultClient, _ rehearsed: RehearsedDevice) async throws -> [DeviceState] {
  var states = [DeviceState]()
  for holder in ["frank", "grace"] {
    let share = try rehearsed.unsealShare(holder)
    states.append(try await client.unseal(shareFile: share.file, password: share.password).state)
  }
  return states
}
