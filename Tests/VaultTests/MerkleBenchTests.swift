import Foundation
import TestSupport
import Testing
import Vault

/// The bench's own checks run (its vault must end on the server tree's root) and its report
/// adds up. No timing is asserted: speed is for `custos bench`, not for tests.
@Suite(.serialized) struct MerkleBenchTests {
  @Test func aSmallRunReportsEveryFigureAgainstItsRawHashing() throws {
    let scratch = try TemporaryDirectory()
    let report = try MerkleBenchmark(
      options: .init(wallets: 50, proofs: 10, changes: 21, batchSize: 8, rounds: 2, scratchDirectory: scratch.path),
      logger: testLogger
    ).run()
    #expect(
      report.figures.map(\.name) == [
        "tree insert", "proof generation", "wallet decode+validate", "vault verify+apply", "vault apply with commits",
      ])
    #expect(report.figures.map(\.count) == [50, 10, report.figures[2].count, 21, 21])
    #expect(report.commits == 3)
    #expect(report.treeDepth == 6)
    for figure in report.figures where figure.name != "proof generation" {
      #expect(figure.rawSeconds != nil && figure.rawHashes! > 0)
    }
    // The inserts' raw baseline makes one hash per level of each insert's path.
    #expect(report.figures[0].rawHashes == (1...50).map { 64 - $0.leadingZeroBitCount }.reduce(0, +))
    #expect(report.text.contains("vault verify+apply"))
    // The throw-away device is gone.
    #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).isEmpty)
  }

  @Test func refusesNonsenseOptions() {
    #expect(throws: BenchError.self) {
      try MerkleBenchmark(options: .init(wallets: 0), logger: testLogger).run()
    }
  }
}
