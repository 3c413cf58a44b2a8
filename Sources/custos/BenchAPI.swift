import ArgumentParser
import Custody
import Foundation
import Logging
import ProcessSupport
import Vault

#if canImport(Glibc)
import Glibc
#endif

/// `custos bench api`: complete signing workflows through the custody server's HTTP API, from
/// concurrent clients, against SQLite and a real device process.
struct BenchAPI: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "api",
    abstract: "Benchmark complete signing workflows through custos-server's HTTP API.",
    discussion: """
      Each workflow: a customer creates an EIP-1559 transfer request for a 2-of-3 wallet (API \
      key), two approvers each fetch its envelope, check it and post their approval (no key; \
      the second approval's call returns once the vault has signed), and the customer fetches \
      the signed transaction. --clients clients run them concurrently, each on its own wallets \
      (a wallet takes one signature at a time: each request binds the wallet's current data \
      and nonce, which the signature changes).

      By default it builds a throw-away world in a temporary directory: an init-device \
      rehearsal (--ceremony, --participants), the real custos-hsm on it unsealed by two \
      holders, the real custos-server on a SQLite file of its own with an API key, then \
      --wallets wallets created through the API; after the run it stops both and removes the \
      directory. Its children stop with it: on SIGINT or SIGTERM it stops both, removes the \
      directory and exits non-zero, and if it dies otherwise (even SIGKILL) the kernel sends \
      them SIGTERM (util-linux setpriv --pdeathsig). With --server URL --api-key FILE it uses a \
      running server instead (its device READY; --server-pid and --device-pid add their CPU time).

      It reports workflows per second, latency percentiles of a whole workflow and of each \
      HTTP step, the CPU time of this process, the server and the device per workflow \
      (/proc/PID/stat), and checks every signed transaction: its hash, and that its sender \
      recovers to the wallet's address. Before the world starts it measures, in this process, \
      the vault's own approved-signing rate (the `bench approve` workload on a throw-away \
      custody partition) and its raw-crypto bound, so workflows per second can be stated as a \
      ratio of them. Build with `swift build -c release` first.
      """)

  @Option(help: "Concurrent clients (each a customer with its approvers).")
  var clients = 16

  @Option(help: "Workflows in the measured phase.")
  var workflows = 3_000

  @Option(help: "Wallets to create (default: 2 per client; at least one per client).")
  var wallets: Int?

  @Option(help: "Workflows run before the measured phase (not counted).")
  var warmup: Int?

  @Option(help: "A running custos-server's URL (http://HOST:PORT) instead of a throw-away world.")
  var server: String?

  @Option(name: .customLong("api-key"), help: "With --server: a file holding an API key with every scope.")
  var apiKey: String?

  @Option(name: .customLong("server-pid"), help: "With --server: the server's process id, for its CPU time.")
  var serverPID: Int32?

  @Option(name: .customLong("device-pid"), help: "With --server: the device's process id, for its CPU time.")
  var devicePID: Int32?

  @Option(help: "The init-device ceremony script of the throw-away world.")
  var ceremony = "Ceremonies/init-device.yaml"

  @Option(help: "The participants file of its rehearsal.")
  var participants = "Ceremonies/participants.example.yaml"

  @Option(name: .customLong("raw-wallets"), help: "Wallets of the in-process vault measurement (0: skip it).")
  var rawWallets = 256

  @Option(name: .customLong("raw-rounds"), help: "Rounds of the in-process vault measurement (the best counts).")
  var rawRounds = 3

  @Flag(help: "Print JSON instead of text.")
  var json = false

  @OptionGroup var logging: LoggingOptions

  func validate() throws {
    guard clients >= 1, workflows >= 1, rawWallets >= 0, rawRounds >= 1 else {
      throw ValidationError("--clients, --workflows and --raw-rounds must be at least 1")
    }
    if let wallets, wallets < clients {
      throw ValidationError("--wallets must be at least --clients (each client signs with wallets of its own)")
    }
    if let warmup, warmup < 0 { throw ValidationError("--warmup is 0 or more") }
    if (server == nil) != (apiKey == nil) { throw ValidationError("--server and --api-key go together") }
    if server == nil, serverPID != nil || devicePID != nil {
      throw ValidationError("--server-pid and --device-pid go with --server")
    }
    if server == nil {
      for (name, path) in [("--ceremony", ceremony), ("--participants", participants)]
      where !FileManager.default.fileExists(atPath: path) {
        throw ValidationError("\(name) \(path) does not exist (run from the repository's root, or give the path)")
      }
    }
  }

  func run() async throws {
    let logger = logging.makeLogger("custos.bench")
    let walletCount = wallets ?? 2 * clients
    let warmupCount = warmup ?? 2 * clients
    var report = APIBenchReport(
      optimized: Self.optimized, cores: ProcessInfo.processInfo.activeProcessorCount,
      world: server.map { "server at \($0)" }
        ?? "throw-away (init-device rehearsal, custos-hsm, custos-server, SQLite)",
      clients: clients, wallets: walletCount, workflows: workflows, warmup: warmupCount)

    // The raw primitive first, alone on the machine: the vault's approved-signing rate in process.
    if rawWallets > 0 {
      if !json { say("measuring the in-process vault (\(rawWallets) wallets, \(rawRounds) rounds) ...") }
      let cores = ProcessInfo.processInfo.activeProcessorCount
      let raw = try await ApproveBenchmark(
        options: .init(
          wallets: rawWallets, rounds: rawRounds, concurrency: 32, sessions: cores, stageIterations: 200,
          linger: CustodyVault.defaultLinger, boundSeconds: 1),
        logger: logger
      ).run()
      report.vault = .init(
        signaturesPerSecond: raw.best, rawCryptoPerSecond: raw.rawCryptoPerSecond,
        cpuMicrosecondsPerSignature: raw.workload.rounds.max { $0.perSecond < $1.perSecond }
          .map { $0.coresBusy * 1e6 / $0.perSecond } ?? 0)
    }

    var world: BenchAPIWorld? = nil
    var trap: TerminationTrap? = nil
    defer { trap?.cancel() }
    let baseURL: String
    let key: String
    var serverPID = self.serverPID
    var devicePID = self.devicePID
    if let server, let apiKey {
      baseURL = server
      guard let text = try? String(contentsOfFile: apiKey, encoding: .utf8) else {
        throw CommandFailure("cannot read the API key file \(apiKey)")
      }
      key = text.trimmingCharacters(in: .whitespacesAndNewlines)
    } else {
      if !json { say("starting the world: init-device rehearsal, custos-hsm, unseal, custos-server ...") }
      let made = try BenchAPIWorld(logger: logger)
      world = made
      trap = TerminationTrap { signal in
        say("signal \(signal): stopping custos-server and custos-hsm")
        made.close()
        say("stopped; the throw-away world is removed")
        Glibc.exit(128 + signal)
      }
      do {
        try await made.start(ceremony: ceremony, participants: participants)
      } catch {
        made.close()
        await trap?.awaitHandlerIfFired()
        throw error
      }
      baseURL = made.baseURL
      key = made.apiKey
      serverPID = made.server?.pid
      devicePID = made.hsm?.pid
      report.setup.ceremonySeconds = made.ceremonySeconds
      report.setup.startSeconds = made.startSeconds
    }

    let workload: APIWorkload
    do {
      workload = try APIWorkload(baseURL: baseURL, apiKey: key)
    } catch {
      world?.close()
      await trap?.awaitHandlerIfFired()
      throw error
    }
    do {
      try await measure(workload, &report, wallets: walletCount, warmup: warmupCount, serverPID, devicePID)
    } catch {
      // A signal's handler may be stopping the world under the workflows: it exits with
      // 128 + signal once the world is gone, not this path with the workflows' error.
      world?.close()
      await trap?.awaitHandlerIfFired()
      throw error
    }
    world?.close()

    if json {
      try printJSON(report)
    } else {
      print(report.text)
    }
    if !report.allVerified {
      throw CommandFailure("not every workflow completed with a verified signature (see above)")
    }
  }

  /// Wallets, warm-up, the measured phase, and the checks of every result.
  private func measure(
    _ workload: APIWorkload, _ report: inout APIBenchReport, wallets: Int, warmup: Int, _ serverPID: Int32?,
    _ devicePID: Int32?
  ) async throws {
    let before = try await workload.waitForAgreement()
    guard (before.tree.wallets) == 0 || server != nil else {
      throw CommandFailure("the throw-away server already holds wallets")
    }
    if !json { say("creating \(wallets) wallets through the API ...") }
    report.setup.walletCreation = try await workload.createWallets(wallets)
    if warmup > 0 {
      if !json { say("warm-up: \(warmup) workflows ...") }
      let (_, failures) = await workload.run(warmup, clients: clients)
      if let first = failures.first { throw CommandFailure("a warm-up workflow failed: \(first)") }
    }

    if !json { say("measuring: \(workflows) workflows from \(clients) clients ...") }
    let serverProcess = serverPID.map { PeerProcess(pid: $0) }
    let deviceProcess = devicePID.map { PeerProcess(pid: $0) }
    let cpuStart = (processCPUSeconds(), serverProcess?.cpuSeconds(), deviceProcess?.cpuSeconds())
    let start = ContinuousClock.now
    let (outcomes, failures) = await workload.run(workflows, clients: clients)
    let wall = seconds(ContinuousClock.now - start)
    let completed = Double(max(outcomes.count, 1))
    func perWorkflow(_ begin: Double?, _ end: Double?) -> APIBenchReport.CPU? {
      guard let begin, let end else { return nil }
      return .init(coresBusy: (end - begin) / wall, microsecondsPerWorkflow: (end - begin) * 1e6 / completed)
    }
    report.measured = .init(
      seconds: wall, completed: outcomes.count, failed: failures.count,
      workflowsPerSecond: Double(outcomes.count) / wall,
      workflow: ApproveWorkloadReport.Latency(outcomes.map(\.total)),
      steps: APIWorkload.steps.enumerated().map { index, name in
        .init(name: name, latency: ApproveWorkloadReport.Latency(outcomes.map { $0.steps[index] }))
      },
      client: perWorkflow(cpuStart.0, processCPUSeconds())!,
      server: perWorkflow(cpuStart.1, serverProcess?.cpuSeconds()),
      device: perWorkflow(cpuStart.2, deviceProcess?.cpuSeconds()),
      failures: Array(failures.prefix(10)))

    // Every result, checked after the clock stopped.
    let secp = try Secp256k1()
    var verified = 0
    var hashes = 0
    for outcome in outcomes {
      if "0x" + Hex.encode(Keccak256.hash(outcome.signedTransaction)) == outcome.transactionHash { hashes += 1 }
      let wallet = workload.wallets[outcome.walletIndex]
      if let sender = try? EthereumSigning.sender(ofSignedTransaction: outcome.signedTransaction, secp: secp),
        EthereumAddress.checksummed(sender) == wallet.address
      {
        verified += 1
      }
    }
    let after = try await workload.deviceRootAgrees()
    report.checks = .init(
      sendersRecovered: verified, transactionHashesMatch: hashes, treeAgreesWithDevice: after.agrees,
      deviceEpoch: after.status.deviceRoot.map(\.epoch) ?? 0, leafCount: after.status.tree.leafCount)
  }

  static var optimized: Bool {
    #if DEBUG
    false
    #else
    true
    #endif
  }
}

/// A progress line on standard error (standard output carries the report).
private func say(_ line: String) {
  FileHandle.standardError.write(Data(("custos bench api: " + line + "\n").utf8))
}

/// What `custos bench api` measured (`--json` prints it as it is).
struct APIBenchReport: Codable {
  typealias Latency = ApproveWorkloadReport.Latency

  /// The in-process vault, measured in the same run before the world started.
  struct VaultBound: Codable {
    /// `bench approve`'s workload in process: approved EIP-1559 signatures per second (best round).
    var signaturesPerSecond: Double
    /// Two P-256 verifications + secp256k1 sign + verify per second at the same parallelism.
    var rawCryptoPerSecond: Double
    var cpuMicrosecondsPerSignature: Double
  }

  struct Setup: Codable {
    var ceremonySeconds: Double?
    var startSeconds: Double?
    var walletCreation: ApproveWorkloadReport.Creation?
  }

  struct CPU: Codable {
    /// CPU time over wall time (2.0: two cores all the time).
    var coresBusy: Double
    var microsecondsPerWorkflow: Double
  }

  struct Step: Codable {
    var name: String
    var latency: Latency
  }

  struct Measured: Codable {
    var seconds: Double
    var completed: Int
    var failed: Int
    var workflowsPerSecond: Double
    var workflow: Latency
    var steps: [Step]
    /// This process (the clients and approvers), the server, the device.
    var client: CPU
    var server: CPU?
    var device: CPU?
    /// The first failures, if any.
    var failures: [String]
  }

  struct Checks: Codable {
    /// Signed transactions whose sender recovers to their wallet's address.
    var sendersRecovered: Int
    /// Results whose transaction hash is Keccak-256 of the signed transaction.
    var transactionHashesMatch: Int
    /// After the run, the server's tree root and leaf count are the device's.
    var treeAgreesWithDevice: Bool
    var deviceEpoch: Int64
    var leafCount: Int64
  }

  var optimized: Bool
  var cores: Int
  var world: String
  var clients: Int
  var wallets: Int
  var workflows: Int
  var warmup: Int
  var vault: VaultBound?
  var setup = Setup()
  var measured: Measured?
  var checks: Checks?
  /// The guide's target: at least 500 workflows/s with p99 under 100 ms.
  var targetWorkflowsPerSecond = 500.0
  var targetP99Milliseconds = 100.0

  init(optimized: Bool, cores: Int, world: String, clients: Int, wallets: Int, workflows: Int, warmup: Int) {
    self.optimized = optimized
    self.cores = cores
    self.world = world
    self.clients = clients
    self.wallets = wallets
    self.workflows = workflows
    self.warmup = warmup
  }

  var targetMet: Bool {
    guard let measured else { return false }
    return measured.workflowsPerSecond >= targetWorkflowsPerSecond && measured.workflow.p99 < targetP99Milliseconds
  }

  /// Every workflow completed, with a matching hash and a sender that recovers, and the trees agree.
  var allVerified: Bool {
    guard let measured, let checks else { return false }
    return measured.failed == 0 && measured.completed == workflows && checks.sendersRecovered == measured.completed
      && checks.transactionHashesMatch == measured.completed && checks.treeAgreesWithDevice
  }

  var text: String {
    var lines = [String]()
    func latency(_ value: Latency) -> String {
      String(format: "p50 %6.2f  p95 %6.2f  p99 %6.2f  max %7.2f ms", value.p50, value.p95, value.p99, value.max)
    }
    lines.append(
      "custos bench api: \(workflows) workflows from \(clients) clients over \(wallets) wallets "
        + "(2-of-3: P-256 bot, Ed25519 bot, ES256 passkey), warm-up \(warmup); \(cores) cores, "
        + (optimized ? "release" : "DEBUG") + " build")
    lines.append("world: \(world)")
    if let ceremony = setup.ceremonySeconds, let start = setup.startSeconds {
      lines.append(
        String(format: "  rehearsal %.1f s; device start, unseal, API key, server start %.1f s", ceremony, start))
    }
    if let creation = setup.walletCreation {
      lines.append(
        String(
          format: "  %d wallets created through the API in %.1f s (%.0f /s, one per vault commit), ", creation.wallets,
          creation.seconds, creation.perSecond) + "latency p50 \(String(format: "%.1f", creation.latency.p50)) ms")
    }
    if let measured {
      lines.append("")
      lines.append(
        String(
          format: "workflows: %d completed, %d failed in %.2f s: %.0f workflows/s", measured.completed, measured.failed,
          measured.seconds, measured.workflowsPerSecond))
      lines.append("  whole workflow".padding(toLength: 66, withPad: " ", startingAt: 0) + latency(measured.workflow))
      for step in measured.steps {
        lines.append("  " + step.name.padding(toLength: 66, withPad: " ", startingAt: 0) + latency(step.latency))
      }
      lines.append("")
      lines.append("where the CPU goes (per workflow; cores busy during the phase)")
      func cpu(_ name: String, _ value: CPU?) {
        guard let value else {
          lines.append("  \(name): not measured (give its --*-pid)")
          return
        }
        lines.append(
          "  " + name.padding(toLength: 40, withPad: " ", startingAt: 0)
            + String(format: "%7.0f us   %.2f cores", value.microsecondsPerWorkflow, value.coresBusy))
      }
      cpu("custos-server (HTTP, SQLite, checks)", measured.server)
      cpu("custos-hsm (the vault)", measured.device)
      cpu("clients and approvers (this)", measured.client)
      let sum = [measured.server, measured.device, measured.client].compactMap { $0?.microsecondsPerWorkflow }
        .reduce(0, +)
      lines.append(
        String(
          format: "  sum %.0f us: %.0f workflows/s on %d cores if CPU were the only bound", sum,
          1e6 / sum * Double(cores), cores))
      for failure in measured.failures { lines.append("  failure: \(failure)") }
    }
    if let checks {
      lines.append("")
      lines.append(
        "checks: \(checks.sendersRecovered) senders recover to their wallet's address, "
          + "\(checks.transactionHashesMatch) transaction hashes match; server tree = device root: "
          + "\(checks.treeAgreesWithDevice) (epoch \(checks.deviceEpoch), \(checks.leafCount) leaves)")
    }
    if let vault, let measured {
      lines.append("")
      lines.append(
        String(
          format: "in-process vault in the same run: %.0f approved signatures/s (%.0f us CPU each); "
            + "raw crypto bound %.0f /s", vault.signaturesPerSecond, vault.cpuMicrosecondsPerSignature,
          vault.rawCryptoPerSecond))
      lines.append(
        String(
          format: "workflows/s over in-process signatures/s: %.2f; over the raw crypto bound: %.2f",
          measured.workflowsPerSecond / vault.signaturesPerSecond,
          measured.workflowsPerSecond / vault.rawCryptoPerSecond
        ))
    }
    if let measured {
      lines.append(
        String(
          format: "target >= %.0f workflows/s with p99 < %.0f ms: ", targetWorkflowsPerSecond, targetP99Milliseconds)
          + (targetMet ? "met" : "NOT met")
          + String(format: " (%.0f /s, p99 %.1f ms)", measured.workflowsPerSecond, measured.workflow.p99))
    }
    return lines.joined(separator: "\n")
  }
}
