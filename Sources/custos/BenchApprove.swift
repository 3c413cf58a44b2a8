import ArgumentParser
import Foundation
import Vault
import VaultWire

/// `custos bench approve`: approved EIP-1559 signatures per second through `CustodyVault`, in
/// this process and, with `--socket`, through a running device.
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
      the token's unseal + re-seal at the same parallelism, and each stage alone on one thread.

      With --socket PATH --cu-credential FILE it also runs the same workload (the same code) \
      against the running device on that socket, which must be READY and hold no wallet yet \
      (a fresh init-device rehearsal, unsealed): --clients connections, each with its own Crypto \
      User session, share the --concurrency requests. The two runs take turns: in-process \
      wallets, socket wallets, then in-process round 1, socket round 1, and so on, so a drift \
      of the machine's speed falls on both. It reports both rates and their ratio \
      (target >= 0.8), batch sizes (from the epochs the results carry), latency percentiles, \
      the device's CPU, and its resident memory (VmRSS of the process found with SO_PEERCRED) \
      before and after the wallets are created. The device serves with its own settings (one \
      PKCS #11 session per core, linger 1 ms): the in-process run uses the same.

      --create-only (with --socket) only creates --wallets wallets from --concurrency tasks \
      (each naming its wallet id, so the device batches them into shared token writes), and samples the device's memory every --checkpoint wallets: the \
      check that the device holds a root, not the tree. Build with `swift build -c release` \
      first.
      """)

  @Option(help: "Wallets to create (each signs once per round).")
  var wallets = 2_000

  @Option(help: "Rounds of signatures (the best is reported).")
  var rounds = 3

  @Option(help: "Concurrent requests in flight.")
  var concurrency = 32

  @Option(help: "PKCS #11 sessions serving requests in this process (with --socket: one per core, as the device).")
  var sessions = 2

  @Option(help: "Calls per single-thread stage measurement.")
  var stageIterations = 500

  @Option(help: "Seconds each bound (raw crypto, token) is measured.")
  var boundSeconds = 2.0

  @Option(
    name: .customLong("linger-us"), help: "Longest a token write waits for requests still under way (microseconds).")
  var lingerMicroseconds = Int(CustodyVault.defaultLinger / .microseconds(1))

  @Option(help: "A running device's Unix socket: run the same workload against it too (it must be READY).")
  var socket: String?

  @Option(name: .customLong("cu-credential"), help: "With --socket: the file holding the Crypto User credential.")
  var cuCredential: String?

  @Option(help: "With --socket: connections to the device, each with its own session.")
  var clients = 8

  @Option(
    name: .customLong("session-calls"),
    help: "With --socket: how session calls travel: pipelined (one stream per session) or unary (a stream each).")
  var sessionCalls: VaultClient.SessionCalls = .pipelined

  @Flag(help: "With --socket: only create --wallets wallets, sampling the device's memory.")
  var createOnly = false

  @Option(help: "With --create-only: wallets between two memory samples.")
  var checkpoint = 100_000

  @Flag(help: "Print JSON instead of text.")
  var json = false

  @OptionGroup var logging: LoggingOptions

  func validate() throws {
    guard wallets >= 1, rounds >= 1, concurrency >= 1, sessions >= 1, stageIterations >= 1, lingerMicroseconds >= 0,
      clients >= 1, checkpoint >= 1, boundSeconds > 0
    else {
      throw ValidationError("every count must be at least 1 (and --bound-seconds above 0)")
    }
    if socket == nil {
      if cuCredential != nil { throw ValidationError("--cu-credential goes with --socket") }
      if createOnly { throw ValidationError("--create-only creates wallets on a running device: give --socket") }
    } else if cuCredential == nil {
      throw ValidationError("--socket needs the Crypto User credential: --cu-credential FILE")
    }
    if clients > 64 { throw ValidationError("--clients is at most 64 (the device's sessions)") }
  }

  func run() async throws {
    let logger = logging.makeLogger("custos.bench")
    let socketBench = socket.map {
      SocketBench(
        socket: URL(fileURLWithPath: $0).standardizedFileURL.path, credentialFile: cuCredential!, clients: clients,
        concurrency: concurrency, sessionCalls: sessionCalls)
    }
    // The device is checked (READY, no wallet yet) and logged in before anything runs.
    let connection = try await socketBench?.connect()
    if createOnly, let socketBench, let connection {
      try await runCreateOnly(socketBench, connection)
      return
    }
    let cores = ProcessInfo.processInfo.activeProcessorCount
    // The socket's rounds alternate with the in-process ones (in-process round 1, socket round
    // 1, ...): this VM's speed drifts by a quarter over minutes, and in turns both runs meet it.
    let inProcess: ApproveBenchmark.Report
    var socketReport: SocketBench.Report? = nil
    do {
      var socketRun: SocketBench.Run? = nil
      if let socketBench, let connection { socketRun = try SocketBench.Run(socketBench, connection) }
      inProcess = try await ApproveBenchmark(
        options: .init(
          wallets: wallets, rounds: rounds, concurrency: concurrency, sessions: socket == nil ? sessions : cores,
          stageIterations: stageIterations,
          linger: socket == nil ? .microseconds(lingerMicroseconds) : CustodyVault.defaultLinger,
          boundSeconds: boundSeconds),
        logger: logger
      ).run(
        afterCreation: { try await socketRun?.prepare(wallets: wallets, boundSeconds: boundSeconds) },
        afterRound: { try await socketRun?.round($0) })
      socketReport = try await socketRun?.finish()
    } catch {
      await connection?.close()
      throw error
    }
    if !json { printInProcess(inProcess) }
    let comparison = socketReport.flatMap { Comparison(inProcess: inProcess.workload, socket: $0) }
    if json {
      let output = JSONReport(
        inProcess: JSONReport.InProcess(inProcess), socket: socketReport,
        ratio: socketReport?.workload.map { $0.best / inProcess.best }, comparison: comparison)
      try printJSON(output)
    } else if let socketReport, let workload = socketReport.workload {
      printSocket(socketReport, workload)
      print("")
      print(
        String(
          format: "socket / in-process: %.2f (target >= 0.80): %.0f /s over %d connections against %.0f /s",
          workload.best / inProcess.best, workload.best, socketReport.clients, inProcess.best))
      if let comparison {
        print(
          String(
            format:
              "  CPU per signature (best rounds): in-process %.0f us; socket %.0f us (client %.0f + device %.0f): "
              + "ratio %.2f",
            comparison.inProcessMicroseconds, comparison.clientMicroseconds + comparison.deviceMicroseconds,
            comparison.clientMicroseconds, comparison.deviceMicroseconds, comparison.cpuRatio))
        print(
          String(
            format: "  bound from the wire alone when both processes share the cores: %.0f / (%.0f + %.0f us a call) "
              + "= %.2f", comparison.inProcessMicroseconds, comparison.inProcessMicroseconds,
            comparison.wireMicroseconds, comparison.wireBound))
      }
    }
    let matches = inProcess.workload.durableRootMatches && (socketReport?.durableRootMatches ?? true)
    if !matches { throw CommandFailure("a durable root differs from the mirror's tree (see above)") }
  }

  // MARK: Creation only

  func runCreateOnly(_ bench: SocketBench, _ connection: SocketBench.Connection) async throws {
    if !json {
      print("custos bench approve --create-only: \(wallets) wallets on the device at \(bench.socket)")
      print("  wallets      seconds   wallets/s   device VmRSS   VmHWM")
    }
    var last: DeviceMemory? = nil
    let report = try await bench.createOnly(connection, wallets: wallets, checkpoint: checkpoint) { sample in
      guard !json else { return }
      var rate = "           "
      if let seconds = sample.seconds, let previous = last {
        rate = String(
          format: "%11.0f", Double(sample.wallets - previous.wallets) / (seconds - (previous.seconds ?? 0)))
      }
      print(
        String(format: "  %9d  %9.1f ", sample.wallets, sample.seconds ?? 0) + rate
          + "   \(mebibytes(sample.residentBytes))     \(mebibytes(sample.peakBytes))")
      fflush(nil)  // each sample as it is taken, also into a pipe
      last = sample
    }
    if json {
      try printJSON(JSONReport(inProcess: nil, socket: report, ratio: nil, comparison: nil))
    } else if let creation = report.creation {
      let resident = report.memory.last?.residentBytes ?? 0
      print("")
      print("device \(report.device), pid \(report.pid) (found with SO_PEERCRED)")
      print(
        String(
          format: "created %d wallets in %.1f s: %.0f /s, %.1f per token write, ", creation.wallets, creation.seconds,
          creation.perSecond, Double(creation.wallets) / Double(max(1, creation.tokenWrites)))
          + "latency \(latency(creation.latency))"
          + (creation.staleProofRetries > 0 ? "; \(creation.staleProofRetries) stale-proof retries" : ""))
      print(
        "device resident memory after them: \(mebibytes(resident)) (target < 64 MiB: "
          + "\(resident < 64 << 20 ? "met" : "NOT met"))")
      if report.peakReset == true, report.memory.count > 1 {
        print(
          "device peak (VmHWM): \(mebibytes(report.memory[0].peakBytes)) before the creation (the unseal's Argon2id, "
            + "m = 64 MiB), \(mebibytes(report.memory.dropFirst().map(\.peakBytes).max() ?? 0)) during it "
            + "(VmHWM reset after the first sample)")
      } else {
        print("device peak (VmHWM, since it started): \(mebibytes(report.memory.map(\.peakBytes).max() ?? 0))")
      }
      print("durable root read from the device equals the mirror's tree: \(report.durableRootMatches)")
    }
    if !report.durableRootMatches { throw CommandFailure("the device's durable root differs from the mirror's tree") }
  }

  // MARK: Text

  func printInProcess(_ report: ApproveBenchmark.Report) {
    func rate(_ value: Double) -> String { String(format: "%8.0f /s", value) }
    print(
      "custos bench approve: \(wallets) wallets x \(rounds) rounds, \(concurrency) concurrent requests, "
        + "\(report.options.sessions) sessions, linger \(Int(seconds(report.options.linger) * 1e6)) us, "
        + "\(report.cores) cores, \(report.optimized ? "release" : "DEBUG") build")
    print("")
    print("in-process (CustodyVault in this process)")
    printWorkload(report.workload)
    let statistics = report.statistics
    print(
      String(
        format: "  the vault's own count: %d commits, batch size min %d / mean %.1f / max %d, %.2f ms per commit "
          + "(label write + fsync)",
        statistics.commits, statistics.commits == 0 ? 0 : statistics.smallestBatch, statistics.meanBatch,
        statistics.largestBatch,
        statistics.commits == 0 ? 0 : seconds(statistics.commitDuration) * 1000 / Double(statistics.commits)))
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

  func printSocket(_ report: SocketBench.Report, _ workload: ApproveWorkloadReport) {
    print("")
    print(
      "socket (device \(report.device), pid \(report.pid) found with SO_PEERCRED; \(report.clients) connections, "
        + "each its own Crypto User session)")
    printWorkload(workload)
    for wire in [report.wire, report.otherWire].compactMap({ $0 }) {
      print(
        "  the wire alone (GetRootState: session check, root read), \(wire.sessionCalls)\(wire.sessionCalls == report.sessionCalls ? " (this run's)" : ""): "
          + "one at a time \(latency(wire.sequential)); "
          + String(
            format: "%d callers: %.0f calls/s, %.0f us device CPU + %.0f us client CPU per call", concurrency,
            wire.callsPerSecond, wire.deviceMicrosecondsPerCall, wire.clientMicrosecondsPerCall))
    }
    let memory = report.memory
    if memory.count == 3 {
      print(
        "  device resident memory (VmRSS): \(mebibytes(memory[0].residentBytes)) before the wallets, "
          + "\(mebibytes(memory[1].residentBytes)) after \(memory[1].wallets), \(mebibytes(memory[2].residentBytes)) "
          + "after the rounds; peak (VmHWM) \(mebibytes(memory[2].peakBytes))")
    }
  }

  /// One target's workload report: the same lines for both.
  func printWorkload(_ report: ApproveWorkloadReport) {
    let creation = report.creation
    print(
      String(
        format: "  %d wallets created in %.1f s, %.0f /s (%.1f per token write), ", creation.wallets, creation.seconds,
        creation.perSecond, Double(creation.wallets) / Double(max(1, creation.tokenWrites)))
        + "latency \(latency(creation.latency))")
    print("  approved EIP-1559 signatures (2 of 3 ES256 passkeys, nonce durable before release)")
    for (index, round) in report.rounds.enumerated() {
      var line = String(
        format: "    round %d: %8.0f /s   this process %.2f cores busy (%.0f us CPU / signature)", index + 1,
        round.perSecond, round.coresBusy, round.coresBusy * 1e6 / round.perSecond)
      if let device = round.deviceCoresBusy {
        line += String(format: ", device %.2f (%.0f us)", device, device * 1e6 / round.perSecond)
      }
      print(line)
      let batches = round.batches
      let histogram = zip(CommitStatistics.bucketLabels, batches.histogram).filter { $0.1 > 0 }
        .map { "\($0.0): \($0.1)" }.joined(separator: ", ")
      print(
        String(
          format: "      %d commits, batch size min %d / mean %.1f / max %d (%@); ", batches.commits, batches.smallest,
          batches.mean, batches.largest, histogram) + "latency \(latency(round.latency))"
          + (round.staleProofRetries > 0 ? "; \(round.staleProofRetries) stale-proof retries" : ""))
    }
    print(String(format: "    best:    %8.0f /s   (target >= 2000 /s)", report.best))
    print("  durable root equals the mirror's tree: \(report.durableRootMatches)")
  }

  func latency(_ latency: ApproveWorkloadReport.Latency) -> String {
    String(format: "p50 %.2f / p90 %.2f / p99 %.2f / max %.2f ms", latency.p50, latency.p90, latency.p99, latency.max)
  }

  func mebibytes(_ bytes: Int) -> String { String(format: "%.1f MiB", Double(bytes) / 1_048_576) }

  func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
  }
}

/// `custos bench approve --json`.
struct JSONReport: Codable {
  /// The in-process run with its bounds.
  struct InProcess: Codable {
    struct Stage: Codable {
      var name: String
      var microseconds: Double
    }
    var optimized: Bool
    var cores: Int
    var sessions: Int
    var workload: ApproveWorkloadReport
    /// The vault's own count of batch sizes over the rounds.
    var vaultBatches: ApproveWorkloadReport.Batches
    var rawCryptoPerSecond: Double
    var tokenPerSecond: Double
    var stages: [Stage]

    init(_ report: ApproveBenchmark.Report) {
      optimized = report.optimized
      cores = report.cores
      sessions = report.options.sessions
      workload = report.workload
      vaultBatches = ApproveWorkloadReport.Batches(report.statistics)
      rawCryptoPerSecond = report.rawCryptoPerSecond
      tokenPerSecond = report.tokenPerSecond
      stages = report.stages.map { Stage(name: $0.name, microseconds: $0.microseconds) }
    }
  }

  var inProcess: InProcess?
  var socket: SocketBench.Report?
  /// Socket rate over in-process rate (best rounds).
  var ratio: Double?
  var comparison: Comparison?
}

/// Where the socket run's CPU goes next to the in-process run's: both processes' CPU time per
/// signature in their best rounds, and the best ratio the wire allows when the client and the
/// device share the machine's cores (the in-process CPU per signature over itself plus one
/// bare call's CPU on both sides, measured with GetRootState).
struct Comparison: Codable {
  var inProcessMicroseconds: Double
  var clientMicroseconds: Double
  var deviceMicroseconds: Double
  /// In-process CPU per signature over the socket run's (client + device).
  var cpuRatio: Double
  /// One bare call's CPU, client and device.
  var wireMicroseconds: Double
  var wireBound: Double

  init?(inProcess: ApproveWorkloadReport, socket: SocketBench.Report) {
    guard let workload = socket.workload, let wire = socket.wire,
      let local = inProcess.rounds.max(by: { $0.perSecond < $1.perSecond }),
      let remote = workload.rounds.max(by: { $0.perSecond < $1.perSecond })
    else { return nil }
    inProcessMicroseconds = local.coresBusy * 1e6 / local.perSecond
    clientMicroseconds = remote.coresBusy * 1e6 / remote.perSecond
    deviceMicroseconds = (remote.deviceCoresBusy ?? 0) * 1e6 / remote.perSecond
    cpuRatio = inProcessMicroseconds / (clientMicroseconds + deviceMicroseconds)
    wireMicroseconds = wire.deviceMicrosecondsPerCall + wire.clientMicrosecondsPerCall
    wireBound = inProcessMicroseconds / (inProcessMicroseconds + wireMicroseconds)
  }
}

extension VaultClient.SessionCalls: ExpressibleByArgument {}
