import Foundation
import ProcessSupport
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

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

  /// The processes whose parent is `pid`, by name (/proc/PID/comm).
  static func children(of pid: pid_t) -> [String: pid_t] {
    var found = [String: pid_t]()
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
      guard let candidate = pid_t(entry),
        let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")"),
        stat[stat.index(after: close)...].split(separator: " ").dropFirst().first == "\(pid)"[...],
        let name = try? String(contentsOfFile: "/proc/\(entry)/comm", encoding: .utf8)
      else { continue }
      found[name.trimmingCharacters(in: .whitespacesAndNewlines)] = candidate
    }
    return found
  }

  /// A bench killed while it runs leaves no child behind: on SIGTERM it stops custos-server and
  /// custos-hsm itself, removes its directory and exits 143; on SIGKILL the kernel stops them.
  @Test(arguments: [SIGTERM, SIGKILL])
  func itsChildrenStopWithIt(signal: Int32) async throws {
    let logs = try TemporaryDirectory("custos-bench-logs")
    let bench = ChildProcess(
      executable: builtExecutable("custos"),
      arguments: [
        "bench", "api", "--clients", "1", "--wallets", "1", "--workflows", "1000000", "--warmup", "0",
        "--raw-wallets", "0", "--ceremony", repositoryRoot + "/Ceremonies/init-device.yaml",
        "--participants", repositoryRoot + "/Ceremonies/participants.example.yaml",
      ], standardErrorPath: logs.appending("stderr"))
    bench.process.standardOutput = FileHandle.nullDevice
    try bench.start()
    // The world is up once it creates wallets through the server's API.
    let deadline = Date().addingTimeInterval(300)
    while !bench.standardError.contains("creating 1 wallets"), bench.isRunning, Date() < deadline {
      try await Task.sleep(for: .milliseconds(20))
    }
    let children = Self.children(of: bench.pid)
    let hsm = try #require(children["custos-hsm"], "\(children) \(bench.standardError)")
    let server = try #require(children["custos-server"], "\(children) \(bench.standardError)")
    let arguments = try String(contentsOfFile: "/proc/\(hsm)/cmdline", encoding: .utf8).split(separator: "\0")
    let device = try #require(arguments.firstIndex(of: "--device").map { String(arguments[$0 + 1]) })
    let world = URL(fileURLWithPath: device).deletingLastPathComponent().path
    #expect(FileManager.default.fileExists(atPath: world + "/hsm.sock"))
    defer { try? FileManager.default.removeItem(atPath: world) }

    let ended = bench.signalAndAwaitExit(signal)
    #expect(
      eventually { !isLiveProcess(hsm) && !isLiveProcess(server) },
      "a child outlived custos bench api (signal \(signal))")
    if signal == SIGTERM {
      #expect(ended.reason == .exit && ended.status == 128 + SIGTERM && !ended.killedAfterLimit)
      #expect(bench.standardError.contains("stopped; the throw-away world is removed"), "\(bench.standardError)")
      #expect(!FileManager.default.fileExists(atPath: world))
    } else {
      #expect(ended.reason == .uncaughtSignal && ended.status == SIGKILL)
    }
    // The device's lock is free again (flock(1) takes it) and custos-hsm removed its socket:
    // it stopped as on any SIGTERM.
    if signal == SIGKILL {
      #expect(!FileManager.default.fileExists(atPath: world + "/hsm.sock"))
      let lock = try runProcess("/usr/bin/flock", ["--nonblock", "--exclusive", device + "/device.lock", "true"])
      #expect(lock.status == 0, "\(lock.error)")
    }
  }

  @Test func refusesAServerWithoutItsKey() throws {
    let result = try runProcess(
      builtExecutable("custos"), ["bench", "api", "--server", "http://127.0.0.1:9", "--raw-wallets", "0"])
    #expect(result.status != 0)
    #expect(result.error.contains("--server and --api-key go together"), "\(result.error)")
  }
}
