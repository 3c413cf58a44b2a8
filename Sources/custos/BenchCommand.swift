import ArgumentParser
import Foundation
import Vault

/// `custos bench ...`: measurements against the raw primitives, taken in the same run.
struct BenchCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench",
    abstract: "Measure Custos against the raw primitives it is built on.",
    discussion: "Build with `swift build -c release` for figures worth reporting.",
    subcommands: [MerkleBench.self, BenchSign.self, BenchApprove.self, BenchAPI.self])

  struct MerkleBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "merkle",
      abstract: "Server-tree inserts and proofs, vault verify+apply, against raw SHA-256.",
      discussion: """
        Inserts N wallets into the in-memory server tree, generates proofs for random wallets,
        then has the vault verify and apply a mix of updates and adds: once in memory, once
        through the root state of a throw-away device's custody partition (one token write per
        batch). Each figure is compared with the same SHA-256 calls made raw in the same run.
        """)

    @Option(help: "Wallets to insert into the server tree.")
    var wallets: Int = 1_000_000

    @Option(help: "Proofs to generate for random wallets.")
    var proofs: Int = 100_000

    @Option(help: "Changes for the vault to verify and apply (half updates, half adds).")
    var changes: Int = 10_000

    @Option(help: "Changes per vault apply call, i.e. per token write.")
    var batch: Int = 1_000

    @Option(help: "Rounds of the short measurements; the fastest counts.")
    var rounds: Int = 5

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
      guard wallets >= 1, proofs >= 1, changes >= 2, batch >= 1, rounds >= 1 else {
        throw ValidationError("--wallets, --proofs, --batch and --rounds must be at least 1, --changes at least 2")
      }
    }

    func run() async throws {
      let logger = logging.makeLogger("custos.bench")
      let report = try MerkleBenchmark(
        options: .init(wallets: wallets, proofs: proofs, changes: changes, batchSize: batch, rounds: rounds),
        logger: logger
      ).run()
      if json {
        try printJSON(report)
      } else {
        print(report.text)
      }
    }
  }
}
