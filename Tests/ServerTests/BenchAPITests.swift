import Foundation
import TestSupport
import Testing

/// `custos bench api` as a user runs it: the real executable, which builds its own throw-away
/// world (rehearsal, custos-hsm, custos-server, SQLite), with tiny numbers and `--json`.
/// Nothing here asserts a speed: only that every workflow completed with a signature that
/// checks out and that the counts add up.
@Suite(.serialized) struct BenchAPITests {
  /// The parts of the JSON report the test reads.
  struct Report: Decodable {
    struct Latency: Decodable {
      var p50: Double
      var p95: Double
      var p99: Double
      var max: Double
    }
    struct Step: Decodable {
      var name: String
      var latency: Latency
    }
    struct CPU: Decodable {
      var coresBusy: Double
      var microsecondsPerWorkflow: Double
    }
    struct Measured: Decodable {
      var completed: Int
      var failed: Int
      var workflowsPerSecond: Double
      var workflow: Latency
      var steps: [Step]
      var client: CPU
      var server: CPU?
      var device: CPU?
      var failures: [String]
    }
    struct Checks: Decodable {
      var sendersRecovered: Int
      var transactionHashesMatch: Int
      var treeAgreesWithDevice: Bool
      var deviceEpoch: Int64
      var leafCount: Int64
    }
    struct Creation: Decodable {
      var wallets: Int
    }
    struct Setup: Decodable {
      var walletCreation: Creation?
    }
    struct VaultBound: Decodable {
      var signaturesPerSecond: Double
      var rawCryptoPerSecond: Double
    }
    var clients: Int
    var wallets: Int
    var workflows: Int
    var setup: Setup
    var measured: Measured
    var checks: Checks
    var vault: VaultBound?
  }

  @Test func tinyRunCompletesEveryWorkflowWithAVerifiedSignature() throws {
    let result = try runProcess(
      builtExecutable("custos"),
      [
        "bench", "api", "--clients", "2", "--wallets", "3", "--workflows", "7", "--warmup", "2", "--raw-wallets", "3",
        "--raw-rounds", "1", "--json", "--ceremony", repositoryRoot + "/Ceremonies/init-device.yaml",
        "--participants", repositoryRoot + "/Ceremonies/participants.example.yaml",
      ])
    #expect(result.status == 0, "custos bench api failed: \(result.error)")
    let report = try JSONDecoder().decode(Report.self, from: Data(result.output.utf8))

    #expect(report.clients == 2 && report.wallets == 3 && report.workflows == 7)
    #expect(report.setup.walletCreation?.wallets == 3)
    let measured = report.measured
    #expect(measured.completed == 7 && measured.failed == 0, "\(measured.failures)")
    #expect(measured.workflowsPerSecond > 0)
    // Six HTTP steps, each measured once per workflow; a workflow lasts at least its slowest step.
    #expect(measured.steps.count == 6)
    for step in measured.steps {
      #expect(step.latency.p50 > 0 && step.latency.p50 <= step.latency.max, "\(step.name)")
      #expect(step.latency.max <= measured.workflow.max)
    }
    #expect(measured.workflow.p50 <= measured.workflow.p95 && measured.workflow.p95 <= measured.workflow.p99)
    // The children's CPU time was read (the throw-away world knows their pids).
    #expect((measured.server?.microsecondsPerWorkflow ?? 0) > 0)
    #expect((measured.device?.microsecondsPerWorkflow ?? 0) > 0)

    // Every signed transaction's sender recovers to its wallet's address and its hash matches.
    #expect(report.checks.sendersRecovered == 7)
    #expect(report.checks.transactionHashesMatch == 7)
    // The server's tree is the device's: three wallets (four leaves, the empty one first), and
    // at least one commit per wallet plus those of the 9 signatures.
    #expect(report.checks.treeAgreesWithDevice)
    #expect(report.checks.leafCount == 4)
    #expect(report.checks.deviceEpoch >= 3)
    // The in-process vault measured in the same run, for the ratio.
    #expect((report.vault?.signaturesPerSecond ?? 0) > 0 && (report.vault?.rawCryptoPerSecond ?? 0) > 0)
  }

  @Test func refusesAServerWithoutItsKey() throws {
    let result = try runProcess(
      builtExecutable("custos"), ["bench", "api", "--server", "http://127.0.0.1:9", "--raw-wallets", "0"])
    #expect(result.status != 0)
    #expect(result.error.contains("--server and --api-key go together"), "\(result.error)")
  }
}
