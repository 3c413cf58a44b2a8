import Custody
import Foundation
import TestSupport
import Testing
import Vault
import VaultWire

#if canImport(Glibc)
import Glibc
#endif

/// Crash consistency with real processes: SIGKILL of custos-server, and separately of
/// custos-hsm, at each step of a signing (the intent written and the vault not called; the
/// vault answered and nothing stored; the result stored and the HTTP answer not sent). After
/// restarting (and unsealing the device), the database's tree root is the device's root, no
/// wallet is lost, and the signing completes exactly once with a transaction whose sender is
/// the wallet's address.
@Suite(.serialized) struct CrashTests {
  enum Victim: String, Sendable {
    case server, device
  }

  @Test(arguments: [
    (Victim.server, "after-intent"), (Victim.server, "after-result"), (Victim.server, "after-apply"),
    (Victim.device, "after-intent"), (Victim.device, "after-result"),
  ])
  func killDuringSigningLosesNothing(victim: Victim, point: String) async throws {
    let stack = try await Stack()
    defer { stack.stop() }
    let approvers = try Approvers(seed: "crash \(victim) \(point)")
    _ = try await stack.waitForAgreement()
    let (walletID, _) = try await stack.api.createWallet(approvers)
    let address = try #require(
      (try await stack.api.send("GET", "/v1/wallets/\(walletID)/addresses", operation: nil).json["addresses"]
        as? [[String: Any]])?.first?["address"] as? String)
    let requestID = try await stack.api.transfer(walletID)
    try await stack.api.approve(requestID, as: "bot-a", by: approvers)

    // The server again, this time with the fault at `point`.
    stack.server?.stop()
    let marker = stack.directory.appending("release")
    switch victim {
    case .server: try stack.startServer(environment: ["CUSTOS_SERVER_FAULT": "\(point):crash"])
    case .device: try stack.startServer(environment: ["CUSTOS_SERVER_FAULT": "\(point):pause:\(marker)"])
    }
    _ = try await stack.waitForAgreement()
    let api = stack.api!
    let approval = Task { try? await api.approve(requestID, as: "carol", by: approvers) }

    switch victim {
    case .server:
      // The approval's call dies with the server.
      _ = await approval.value
      let exit = try #require(stack.server).stop()
      #expect(exit.reason == .uncaughtSignal && exit.status == SIGKILL, "the server was not killed at \(point)")
      try stack.startServer()
    case .device:
      // The server waits at `point`; the device dies there; then the server goes on.
      let deadline = Date().addingTimeInterval(30)
      while !FileManager.default.fileExists(atPath: marker + ".reached") {
        guard Date() < deadline else { throw TestSupportError("the server never reached \(point)") }
        try await Task.sleep(for: .milliseconds(10))
      }
      let exit = try #require(stack.hsm).stop(SIGKILL)
      #expect(exit.reason == .uncaughtSignal)
      _ = FileManager.default.createFile(atPath: marker, contents: nil)
      _ = await approval.value
      try await stack.startDevice()
    }

    // Settled: the request completes once, the roots agree, the wallet is there.
    let request = try await stack.waitForRequest(requestID) { $0["status"] as? String == "completed" }
    _ = try await stack.waitForAgreement()
    let snapshot = try stack.databaseSnapshot()
    let deviceRoot = try await stack.deviceRoot()
    #expect(snapshot.root == deviceRoot.root, "database \(snapshot), device \(deviceRoot)")
    #expect(snapshot.leafCount == deviceRoot.leafCount)
    #expect(snapshot.wallets == 1 && snapshot.sealedSeeds == 1 && snapshot.pendingIntents == 0, "\(snapshot)")
    let result = try #require(request["result"] as? [String: Any])
    let signedText = try #require(result["signedTransaction"] as? String)
    let signed = try #require(Hex.decode(signedText))
    #expect(
      EthereumAddress.checksummed(try EthereumSigning.sender(ofSignedTransaction: signed, secp: try Secp256k1()))
        == address)

    // The wallet still signs: its stored data and sealed seed are the ones the device holds.
    let next = try await stack.api.transfer(walletID, nonce: 1)
    try await stack.api.approve(next, as: "bot-a", by: approvers)
    try await stack.api.approve(next, as: "bot-b", by: approvers)
    // Completed at once, or by the keeper's next round if a reconciliation was settling.
    _ = try await stack.waitForRequest(next) { $0["status"] as? String == "completed" }
    let final = try stack.databaseSnapshot()
    #expect(try await stack.deviceRoot().root == final.root)
    // SIGTERM: the server finishes and exits 0.
    let server = try #require(stack.server)
    let stopped = server.stop()
    #expect(stopped.reason == .exit && stopped.status == 0, "\(server.standardError.suffix(2000))")
  }
}
