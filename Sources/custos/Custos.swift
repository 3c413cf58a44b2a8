import ArgumentParser
import Foundation
import Logging

@main
struct Custos: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "custos",
    abstract: "A PKCS #11 HSM emulator with a custody vault extension.",
    discussion: """
      Devices are directories holding one SoftHSM token per partition. The module comes from
      CUSTOS_PKCS11_MODULE (default \(defaultModulePath)).
      """,
    subcommands: [
      DeviceCommand.self, CeremonyCommand.self, OfficerTokenCommand.self, OperatorCommand.self, LockdownCommand.self,
      Doctor.self, BenchCommand.self, ApproveCommand.self, PasskeyCommand.self, EthCommand.self,
    ])
}

let defaultModulePath = "/usr/lib/softhsm/libsofthsm2.so"

/// Options every command that logs shares.
struct LoggingOptions: ParsableArguments {
  @Flag(name: .long, help: "Log debug detail to standard error.")
  var verbose = false

  /// The process's logger. Only executables make loggers; libraries are given one.
  func makeLogger(_ label: String) -> Logger {
    LoggingSetup.bootstrapOnce()
    var logger = Logger(label: label)
    if verbose {
      logger.logLevel = .debug
    } else if let level = ProcessInfo.processInfo.environment["CUSTOS_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:))
    {
      logger.logLevel = level
    } else {
      logger.logLevel = .warning
    }
    return logger
  }
}

enum LoggingSetup {
  private static let once: Void = {
    LoggingSystem.bootstrap(StreamLogHandler.standardError)
  }()
  static func bootstrapOnce() { _ = once }
}

/// A failure the CLI reports as one line and a non-zero exit.
struct CommandFailure: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}

/// Prints `value` as every `--json` of this command does: indented, keys sorted (stable for
/// diffs and scripts), slashes as they are.
func printJSON(_ value: some Encodable) throws {
  let encoder = JSONEncoder()
  encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
  print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
