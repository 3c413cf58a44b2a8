import Foundation
import ProcessSupport
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Real child processes started through ProcessSupport: they die with their parent (even one
/// killed by SIGKILL), with the thread that started them gone, under a SIGINT/SIGTERM trap;
/// a child that ignores SIGTERM is killed at its time limit; a start that fails says why.
@Suite struct ChildProcessTests {
  /// The lines of /proc/PID/status that start with `key`, as hexadecimal signal sets.
  static func signalSet(_ pid: pid_t, _ key: String) -> UInt64? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
      let line = status.split(separator: "\n").first(where: { $0.hasPrefix(key + ":") })
    else { return nil }
    return UInt64(line.dropFirst(key.count + 1).trimmingCharacters(in: .whitespaces), radix: 16)
  }

  /// Starts tests/LaunchParent (a trap set, `sleep 600` started as a ChildProcess from a
  /// detached task) and reads the child's pid it prints.
  static func startParent() throws -> (parent: ChildProcess, child: pid_t, output: Pipe) {
    let parent = ChildProcess(executable: builtExecutable("launch-parent"))
    let output = Pipe()
    parent.process.standardOutput = output
    try parent.start()
    var text = ""
    while !text.hasSuffix("\n") {
      let chunk = output.fileHandleForReading.availableData
      if chunk.isEmpty { break }
      text += String(decoding: chunk, as: UTF8.self)
    }
    guard text.hasPrefix("child "), let pid = pid_t(text.dropFirst(6).dropLast()) else {
      throw TestSupportError("launch-parent printed \(text.debugDescription)")
    }
    return (parent, pid, output)
  }

  @Test func aChildDiesSoonAfterItsParentIsKilledWithSIGKILL() throws {
    let (parent, child, _) = try Self.startParent()
    #expect(isLiveProcess(child))
    let ended = parent.signalAndAwaitExit(SIGKILL)
    #expect(ended.reason == .uncaughtSignal && ended.status == SIGKILL)
    // Nothing of the parent ran after SIGKILL: the kernel sent the child its SIGTERM.
    #expect(eventually { !isLiveProcess(child) }, "the child \(child) outlived its parent")
  }

  @Test(arguments: [SIGINT, SIGTERM])
  func aParentsTrapStopsItsChildAndExitsNonZero(signal: Int32) throws {
    let (parent, child, output) = try Self.startParent()
    #expect(isLiveProcess(child))
    let ended = parent.signalAndAwaitExit(signal, limit: 30)
    #expect(ended.reason == .exit && ended.status == 128 + signal && !ended.killedAfterLimit)
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    // The trap stopped the child with SIGTERM before the parent exited, within the child's limit.
    #expect(text == "stopped child \(child): signal \(SIGTERM)\n")
    #expect(!isLiveProcess(child))
  }

  @Test func aChildOutlivesTheThreadThatStartedIt() throws {
    let box = Started()
    let thread = Thread {
      // /proc/thread-self is PID/task/TID.
      box.task = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self")) ?? "?"
      box.child = ChildProcess(executable: "/bin/sleep", arguments: ["600"])
      box.error = Result { try box.child!.start() }
      box.done.signal()
    }
    thread.start()
    box.done.wait()
    #expect(box.task.contains("/task/"), "\(box.task)")
    // The thread's task is gone from /proc only after the kernel handled its children (a
    // parent-death signal, had the child been started from it, is sent before). `start()`
    // returned after setpriv set that signal: the child runs `sleep` already.
    #expect(
      try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(try #require(box.child).pid)/exe").hasSuffix(
        "/sleep"))
    #expect(eventually { !FileManager.default.fileExists(atPath: "/proc/\(box.task)") })
    try box.error?.get()
    let child = try #require(box.child)
    // Alive, sleeping, with no signal pending, and SIGTERM neither blocked nor ignored.
    #expect(
      eventually { (try? String(contentsOfFile: "/proc/\(child.pid)/stat", encoding: .utf8))?.contains(") S ") == true }
    )
    #expect(Self.signalSet(child.pid, "SigPnd") == 0 && Self.signalSet(child.pid, "ShdPnd") == 0)
    let term = UInt64(1) << (SIGTERM - 1)
    #expect(Self.signalSet(child.pid, "SigBlk").map { $0 & term } == 0)
    #expect(Self.signalSet(child.pid, "SigIgn").map { $0 & term } == 0)
    let ended = child.signalAndAwaitExit(SIGTERM)
    #expect(ended.reason == .uncaughtSignal && ended.status == SIGTERM && !ended.killedAfterLimit)
  }

  @Test func aChildThatIgnoresSIGTERMIsKilledAtItsLimit() throws {
    let child = ChildProcess(
      executable: "/bin/sh", arguments: ["-c", "trap '' TERM; echo listening on ready; exec sleep 600"])
    #expect(try child.startAndAwaitAnnouncement() == "ready")
    let began = Date()
    let ended = child.signalAndAwaitExit(SIGTERM, limit: 0.3)
    #expect(Date().timeIntervalSince(began) >= 0.3)
    #expect(ended.reason == .uncaughtSignal && ended.status == SIGKILL && ended.killedAfterLimit)
    #expect(!isLiveProcess(child.pid))

    // One that honours SIGTERM ends by it, and the limit is not used.
    let polite = ChildProcess(executable: "/bin/sh", arguments: ["-c", "echo listening on ready; exec sleep 600"])
    #expect(try polite.startAndAwaitAnnouncement() == "ready")
    let stopped = polite.signalAndAwaitExit(SIGTERM, limit: 30)
    #expect(stopped.reason == .uncaughtSignal && stopped.status == SIGTERM && !stopped.killedAfterLimit)
  }

  @Test func startsThatFailSayWhy() throws {
    let directory = try TemporaryDirectory("custos-child")
    // A child that exits before announcing: its status and standard error.
    let quitter = ChildProcess(
      executable: "/bin/sh", arguments: ["-c", "echo 'no device here' >&2; exit 3"],
      standardErrorPath: directory.appending("stderr"))
    let early = #expect(throws: ChildProcessError.self) { try quitter.startAndAwaitAnnouncement() }
    #expect(early?.code == .exitedBeforeAnnouncing)
    #expect(early?.termination == Termination(status: 3, reason: .exit))
    #expect(early?.description == "sh ended (exit status 3) before printing \"listening on \": no device here\n")

    // One that never announces is killed at the limit.
    let silent = ChildProcess(executable: "/bin/sleep", arguments: ["600"])
    let overdue = #expect(throws: ChildProcessError.self) { try silent.startAndAwaitAnnouncement(limit: 0.3) }
    #expect(overdue?.code == .notAnnounced)
    #expect(!silent.isRunning && silent.waitUntilExit().status == SIGKILL)

    // A path that is not a program: refused before anything runs.
    let missing = ChildProcess(executable: directory.appending("custos-nothing"))
    let refused = #expect(throws: ChildProcessError.self) { try missing.start() }
    #expect(refused?.code == .notExecutable && refused?.description.contains("custos-nothing") == true)
    #expect(missing.pid == 0)
  }

  @Test func runCollectsOutputErrorAndStatus() throws {
    let done = try ChildProcess.run("/bin/sh", ["-c", "echo out; echo err >&2; exit 4"])
    #expect(done.output == "out\n" && done.error == "err\n" && done.status == 4 && done.termination.reason == .exit)
    let failure = #expect(throws: ChildProcessError.self) { try done.checked("sh", ["-c"]) }
    #expect(failure?.code == .failed && failure?.description.contains("err") == true)
    #expect(try ChildProcess.run("/bin/echo", ["hello"]).checked("echo", []) == "hello\n")
  }
}

/// What the starting thread left behind.
private final class Started: @unchecked Sendable {
  var task = ""
  var child: ChildProcess?
  var error: Result<Void, any Error>?
  let done = DispatchSemaphore(value: 0)
}
