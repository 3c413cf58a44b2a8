import ArgumentParser
import Foundation
import Vault

/// `custos bench approve`: approved EIP-1559 signatures per second through `CustodyVault`.
struct BenchApprove: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "approve",
    abstract: "Benchmark end-to-end approved signing: 2-of-3 passkeys, EIP-1559, group commit.",
    discussion: """
      Creates a throw-away device with a custody partition (its allow-list, custos.master from \
      the attribute policy table, a genesis root state), creates --wallets wallets through the \
      vault (three ES256 passkeys each, threshold 2, a policy), then for --rounds rounds has \
      every wallet sign one EIP-1559 transfer approved by two of its passkeys, from \
      --concurrency concurrent tasks over --sessions PKCS #11 sessions. Results are released \
      only once the root that records each nonce is durable in the token. In the same run it \
      measures the raw cryptography (two P-256 verifications, one secp256k1 sign + verify) and \
      the token's unseal + re-seal at the same parallelism, and each stage alone on one thread. \
      Build with `swift build -c release` first.
      """)

  @Option(help: "Wallets to create (each signs once per round).")
  var wallets = 2_000

  @Option(help: "Rounds of signatures (the best is reported).")
  var rounds = 3

  @Option(help: "Concurrent requests in flight.")
  var concurrency = 32

  @Option(help: "PKCS #11 sessions serving requests.")
  var sessions = 2

  @Option(help: "Calls per single-thread stage measurement.")
  var stageIterations = 500

  @Option(
    name: .customLong("linger-us"), help: "Longest a token write waits for requests still under way (microseconds).")
  var lingerMicroseconds = 1_000

  @OptionGroup var logging: LoggingOptions

  func validate() throws {
    guard wallets >= 1, rounds >= 1, concurrency >= 1, sessions >= 1, stageIterations >= 1, lingerMicroseconds >= 0
    else {
      throw ValidationError("every count must be at least 1")
    }
  }

  func run() async throws {
    let logger = logging.makeLogger("custos.bench")
    let report = try await ApproveBenchmark(
      options: .init(
        wallets: wallets, rounds: rounds, concurrency: concurrency, sessions: sessions,
        stageIterations: stageIterations, linger: .microseconds(lingerMicroseconds)),
      logger: logger
    ).run()
    func rate(_ value: Double) -> String { String(format: "%8.0f /s", value) }
    print(
      "custos bench approve: \(wallets) wallets x \(rounds) rounds, \(concurrency) concurrent requests, "
        + "\(sessions) sessions, linger \(lingerMicroseconds) us, \(report.cores) cores, "
        + "\(report.optimized ? "release" : "DEBUG") build")
    print(
      String(
        format: "wallets created in %.1f s (one at a time: each add waits for the previous commit)",
        report.creationSeconds))
    print("")
    print("approved EIP-1559 signatures (2 of 3 ES256 passkeys, nonce durable before release)")
    for (index, value) in report.rounds.enumerated() {
      print(
        "  round \(index + 1): \(rate(value))"
          + String(
            format: "   %.2f cores busy, %.0f us of CPU per signature", report.coresBusy[index],
            report.coresBusy[index] * 1e6 / value))
    }
    print("  best:    \(rate(report.best))   (target >= 2000 /s)")
    let statistics = report.statistics
    print("")
    print("group commit")
    print(
      String(
        format: "  %d commits, batch size min %d / mean %.1f / max %d, %.2f ms per commit (label write + fsync)",
        statistics.commits, statistics.commits == 0 ? 0 : statistics.smallestBatch, statistics.meanBatch,
        statistics.largestBatch,
        statistics.commits == 0 ? 0 : seconds(statistics.commitDuration) * 1000 / Double(statistics.commits)))
    let histogram = zip(CommitStatistics.bucketLabels, statistics.histogram).filter { $0.1 > 0 }
      .map { "\($0.0): \($0.1)" }.joined(separator: ", ")
    print("  batches by size: \(histogram)")
    print("  durable root read back from the token equals the server's: \(report.durableRootMatches)")
    print("")
    print("bounds at the same parallelism (\(concurrency) tasks)")
    print("  raw crypto (2 P-256 verify + secp256k1 sign + verify): \(rate(report.rawCryptoPerSecond))")
    print("  token unseal + re-seal (2 x derive + AES-GCM):          \(rate(report.tokenPerSecond))")
    print(String(format: "  ratio best / raw crypto: %.2f (target >= 0.50)", report.ratio))
    print("")
    print("where the time goes (each stage alone, one thread, per request)")
    var sum = 0.0
    for stage in report.stages {
      print(String(format: "  %8.1f us  ", stage.microseconds) + stage.name)
      sum += stage.microseconds
    }
    print(
      String(
        format: "  %8.1f us  sum: %.0f /s on one core, %.0f /s on %d cores if nothing else ran", sum, 1e6 / sum,
        1e6 / sum * Double(report.cores), report.cores))
  }

  func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
  }
}
