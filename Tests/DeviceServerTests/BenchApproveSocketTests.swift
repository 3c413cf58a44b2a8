import Foundation
import TestSupport
import Testing
import Vault
import VaultWire

@testable import custos

/// `custos bench approve --socket` against the real `custos-hsm`: a small run (few wallets, one
/// round) of the same workload in-process and over the socket, and a creation-only run with
/// its memory samples. Figures are not judged here (speed is for the benchmark itself); the
/// shape and the consistency of the reports are.
@Suite(.serialized) struct BenchApproveSocketTests {
  /// What `--json` printed, as the command's own type.
  static func decode(_ text: String) throws -> JSONReport {
    try JSONDecoder().decode(JSONReport.self, from: Data(text.utf8))
  }

  @Test func bothTargetsRunTheSameWorkloadAndTheDurableRootsMatchTheMirror() async throws {
    let rehearsed = try RehearsedDevice.get()
    let copy = try rehearsed.copy()
    let socket = socketPath(copy.directory)
    // Request sessions renewed every 4 token operations: several times during the run.
    let hsm = try HSMProcess(device: copy.device, socket: socket, extra: ["--renew-sessions-after", "4"])
    let custos = builtExecutable("custos")
    let wallets = 6
    let arguments = [
      "bench", "approve", "--socket", socket, "--cu-credential", rehearsed.credential, "--wallets", "\(wallets)",
      "--rounds", "1", "--concurrency", "4", "--clients", "3", "--stage-iterations", "5", "--bound-seconds", "0.05",
      "--json",
    ]

    // SEALED: refused with what to do.
    let sealed = try runProcess(custos, arguments)
    #expect(sealed.status != 0)
    #expect(sealed.error.contains("is SEALED: unseal it first"), "\(sealed.error)")

    let client = try hsm.client()
    try await unseal(client, rehearsed)
    let run = try runProcess(custos, arguments)
    #expect(run.status == 0, "\(run.error)")
    let output = try Self.decode(run.output)
    let inProcess = try #require(output.inProcess).workload
    let socketRun = try #require(output.socket)
    let overSocket = try #require(socketRun.workload)

    // The same kind of report from both targets, for the same work.
    #expect(inProcess.target == "in-process" && overSocket.target == "socket")
    #expect(inProcess.connections == 1 && overSocket.connections == 3 && socketRun.clients == 3)
    for report in [inProcess, overSocket] {
      #expect(report.concurrency == 4)
      #expect(report.creation.wallets == wallets && report.creation.perSecond > 0)
      #expect(report.rounds.count == 1)
      let round = report.rounds[0]
      #expect(round.signatures == wallets && round.perSecond > 0)
      // Every signature's change is in exactly one token write, seen by its epoch.
      #expect(round.batches.changes == wallets)
      #expect(round.batches.commits >= 1 && round.batches.largest <= wallets)
      #expect(round.batches.histogram.reduce(0, +) == round.batches.commits)
      #expect(round.latency.p50 > 0 && round.latency.p50 <= round.latency.max)
      #expect(report.durableRootMatches)
    }
    #expect(inProcess.rounds[0].deviceCoresBusy == nil)
    #expect(overSocket.rounds[0].deviceCoresBusy != nil)
    // In-process the vault counts its own batches: the epochs the results carry say the same.
    let counted = try #require(output.inProcess).vaultBatches
    #expect(counted.commits == inProcess.rounds[0].batches.commits)
    #expect(counted.histogram == inProcess.rounds[0].batches.histogram)
    let ratio = try #require(output.ratio)
    #expect(abs(ratio - overSocket.best / inProcess.best) < 1e-9)
    // Where the difference goes: CPU per signature on each side, and the bare call's share.
    let comparison = try #require(output.comparison)
    #expect(comparison.inProcessMicroseconds > 0 && comparison.deviceMicroseconds > 0)
    #expect(comparison.wireMicroseconds > 0 && comparison.wireBound > 0 && comparison.wireBound < 1)
    // The bare call measured both ways: this run's (pipelined, the default) and the other.
    let wire = try #require(socketRun.wire)
    let otherWire = try #require(socketRun.otherWire)
    #expect(socketRun.sessionCalls == "pipelined" && wire.sessionCalls == "pipelined")
    #expect(otherWire.sessionCalls == "unary")
    for bound in [wire, otherWire] {
      #expect(bound.callsPerSecond > 0 && bound.sequential.p50 > 0 && bound.deviceMicrosecondsPerCall > 0)
    }

    // 6 seals and 6 unseal + re-seal pairs went across fresh PKCS #11 instances.
    #expect(hsm.standardError.contains("request sessions moved to a fresh PKCS #11 instance"))

    // The device the run measured is the custos-hsm process, found through its socket.
    #expect(socketRun.pid == hsm.process.processIdentifier)
    #expect(socketRun.memory.map(\.wallets) == [0, wallets, wallets])
    #expect(socketRun.memory.allSatisfy { $0.residentBytes > 0 && $0.residentBytes <= $0.peakBytes })

    // The device's own durable root holds the wallets the run created and mirrored.
    let session = try await client.login(credential: try rehearsed.cryptoUserCredential())
    let root = try await client.rootState(session)
    #expect(root.leafCount == UInt64(wallets) + 1)
    // Creations share token writes now (each names its wallet id); every write has its epoch.
    let writes = overSocket.creation.tokenWrites + overSocket.rounds[0].batches.commits
    #expect(overSocket.creation.tokenWrites >= 1 && overSocket.creation.tokenWrites <= wallets)
    #expect(root.epoch >= UInt64(writes))

    // A device holding wallets cannot be mirrored from its start: refused, nothing sent.
    let again = try runProcess(custos, arguments)
    #expect(again.status != 0)
    #expect(again.error.contains("already holds \(wallets) wallets"), "\(again.error)")
    #expect(try await client.rootState(session) == root)
    await client.close()
    #expect(hsm.stop().status == 0)
  }

  @Test func aCreationOnlyRunSamplesTheDevicesMemoryAtEachCheckpoint() async throws {
    let rehearsed = try RehearsedDevice.get()
    let copy = try rehearsed.copy()
    let socket = socketPath(copy.directory)
    let hsm = try HSMProcess(device: copy.device, socket: socket)
    let client = try hsm.client()
    try await unseal(client, rehearsed)
    let run = try runProcess(
      builtExecutable("custos"),
      [
        "bench", "approve", "--socket", socket, "--cu-credential", rehearsed.credential, "--create-only",
        "--wallets", "5", "--checkpoint", "2", "--clients", "2", "--json",
      ])
    #expect(run.status == 0, "\(run.error)")
    let output = try Self.decode(run.output)
    #expect(output.inProcess == nil && output.ratio == nil)
    let socketRun = try #require(output.socket)
    #expect(socketRun.workload == nil)
    let creation = try #require(socketRun.creation)
    #expect(creation.wallets == 5 && creation.tokenWrites >= 1 && creation.tokenWrites <= 5)
    #expect(socketRun.memory.map(\.wallets) == [0, 2, 4, 5])
    #expect(socketRun.memory.allSatisfy { $0.residentBytes > 0 && $0.residentBytes <= $0.peakBytes })
    #expect(socketRun.durableRootMatches)
    #expect(socketRun.pid == hsm.process.processIdentifier)
    let session = try await client.login(credential: try rehearsed.cryptoUserCredential())
    #expect(try await client.rootState(session).leafCount == 6)
    await client.close()
    #expect(hsm.stop().status == 0)
  }
}
