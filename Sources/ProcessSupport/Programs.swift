import Foundation

/// The executable `name` in the directory of the running executable: where SwiftPM builds the
/// package's executables beside each other and beside the test runner (`custos-hsm` beside
/// `custos`, `custos` beside the tests).
public func siblingExecutable(_ name: String) -> String {
  URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    .appendingPathComponent(name).path
}

extension ChildProcess {
  /// What a program run to its end did.
  public struct Completion: Sendable {
    /// How it ended (`termination.status` is its exit status when it exited).
    public let termination: Termination
    /// Its standard output.
    public let output: String
    /// Its standard error.
    public let error: String

    /// The exit status, or the number of the signal that ended it.
    public var status: Int32 { termination.status }

    /// Its standard output when it exited with 0; otherwise a `failed` error naming the
    /// program, the first of its arguments and its standard error.
    public func checked(_ name: String, _ arguments: [String]) throws -> String {
      guard termination.succeeded else {
        throw ChildProcessError(
          .failed, "\(([name] + arguments.prefix(2)).joined(separator: " ")) failed (\(termination)): \(error)",
          termination: termination)
      }
      return output
    }
  }

  /// Runs `executable` with `arguments` to its end as a `ChildProcess` (it dies with this
  /// process too), its standard input empty; its end, standard output and standard error
  /// (kept in files while it runs, so neither stream can fill up and stall it).
  public static func run(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil
  ) throws -> Completion {
    var template = Array((NSTemporaryDirectory() + "/custos-run-XXXXXX").utf8CString)
    guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
      throw ChildProcessError(.startFailed, "cannot make a temporary directory for \(executable)'s output")
    }
    let directory = String(cString: made)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let outputPath = directory + "/out"
    let child = ChildProcess(
      executable: executable, arguments: arguments, environment: environment, standardErrorPath: directory + "/err")
    guard FileManager.default.createFile(atPath: outputPath, contents: nil),
      let output = FileHandle(forWritingAtPath: outputPath)
    else {
      throw ChildProcessError(.startFailed, "cannot write \(child.name)'s output to \(outputPath)")
    }
    child.process.standardOutput = output
    child.process.standardInput = FileHandle.nullDevice
    try child.start()
    let termination = child.waitUntilExit()
    return Completion(
      termination: termination, output: (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "",
      error: child.standardError)
  }
}
