import Custody
import Foundation
import TestSupport
import Testing

@testable import Vault

/// Creations in flight at once, each naming the wallet id it is to get (`CurrentLeafProof.node`):
/// the vault applies them in id order, so they share token writes instead of taking one each,
/// and every rule of an add still holds (the proof against a recent root, ids without gaps,
/// nothing changed by a refusal).
@Suite(.serialized) struct ConcurrentCreationTests {
  /// Waits (yielding, no sleep) until `condition` holds; fails the test after 30 s.
  func until(_ what: String, _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(30)
    while !condition() {
      guard ContinuousClock.now < deadline else { throw TestSupportError("timed out waiting for \(what)") }
      await Task.yield()
    }
  }

  /// Ids 5, 6 and 7 are sent before 4, all against the same tree: they wait for 4, then the
  /// four land in id order in ONE token write (the regression this guards: one write per
  /// creation made creating a million wallets take hours).
  @Test func laterIdsWaitForTheEarlierOneAndShareOneTokenWrite() async throws {
    // A long wait: a loaded machine must not turn the waiting into a refusal (4 does come).
    let harness = try CustodyHarness(addWait: .seconds(120))
    let approvers = try TestApprovers()
    for _ in 0..<3 { try await harness.createWallet(approvers) }
    let mirror = harness.mirror
    #expect(mirror.tree.leafCount == 4)
    let proofs = try (4...7 as ClosedRange<UInt64>).map { try #require(try mirror.leafProof(forNewWallet: $0)) }
    #expect(proofs.allSatisfy { $0.anchor == (try? mirror.anchor()) })
    #expect(proofs.map(\.node) == [4, 5, 6, 7])
    let requests = try (0..<4).map { _ in try harness.creation(approvers) }
    harness.vault.resetCommitStatistics()
    let vault = harness.vault

    let results = try await withThrowingTaskGroup(of: RequestResult.self) { group in
      for index in [3, 2, 1] {
        group.addTask {
          try await vault.createWallet(
            envelope: requests[index].envelope, approvals: requests[index].approvals, proof: proofs[index])
        }
      }
      try await until("ids 5, 6 and 7 to wait") { vault.commits.parkedAdds == 3 }
      #expect(vault.rootState.running.leafCount == 4, "nothing applied while 4 is missing")
      group.addTask {
        try await vault.createWallet(envelope: requests[0].envelope, approvals: requests[0].approvals, proof: proofs[0])
      }
      return try await group.reduce(into: []) { $0.append($1) }
    }.sorted { $0.change.sequence < $1.change.sequence }

    #expect(results.map(\.change.walletID) == [4, 5, 6, 7])
    #expect(results.map(\.change.kind) == [.add, .add, .add, .add])
    for (index, result) in results.enumerated() {
      #expect(try WalletData.decode(result.walletData).id == 4 + UInt64(index))
    }
    #expect(Set(results.map(\.change.root.epoch)).count == 1, "one token write made all four durable")
    let statistics = vault.commitStatistics
    #expect(statistics.commits == 1 && statistics.changes == 4)
    #expect(statistics.parkedAdds == 3 && statistics.expiredAdds == 0)
    #expect(vault.commits.parkedAdds == 0)
    for result in results { try harness.receive(result) }
    #expect(try harness.mirror.anchor() == RootAnchor(vault.rootState.durable))
    #expect(try harness.tokenRoot() == vault.rootState.durable)
    // Each new wallet's seed opens under its own data: sealed for the id it got.
    for id in 4...7 as ClosedRange<UInt64> {
      let wallet = try harness.wallet(id)
      #expect(!(try await vault.address(walletData: wallet.encoding, sealedSeed: wallet.sealedSeed)).isEmpty)
    }
  }

  /// A second creation for an id another one already waits for is refused at once; the first
  /// lands once the id before it does.
  @Test func aSecondCreationForAWaitingIdIsRefused() async throws {
    let harness = try CustodyHarness(addWait: .seconds(120))
    let approvers = try TestApprovers()
    for _ in 0..<3 { try await harness.createWallet(approvers) }
    let vault = harness.vault
    let proof5 = try #require(try harness.mirror.leafProof(forNewWallet: 5))
    let proof4 = try #require(try harness.mirror.leafProof(forNewWallet: 4))
    let (first, second, earlier) = (
      try harness.creation(approvers), try harness.creation(approvers), try harness.creation(approvers)
    )
    let waiting = Task {
      try await vault.createWallet(envelope: first.envelope, approvals: first.approvals, proof: proof5)
    }
    try await until("id 5 to wait") { vault.commits.parkedAdds == 1 }
    let twice = await #expect(throws: RequestError.self) {
      try await vault.createWallet(envelope: second.envelope, approvals: second.approvals, proof: proof5)
    }
    #expect(twice?.code == .staleProof && twice?.reason.contains("already waiting") == true)
    let four = try await vault.createWallet(envelope: earlier.envelope, approvals: earlier.approvals, proof: proof4)
    let five = try await waiting.value
    #expect(four.change.walletID == 4 && five.change.walletID == 5)
    try harness.receive(four)
    try harness.receive(five)
    #expect(try harness.mirror.anchor() == RootAnchor(vault.rootState.durable))
  }

  /// A creation whose earlier id never comes is refused once it has waited `addWait`, and
  /// changes nothing; sent again after the earlier one it lands. Taken ids and leaves outside
  /// the anchor's tree are refused at once.
  @Test func refusalsChangeNothing() async throws {
    let harness = try CustodyHarness(addWait: .milliseconds(20))
    let approvers = try TestApprovers()
    for _ in 0..<3 { try await harness.createWallet(approvers) }
    let vault = harness.vault
    let before = vault.rootState
    let early = try #require(try harness.mirror.leafProof(forNewWallet: 5))
    let request = try harness.creation(approvers)

    // Id 5 while 4 never comes: refused after the wait, nothing applied.
    let error = await #expect(throws: RequestError.self) {
      try await vault.createWallet(envelope: request.envelope, approvals: request.approvals, proof: early)
    }
    #expect(error?.code == .staleProof)
    #expect(error?.reason.contains("wallet id 5") == true, "\(String(describing: error))")
    #expect(vault.rootState == before)
    #expect(vault.commitStatistics.expiredAdds == 1 && vault.commits.parkedAdds == 0)

    let other = try harness.creation(approvers)

    // A leaf outside the anchor's tree (4 leaves: nodes 4 to 7) is not a proof of an add.
    let outside = CurrentLeafProof(leaf: early.leaf, siblings: early.siblings, anchor: early.anchor, node: 8)
    #expect(
      await refusal {
        _ = try await vault.createWallet(envelope: request.envelope, approvals: request.approvals, proof: outside)
      } == .proofInvalid)
    // The proof of leaf 5 presented as leaf 6's: its siblings do not give the anchor's root.
    let misplaced = CurrentLeafProof(leaf: early.leaf, siblings: early.siblings, anchor: early.anchor, node: 6)
    #expect(
      await refusal {
        _ = try await vault.createWallet(envelope: request.envelope, approvals: request.approvals, proof: misplaced)
      } == .proofInvalid)
    #expect(vault.rootState == before)

    // In order they land, each with the id it named; the old proof of 4 is then stale (taken).
    let proof4 = try #require(try harness.mirror.leafProof(forNewWallet: 4))
    let four = try await vault.createWallet(
      envelope: request.envelope, approvals: request.approvals, proof: proof4)
    #expect(four.change.walletID == 4)
    let five = try await vault.createWallet(envelope: other.envelope, approvals: other.approvals, proof: early)
    #expect(five.change.walletID == 5)
    let taken = await #expect(throws: RequestError.self) {
      try await vault.createWallet(envelope: request.envelope, approvals: request.approvals, proof: proof4)
    }
    #expect(taken?.code == .staleProof && taken?.reason.contains("taken") == true)
    try harness.receive(four)
    try harness.receive(five)
    #expect(try harness.mirror.anchor() == RootAnchor(vault.rootState.durable))
    #expect(try harness.tokenRoot() == vault.rootState.durable)
  }
}
