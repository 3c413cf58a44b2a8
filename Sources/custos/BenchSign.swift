import ArgumentParser
import Custody
import Foundation
import HSMBridge
import Vault

/// `custos bench sign`: the signing path per stage and whole, per curve, against its raw parts.
struct BenchSign: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "sign",
    abstract: "Benchmark signing through the vault: open, derive, sign, verify, re-seal, and whole.",
    discussion: """
      Creates a throw-away device with a custody partition in a temporary directory, generates
      custos.master and one wallet, then measures each stage, the whole WalletVault.sign call and
      the raw primitives (token derive + AES-GCM, HMAC-SHA512, point multiplications, sign,
      verify) in the same run. Each figure is the fastest of --rounds means over --iterations calls.
      """)

  @Option(help: "Calls per measurement.")
  var iterations = 300

  @Option(help: "Measurements per figure (the fastest is reported).")
  var rounds = 5

  @OptionGroup var logging: LoggingOptions

  func validate() throws {
    guard iterations > 0, rounds > 0 else { throw ValidationError("--iterations and --rounds must be positive") }
  }

  func run() async throws {
    let logger = logging.makeLogger("custos.bench")
    let scratch = try BenchmarkDevice(in: NSTemporaryDirectory(), logger: logger)
    defer { scratch.remove() }
    let session = scratch.session
    _ = try SeedSealer.generateMasterKey(in: session)
    let vault = try WalletVault(session: session, logger: logger)
    let reports = try SigningBenchmark(vault: vault, session: session, iterations: iterations, rounds: rounds).run()

    func format(_ microseconds: Double) -> String { String(format: "%9.1f us", microseconds) }
    print("custos bench sign: \(iterations) calls x \(rounds) rounds per figure (fastest round mean)")
    for report in reports {
      print("")
      print("== \(report.algorithm.rawValue), path \(report.path)")
      print("stages")
      for stage in report.stages { print("  \(format(stage.microseconds))  \(stage.name)") }
      print("raw parts (same run)")
      for (figure, count) in report.raw {
        print("  \(format(figure.microseconds)) x\(count)  \(figure.name)")
      }
      print("  \(format(report.rawSum))     sum of raw parts")
      print("whole path")
      print("  \(format(report.whole.microseconds))     \(report.whole.name)")
      print(
        String(
          format: "  ratio whole / raw sum: %.2fx (target <= 1.50x)   %.0f signatures/s",
          report.ratio, report.signaturesPerSecond))
    }
  }
}
