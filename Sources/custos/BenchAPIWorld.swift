import Ceremony
import Custody
import Foundation
import HSMBridge
import Logging
import Vault
import VaultWire

#if canImport(Glibc)
import Glibc
#endif

/// The throw-away world of `custos bench api`: a directory under the system's temporary
/// directory holding an init-device rehearsal (the ceremony the tests rehearse), the real
/// `custos-hsm` on it, unsealed by two holders, and the real `custos-server` on a SQLite file
/// of its own with one API key of every scope. Everything is stopped and removed by `close()`.
final class BenchAPIWorld: @unchecked Sendable {
  let directory: String
  private(set) var hsm: ChildProcess?
  private(set) var server: ChildProcess?
  /// `http://127.0.0.1:PORT`.
  private(set) var baseURL = ""
  /// The API key (all scopes) made with `custos-server keys create`.
  private(set) var apiKey = ""
  /// Seconds the rehearsal, the device's start and unseal, and the server's start took.
  private(set) var ceremonySeconds = 0.0
  private(set) var startSeconds = 0.0
  private let logger: Logger

  var socket: String { directory + "/hsm.sock" }
  var database: String { directory + "/server/custos.sqlite" }

  /// Makes the directory; nothing runs yet.
  init(logger: Logger) throws {
    var template = Array((NSTemporaryDirectory() + "/custos-bench-api-XXXXXX").utf8CString)
    guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
      throw CommandFailure("cannot make a temporary directory: \(String(cString: strerror(errno)))")
    }
    directory = URL(fileURLWithPath: String(cString: made)).standardizedFileURL.path
    self.logger = logger
  }

  /// Rehearses init-device, starts and unseals custos-hsm, makes an API key and starts
  /// custos-server on port 0.
  func start(ceremony: String, participants: String) async throws {
    let began = ContinuousClock.now
    let rehearsal = directory + "/rehearsal"
    try FileManager.default.createDirectory(
      atPath: rehearsal, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    let people: Participants
    do {
      people = try Participants.load(participants, baseDirectory: rehearsal)
      _ = try CeremonyEngine(
        script: try CeremonyScript.load(ceremony), participants: people, deviceDirectory: directory + "/device",
        rehearsal: true, prompter: RehearsalPrompter(participants: people, output: { _ in }), logger: logger
      ).run()
    } catch let error as CeremonyError {
      throw CommandFailure("the init-device rehearsal failed: \(error)")
    }
    ceremonySeconds = seconds(ContinuousClock.now - began)

    let started = ContinuousClock.now
    let hsm = try ChildProcess.launch(
      "custos-hsm", ["--device", directory + "/device", "--socket", socket], errorFile: directory + "/custos-hsm.log")
    self.hsm = hsm
    try await unseal(people)

    let keys = try ChildProcess.run(
      "custos-server", ["keys", "create", "--database", database, "--name", "bench-api", "--scope", "all"])
    apiKey = keys.trimmingCharacters(in: .whitespacesAndNewlines)
    guard apiKey.hasPrefix("custos-ak1-") else { throw CommandFailure("custos-server keys create printed no key") }

    let credential = people.cryptoUserCredential
    let server = try ChildProcess.launch(
      "custos-server",
      [
        "serve", "--port", "0", "--database", database, "--socket", socket, "--cu-credential", credential,
        "--poll-ms", "100",
      ], errorFile: directory + "/custos-server.log")
    self.server = server
    baseURL = server.announced
    startSeconds = seconds(ContinuousClock.now - started)
  }

  /// Two holders of the participants file submit their shares.
  private func unseal(_ people: Participants) async throws {
    let client = try VaultClient(endpoint: .unixSocket(path: socket))
    do {
      let status = try await client.status()
      for share in try people.unsealShares(holders: [], threshold: status.unseal.threshold, rehearsal: true) {
        guard let bytes = FileManager.default.contents(atPath: share.path) else {
          throw CommandFailure("cannot read the share file \(share.path)")
        }
        _ = try await client.unseal(shareFile: Array(bytes), password: share.password)
      }
      let state = try await client.status().state
      guard state == .ready else { throw CommandFailure("the device is \(state) after two holders unsealed it") }
      await client.close()
    } catch {
      await client.close()
      throw error
    }
  }

  /// Stops the server, then the device (SIGTERM, each waited for), and removes the directory.
  func close() {
    server?.stop()
    hsm?.stop()
    try? FileManager.default.removeItem(atPath: directory)
  }
}

/// A child process of this command (custos-hsm, custos-server), found beside this executable.
final class ChildProcess: @unchecked Sendable {
  let process: Process
  /// What it announced it listens on (`listening on ADDRESS`).
  let announced: String
  let errorFile: String

  var pid: pid_t { process.processIdentifier }

  private init(process: Process, announced: String, errorFile: String) {
    self.process = process
    self.announced = announced
    self.errorFile = errorFile
  }

  /// `name` beside this executable.
  static func executable(_ name: String) -> String {
    URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
      .appendingPathComponent(name).path
  }

  /// Starts `name` with `arguments`, its standard error into `errorFile`, and waits (at most a
  /// minute) until it prints `listening on ADDRESS` on standard output.
  static func launch(_ name: String, _ arguments: [String], errorFile: String) throws -> ChildProcess {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable(name))
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    _ = FileManager.default.createFile(atPath: errorFile, contents: nil)
    process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errorFile))
    do {
      try process.run()
    } catch {
      throw CommandFailure("cannot start \(executable(name)): \(error) (build it: swift build -c release)")
    }
    let watchdog = DispatchWorkItem { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
    DispatchQueue.global().asyncAfter(deadline: .now() + 60, execute: watchdog)
    var text = ""
    while !(text.contains("listening on ") && text.hasSuffix("\n")) {
      let chunk = output.fileHandleForReading.availableData
      if chunk.isEmpty { break }
      text += String(decoding: chunk, as: UTF8.self)
    }
    watchdog.cancel()
    guard let line = text.split(separator: "\n").first(where: { $0.contains("listening on ") }) else {
      process.waitUntilExit()
      let errors = (try? String(contentsOfFile: errorFile, encoding: .utf8)) ?? ""
      throw CommandFailure(
        "\(name) exited with \(process.terminationStatus) before listening: \(errors.suffix(2000))")
    }
    return ChildProcess(process: process, announced: String(line.split(separator: " ").last!), errorFile: errorFile)
  }

  /// Runs `name` to its end; its standard output (a failure names its standard error).
  static func run(_ name: String, _ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable(name))
    process.arguments = arguments
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    let text = output.fileHandleForReading.readDataToEndOfFile()
    let errorText = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
      throw CommandFailure(
        "\(name) \(arguments.prefix(2).joined(separator: " ")) failed: \(String(decoding: errorText, as: UTF8.self))")
    }
    return String(decoding: text, as: UTF8.self)
  }

  /// SIGTERM and wait.
  func stop() {
    if process.isRunning { kill(process.processIdentifier, SIGTERM) }
    process.waitUntilExit()
  }
}
