import Custody
import Foundation
import HSMBridge
import TestSupport
import Testing
import Vault

/// The tests' logger without the warnings every refused change logs (refusals are the point here).
let quietLogger = {
  var logger = testLogger
  logger.logLevel = .critical
  return logger
}()

/// A vault root on a fresh custody partition, and the server's tree beside it.
struct RootFixture {
  let test: TestDevice
  let session: Session
  let root: WalletRoot
  var tree = MerkleTree()
  var live = [UInt64: [UInt8]]()

  init() throws {
    test = try TestDevice(partitions: ["custody"])
    session = try test.userSession("custody")
    root = WalletRoot(store: try RootStateStore.initialize(session: session, logger: quietLogger), logger: quietLogger)
  }

  /// What the token holds, read by a fresh store.
  func tokenState() throws -> RootState {
    try RootStateStore.open(session: session, logger: testLogger).state
  }

  /// Both slots' labels: equal before and after a call means the call wrote nothing.
  func slotLabels() throws -> [String] {
    try session.findObjects([.application(RootStateStore.application)]).map {
      String(describing: try session.attribute(.label, of: $0))
    }.sorted()
  }

  /// The change adding the next wallet, applied to the server's tree (`tree` moves on).
  mutating func add(revision: UInt64 = 0) throws -> MerkleChange {
    let encoding = SampleWallet.encoding(id: tree.nextWalletID, revision: revision)
    let change = try tree.addChange(wallet: encoding)
    live[try tree.add(walletHash: Hash256.sha256(encoding))] = encoding
    return change
  }

  mutating func update(_ id: UInt64, revision: UInt64) throws -> MerkleChange {
    let encoding = SampleWallet.encoding(id: id, revision: revision)
    let change = try tree.updateChange(walletID: id, old: live[id]!, new: encoding)
    try tree.update(walletID: id, walletHash: Hash256.sha256(encoding))
    live[id] = encoding
    return change
  }

  mutating func remove(_ id: UInt64) throws -> MerkleChange {
    let change = try tree.removeChange(walletID: id, old: live[id]!)
    try tree.remove(walletID: id)
    live[id] = nil
    return change
  }
}

@Suite(.serialized) struct WalletRootTests {
  @Test func aBatchIsVerifiedInOrderAndCommittedWithOneTokenWrite() throws {
    var fixture = try RootFixture()
    var batch = [MerkleChange]()
    for _ in 1...5 { batch.append(try fixture.add()) }
    batch.append(try fixture.update(2, revision: 1))
    batch.append(try fixture.remove(3))
    let outcome = try fixture.root.apply(batch)
    #expect(outcome.rejection == nil)
    #expect(outcome.applied.map(\.kind) == ["add", "add", "add", "add", "add", "update", "remove"])
    #expect(outcome.applied.map(\.walletID) == [1, 2, 3, 4, 5, 2, 3])
    // One commit for the whole batch: epoch 0 -> 1, the other slot still at 0.
    let expected = RootState(epoch: 1, leafCount: 6, root: try fixture.tree.root())
    #expect(outcome.committed == expected)
    #expect(outcome.applied.allSatisfy { $0.state.epoch == 1 })
    #expect(try fixture.tokenState() == expected)
    #expect(try fixture.slotLabels().map { $0.split(separator: "|")[2] }.sorted() == ["0", "1"])
    #expect(fixture.root.nextWalletID == 6)
  }

  @Test func aRefusedChangeStopsTheBatchAndOnlyTheVerifiedPrefixCommits() throws {
    var fixture = try RootFixture()
    _ = try fixture.root.apply([try fixture.add(), try fixture.add(), try fixture.add()])
    let committedTree = fixture.tree
    let first = try fixture.add()
    let second = try fixture.update(1, revision: 1)
    let afterTwo = try fixture.tree.root()
    // A forged change: wallet 2's update with a flipped sibling.
    guard case .update(let old, let new, var siblings) = try fixture.update(2, revision: 1) else { return }
    siblings[0] = Hash256.sha256([0])
    let later = try fixture.update(3, revision: 1)
    let outcome = try fixture.root.apply([first, second, .update(old: old, new: new, siblings: siblings), later])
    #expect(outcome.applied.count == 2)
    #expect(outcome.rejection?.index == 2)
    #expect(outcome.rejection?.kind == "update")
    #expect(outcome.rejection?.notApplied == 2)
    #expect(outcome.rejection?.error.code == .rootMismatch)
    let expected = RootState(epoch: 2, leafCount: 5, root: afterTwo)
    #expect(outcome.committed == expected)
    #expect(try fixture.tokenState() == expected)
    #expect(try committedTree.root() != afterTwo)
  }

  @Test func whenTheFirstChangeIsRefusedNothingIsWritten() throws {
    var fixture = try RootFixture()
    _ = try fixture.root.apply([try fixture.add(), try fixture.add()])
    let before = try fixture.tokenState()
    let labels = try fixture.slotLabels()
    let bogus = MerkleChange.add(wallet: SampleWallet.encoding(id: 9), currentLeaf: try fixture.tree.currentLeafProof())
    let outcome = try fixture.root.apply([bogus, try fixture.add()])
    #expect(outcome.applied.isEmpty)
    #expect(outcome.rejection?.index == 0 && outcome.rejection?.error.code == .walletIDMismatch)
    #expect(outcome.committed == before)
    #expect(try fixture.slotLabels() == labels)
    #expect(try fixture.root.apply([]).committed == before)
    #expect(try fixture.slotLabels() == labels)
  }

  @Test func everyForgeryLeavesTheCommittedRootInTheTokenUntouched() throws {
    var fixture = try RootFixture()
    _ = try fixture.root.apply((1...5).map { _ in try fixture.add() })
    let before = try fixture.tokenState()
    let labels = try fixture.slotLabels()
    let siblings = try fixture.tree.proof(ofWallet: 2).siblings
    let old = fixture.live[2]!
    let new = SampleWallet.encoding(id: 2, revision: 1)
    var flipped = siblings
    flipped[1] = Hash256.sha256([1])
    let internalNode = try fixture.tree.proof(atNode: 10).leaf.bytes + fixture.tree.proof(atNode: 11).leaf.bytes
    var stale = fixture.tree
    try stale.add(walletHash: .zero)  // a count the vault does not have
    let forgeries: [(String, MerkleChange, MerkleError.Code)] = [
      (
        "wrong leaf", .update(old: SampleWallet.encoding(id: 2, revision: 5), new: new, siblings: siblings),
        .rootMismatch
      ),
      ("wrong sibling", .update(old: old, new: new, siblings: flipped), .rootMismatch),
      ("wrong side", .update(old: old, new: new, siblings: siblings.reversed()), .rootMismatch),
      (
        "stale root", .update(old: old, new: new, siblings: try fixture.tree.proof(ofWallet: 4).siblings), .rootMismatch
      ),
      (
        "wrong count", .add(wallet: SampleWallet.encoding(id: 6), currentLeaf: try stale.currentLeafProof()),
        .rootMismatch
      ),
      (
        "internal node as leaf", .remove(old: internalNode, siblings: Array(siblings.dropFirst())), .leafPreimageInvalid
      ),
    ]
    for (name, change, code) in forgeries {
      let outcome = try fixture.root.apply([change])
      #expect(outcome.rejection?.error.code == code, "\(name): \(String(describing: outcome.rejection))")
      #expect(outcome.applied.isEmpty, "\(name)")
      #expect(try fixture.tokenState() == before, "\(name)")
      #expect(try fixture.slotLabels() == labels, "\(name)")
    }
  }

  @Test func aFailedTokenWriteCommitsNothing() throws {
    var fixture = try RootFixture()
    _ = try fixture.root.apply([try fixture.add()])
    let before = fixture.root.state
    try fixture.session.close()
    #expect(throws: (any Error).self) { try fixture.root.apply([try fixture.add()]) }
    #expect(fixture.root.state == before)
    let session = try fixture.test.userSession("custody")
    #expect(try RootStateStore.open(session: session, logger: testLogger).state == before)
  }

  /// Random batches (some with a forged change at a random place) against the real token: the
  /// vault's committed root, the token, the server tree (which keeps only what the vault
  /// applied) and a naive recompute agree after every batch.
  @Test func randomBatchesAgreeWithTheServerTreeAndANaiveRecompute() throws {
    var fixture = try RootFixture()
    var random = SplitMix64(seed: 0xBA7C4)
    var naiveLeaves = [UInt64: Hash256]()
    for round in 0..<40 {
      let committed = fixture
      var batch = [MerkleChange]()
      var leavesAfter = [[UInt64: Hash256]]()
      var leaves = naiveLeaves
      for _ in 0..<Int.random(in: 1...12, using: &random) {
        let roll = Int.random(in: 0..<10, using: &random)
        if fixture.live.isEmpty || roll < 4 {
          let id = fixture.tree.nextWalletID
          batch.append(try fixture.add())
          leaves[id] = Hash256.sha256(fixture.live[id]!)
        } else {
          let id = fixture.live.keys.sorted().randomElement(using: &random)!
          if roll < 8 {
            batch.append(try fixture.update(id, revision: UInt64.random(in: 1...5, using: &random)))
            leaves[id] = Hash256.sha256(fixture.live[id]!)
          } else {
            batch.append(try fixture.remove(id))
            leaves[id] = .zero
          }
        }
        leavesAfter.append(leaves)
      }
      var forgedAt: Int? = nil
      if Int.random(in: 0..<3, using: &random) == 0 {
        let index = Int.random(in: 0..<batch.count, using: &random)
        forgedAt = index
        if case .update(let old, let new, var siblings) = batch[index], !siblings.isEmpty {
          siblings[siblings.count - 1] = Hash256.sha256([UInt8(round)])
          batch[index] = .update(old: old, new: new, siblings: siblings)
        } else {
          batch[index] = .remove(old: [0xA0], siblings: [])
        }
      }
      let outcome = try fixture.root.apply(batch)
      #expect(outcome.rejection?.index == forgedAt, "round \(round)")
      let appliedCount = outcome.applied.count
      #expect(appliedCount == (forgedAt ?? batch.count), "round \(round)")
      // The server keeps the applied prefix only: rebuild its tree from what was committed.
      fixture.tree = committed.tree
      fixture.live = committed.live
      for change in batch.prefix(appliedCount) {
        switch change {
        case .add(let wallet, _):
          fixture.live[try fixture.tree.add(walletHash: Hash256.sha256(wallet))] = wallet
        case .update(_, let new, _):
          let id = try WalletData.decode(new).id
          try fixture.tree.update(walletID: id, walletHash: Hash256.sha256(new))
          fixture.live[id] = new
        case .remove(let old, _):
          let id = try WalletData.decode(old).id
          try fixture.tree.remove(walletID: id)
          fixture.live[id] = nil
        }
      }
      if appliedCount > 0 { naiveLeaves = leavesAfter[appliedCount - 1] }
      let naive = NaiveWalletTree()
      for id in UInt64(1)..<fixture.tree.nextWalletID { naive.add(naiveLeaves[id] ?? .zero) }
      let serverRoot = try fixture.tree.root()
      #expect(outcome.committed.root == serverRoot, "round \(round)")
      #expect(naive.root == serverRoot, "round \(round)")
      #expect(try fixture.tokenState() == outcome.committed, "round \(round)")
    }
  }
}
