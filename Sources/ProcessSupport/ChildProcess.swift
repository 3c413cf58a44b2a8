import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A child process that dies with this one: the one way Custos starts the programs it runs
/// (`custos bench api` its `custos-hsm` and `custos-server`, the tests theirs).
///
/// It runs under util-linux's `setpriv --pdeathsig TERM`, so the kernel sends it SIGTERM when
/// this process dies, even by SIGKILL: a stray `custos-hsm` would otherwise keep its device's
/// lock and socket, a stray server its port. Every child is started from one thread that lives
/// as long as this process (see `LauncherThread`), because Linux sends the signal when the
/// *thread* that started the child ends. `start()` returns once setpriv has executed the
/// program, so from then on the child is covered; a parent killed during `start()` itself may
/// leave it running.
///
/// Set `process`'s standard input and output before `start()` when they matter; standard error
/// goes to `standardErrorPath` when one is given. Dropping a running `ChildProcess` kills it
/// (SIGKILL) and waits for it.
public final class ChildProcess: @unchecked Sendable {
  /// The Foundation process. Its executable is `setpriv`, which then executes `executable`
  /// in the same process (the process identifier is the program's).
  public let process = Process()
  /// The program this child runs.
  public let executable: String
  /// Its arguments.
  public let arguments: [String]
  /// The file its standard error is written to (created or emptied at `start()`), if any.
  public let standardErrorPath: String?

  /// Prepares a child running `executable` (a path) with `arguments`; nothing runs yet.
  /// `environment` replaces this process's environment when given.
  public init(
    executable: String, arguments: [String] = [], environment: [String: String]? = nil,
    standardErrorPath: String? = nil
  ) {
    self.executable = executable
    self.arguments = arguments
    self.standardErrorPath = standardErrorPath
    if let environment { process.environment = environment }
  }

  /// The process identifier (0 before `start()`).
  public var pid: pid_t { process.processIdentifier }
  /// Whether it has started and not yet been seen to exit.
  public var isRunning: Bool { process.isRunning }
  /// The program's name, for messages.
  public var name: String { URL(fileURLWithPath: executable).lastPathComponent }

  /// What it wrote to `standardErrorPath` so far ("" without one).
  public var standardError: String {
    standardErrorPath.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) } ?? ""
  }

  /// Starts it, with SIGTERM as its parent-death signal. Throws `notExecutable` when
  /// `executable` is not an executable file and `setprivMissing` without util-linux's setpriv;
  /// nothing runs then.
  public func start() throws {
    guard FileManager.default.isExecutableFile(atPath: executable) else {
      throw ChildProcessError(.notExecutable, "\(executable) is not an executable file")
    }
    guard let setpriv = Self.setpriv else {
      throw ChildProcessError(
        .setprivMissing, "setpriv (util-linux) is not in /usr/bin, /bin or on PATH: install util-linux")
    }
    process.executableURL = URL(fileURLWithPath: setpriv)
    process.arguments = ["--pdeathsig", "TERM", "--", executable] + arguments
    if let standardErrorPath {
      guard FileManager.default.createFile(atPath: standardErrorPath, contents: nil),
        let handle = FileHandle(forWritingAtPath: standardErrorPath)
      else {
        throw ChildProcessError(.startFailed, "cannot write \(name)'s standard error to \(standardErrorPath)")
      }
      process.standardError = handle
    }
    do {
      try LauncherThread.shared.run(process)
    } catch {
      throw ChildProcessError(.startFailed, "cannot start \(executable): \(error)")
    }
    awaitProgram(setpriv: setpriv)
  }

  /// Waits (at most 10 s, polling) until setpriv has set the parent-death signal and executed
  /// the program (or the child ended): from then on the child dies with this process.
  private func awaitProgram(setpriv: String) {
    let resolved = URL(fileURLWithPath: setpriv).resolvingSymlinksInPath().path
    let deadline = Date().addingTimeInterval(10)
    while let running = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe"),
      running == resolved, Date() < deadline
    {
      usleep(100)
    }
  }

  /// Starts it and reads its standard output until it prints a whole line containing `marker`
  /// (custos-hsm and custos-server print `listening on ADDRESS` once they serve); returns the
  /// line's last word (ADDRESS). Throws `exitedBeforeAnnouncing` when it exits first (it has
  /// then been waited for; the error carries its standard error), and `notAnnounced` when it
  /// has not announced within `limit` seconds: it is then killed, so a broken start fails its
  /// caller instead of hanging it. Standard output is not read after the announcement.
  public func startAndAwaitAnnouncement(marker: String = "listening on ", limit: TimeInterval = 60) throws -> String {
    let output = Pipe()
    process.standardOutput = output
    try start()
    let state = Mutex(AnnouncementState.waiting)
    let watchdog = DispatchWorkItem { [weak self] in
      state.withLock {
        guard $0 == .waiting, let self, self.isRunning else { return }
        $0 = .overdue
        kill(self.pid, SIGKILL)
      }
    }
    DispatchQueue.global().asyncAfter(deadline: .now() + limit, execute: watchdog)
    var text = ""
    while !(text.contains(marker) && text.hasSuffix("\n")) {
      let chunk = output.fileHandleForReading.availableData
      if chunk.isEmpty { break }
      text += String(decoding: chunk, as: UTF8.self)
    }
    watchdog.cancel()
    let line = text.split(separator: "\n").first { $0.contains(marker) }
    let overdue = state.withLock {
      if $0 == .waiting, line != nil { $0 = .announced }
      return $0 == .overdue
    }
    guard let line, !overdue else {
      let ended = waitUntilExit()
      let errors = String(standardError.suffix(2000))
      if overdue {
        throw ChildProcessError(
          .notAnnounced, "\(name) did not print \"\(marker)\" within \(limit) s: killed. Standard error: \(errors)")
      }
      throw ChildProcessError(
        .exitedBeforeAnnouncing, "\(name) ended (\(ended)) before printing \"\(marker)\": \(errors)",
        termination: ended)
    }
    return String(line.split(separator: " ").last ?? "")
  }

  /// Sends `signal` (when it still runs) and waits for its exit, at most `limit` seconds: a
  /// child that has not exited by then is killed (SIGKILL), so a shutdown that hangs is seen
  /// (`Termination.killedAfterLimit`) instead of hanging its caller.
  @discardableResult
  public func signalAndAwaitExit(_ signal: Int32 = SIGTERM, limit: TimeInterval = 60) -> Termination {
    if process.isRunning { kill(pid, signal) }
    let deadline = Date().addingTimeInterval(limit)
    while process.isRunning, Date() < deadline { usleep(5_000) }
    var killed = false
    if process.isRunning {
      kill(pid, SIGKILL)
      killed = true
    }
    return waitUntilExit(killedAfterLimit: killed)
  }

  /// Waits for its exit; how it ended.
  @discardableResult
  public func waitUntilExit() -> Termination { waitUntilExit(killedAfterLimit: false) }

  private func waitUntilExit(killedAfterLimit: Bool) -> Termination {
    process.waitUntilExit()
    return Termination(
      status: process.terminationStatus, reason: process.terminationReason, killedAfterLimit: killedAfterLimit)
  }

  deinit {
    if process.isRunning {
      kill(process.processIdentifier, SIGKILL)
      process.waitUntilExit()
    }
  }

  /// util-linux's setpriv, where Debian installs it (or on PATH); nil when it is missing, and
  /// then no child can be started.
  public static let setpriv: String? = {
    let path = ProcessInfo.processInfo.environment["PATH"]?.split(separator: ":").map(String.init) ?? []
    return (["/usr/bin", "/bin"] + path).map { $0 + "/setpriv" }.first {
      FileManager.default.isExecutableFile(atPath: $0)
    }
  }()
}

private enum AnnouncementState { case waiting, announced, overdue }

/// How a child ended.
public struct Termination: Hashable, Sendable, CustomStringConvertible {
  /// The exit status, or the number of the signal that ended it.
  public let status: Int32
  /// Whether it exited or a signal ended it.
  public let reason: Process.TerminationReason
  /// `signalAndAwaitExit` killed it because it had not exited within its limit.
  public let killedAfterLimit: Bool

  /// Describes an end of `status` for `reason`.
  public init(status: Int32, reason: Process.TerminationReason, killedAfterLimit: Bool = false) {
    self.status = status
    self.reason = reason
    self.killedAfterLimit = killedAfterLimit
  }

  /// It exited with status 0.
  public var succeeded: Bool { reason == .exit && status == 0 }

  public var description: String {
    (reason == .exit ? "exit status \(status)" : "signal \(status)")
      + (killedAfterLimit ? ", killed after its time limit" : "")
  }
}

/// A child that could not be started or did not come up. Never carries secrets of ours; it may
/// carry the end of the child's standard error.
public struct ChildProcessError: Error, Hashable, Sendable, CustomStringConvertible {
  /// What kind of failure this is. Extensible: new codes are added as static members.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public var description: String { name }

    /// The program's path is not an executable file.
    public static let notExecutable = Code("notExecutable")
    /// util-linux's setpriv was not found.
    public static let setprivMissing = Code("setprivMissing")
    /// Starting the process failed.
    public static let startFailed = Code("startFailed")
    /// It exited before printing its announcement.
    public static let exitedBeforeAnnouncing = Code("exitedBeforeAnnouncing")
    /// It did not announce within its time limit and was killed.
    public static let notAnnounced = Code("notAnnounced")
    /// A program run to its end failed (`ChildProcess.Completion.checked()`).
    public static let failed = Code("failed")
  }

  public let code: Code
  /// A sentence naming the program and what went wrong.
  public let message: String
  /// How the child ended, when it ended.
  public let termination: Termination?

  /// A failure of kind `code`, described by `message`.
  public init(_ code: Code, _ message: String, termination: Termination? = nil) {
    self.code = code
    self.message = message
    self.termination = termination
  }

  public var description: String { message }
}
