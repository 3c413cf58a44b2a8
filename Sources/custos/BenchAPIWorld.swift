import Ceremony
import Custody
import Foundation
import HSMBridge
import Logging
import ProcessSupport
import Vault
import VaultWire

#if canImport(Glibc)
import Glibc
#endif

/// The throw-away world of `custos bench api`: a directory under the system's temporary
/// directory holding an init-device rehearsal (the ceremony the tests rehearse), the real
/// `custos-hsm` on it, unsealed by two holders, and the real `custos-server` on a SQLite file
/// of its own with one API key of every scope. Everything is stopped and removed by `close()`;
/// both children also die with this process, however it ends (`ChildProcess`).
final class BenchAPIWorld: @unchecked Sendable {
  let directory: String
  private let lock = NSLock()
  private var children = [String: ChildProcess]()
  private var closed = false
  var hsm: ChildProcess? { lock.withLock { children["custos-hsm"] } }
  var server: ChildProcess? { lock.withLock { children["custos-server"] } }
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
    _ = try launch("custos-hsm", ["--device", directory + "/device", "--socket", socket])
    try await unseal(people)

    let arguments = ["keys", "create", "--database", database, "--name", "bench-api", "--scope", "all"]
    let keys = try ChildProcess.run(siblingExecutable("custos-server"), arguments).checked("custos-server", arguments)
    apiKey = keys.trimmingCharacters(in: .whitespacesAndNewlines)
    guard apiKey.hasPrefix("custos-ak1-") else { throw CommandFailure("custos-server keys create printed no key") }

    let credential = people.cryptoUserCredential
    baseURL = try launch(
      "custos-server",
      [
        "serve", "--port", "0", "--database", database, "--socket", socket, "--cu-credential", credential,
        "--poll-ms", "100",
      ])
    startSeconds = seconds(ContinuousClock.now - started)
  }

  /// Starts `name` (beside this executable) as a child of the world, its standard error into
  /// `NAME.log`, and waits (at most a minute) until it announces `listening on ADDRESS`; ADDRESS.
  private func launch(_ name: String, _ arguments: [String]) throws -> String {
    let child = ChildProcess(
      executable: siblingExecutable(name), arguments: arguments, standardErrorPath: directory + "/\(name).log")
    try lock.withLock {
      // A world closed by a signal while it was starting starts nothing more.
      guard !closed else { throw CommandFailure("stopped before \(name) started") }
      children[name] = child
    }
    do {
      return try child.startAndAwaitAnnouncement()
    } catch let error as ChildProcessError where error.code == .notExecutable {
      throw CommandFailure("\(error) (build it: swift build -c release)")
    }
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

  /// Stops the server, then the device (SIGTERM; each killed when it has not exited within a
  /// minute), and removes the directory. Only the first call does anything: a signal's trap
  /// and the command's own end may both call it.
  func close() {
    let running: [String: ChildProcess]? = lock.withLock {
      if closed { return nil }
      closed = true
      return children
    }
    guard let running else { return }
    for name in ["custos-server", "custos-hsm"] {
      guard let child = running[name], child.pid != 0 else { continue }
      let ended = child.signalAndAwaitExit(SIGTERM)
      if ended.killedAfterLimit {
        logger.warning(
          "\(name) did not stop within a minute of SIGTERM: killed", metadata: ["process.pid": "\(child.pid)"])
      }
    }
    try? FileManager.default.removeItem(atPath: directory)
  }
}
