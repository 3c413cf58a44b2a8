import Custody
import TestSupport
import Testing

@testable import Vault

/// Proof rebasing against the paper's tree built literally (`NaiveWalletTree`): changes made
/// with proofs from older trees, applied in arrival order, give exactly the roots of applying
/// them one after another; the stale ones are refused and change nothing.
@Suite struct RunningRootTests {
  /// A reference that applies the same changes sequentially: the heap tree the proofs come
  /// from, and the naive tree the roots are compared with.
  struct Reference {
    var tree = MerkleTree()
    let naive = NaiveWalletTree()

    mutating func add(_ leaf: Hash256) throws {
      try tree.add(walletHash: leaf)
      naive.add(leaf)
    }

    mutating func set(_ id: UInt64, _ leaf: Hash256) throws {
      try tree.update(walletID: id, walletHash: leaf)
      naive.set(walletID: id, to: leaf)
    }

    var anchor: RootAnchor { RootAnchor(leafCount: tree.leafCount, root: try! tree.root()) }
  }

  static func leaf(_ random: inout SplitMix64) -> Hash256 {
    Hash256.sha256((0..<8).map { _ in UInt8.random(in: 0...255, using: &random) })
  }

  @Test(arguments: [1 as UInt64, 2, 3, 4, 5])
  func randomConcurrentChangesMatchSequentialApplication(seed: UInt64) throws {
    var random = SplitMix64(seed: seed)
    var reference = Reference()
    for _ in 0..<30 { try reference.add(Self.leaf(&random)) }
    var running = RunningRoot(
      durable: RootState(epoch: 0, leafCount: reference.tree.leafCount, root: try reference.tree.root()))
    // The server's trees as callers saw them: snapshot k is the tree after k changes.
    var snapshots = [reference.tree]
    var accepted = 0
    var stale = 0
    // Wallet id -> the snapshot its leaf was last changed after (a change that writes the
    // value it already had, removing a removed wallet, still makes older proofs stale).
    var changedAfter = [UInt64: Int]()
    for _ in 0..<600 {
      let age = Int.random(in: 0...min(12, snapshots.count - 1), using: &random)
      let seenIndex = snapshots.count - 1 - age
      let seen = snapshots[seenIndex]
      let anchor = RootAnchor(leafCount: seen.leafCount, root: try seen.root())
      let before = running.running
      if Int.random(in: 0..<10, using: &random) == 0 {
        // An add, prepared against an older tree, either for that tree's current leaf (accepted
        // only when no add happened since) or naming the running tree's next id (a server with
        // adds in flight: that leaf of the older tree, rebased over the adds in between).
        let next = reference.tree.leafCount
        let named = Bool.random(using: &random) && next < 2 * seen.leafCount
        let node = named ? next : seen.leafCount
        let proof = try seen.proof(atNode: node)
        let newLeaf = Self.leaf(&random)
        let expectAccepted = node == next
        let outcome = Result { () throws(RequestError) in
          try running.add(
            walletID: node, newLeaf: newLeaf,
            proof: CurrentLeafProof(leaf: proof.leaf, siblings: proof.siblings, anchor: anchor, node: node))
        }
        switch outcome {
        case .success:
          #expect(expectAccepted)
          try reference.add(newLeaf)
          accepted += 1
        case .failure(let error):
          #expect(!expectAccepted && error.code == .staleProof, "\(error)")
          #expect(running.running == before)
          stale += 1
        }
      } else {
        let id = UInt64.random(in: 1..<seen.leafCount, using: &random)
        let proof = try seen.proof(ofWallet: id)
        let newLeaf = Int.random(in: 0..<20, using: &random) == 0 ? Hash256.zero : Self.leaf(&random)
        // Stale when the wallet's leaf changed or moved since the caller's tree.
        let expectAccepted =
          try reference.tree.node(ofWallet: id) == (try seen.node(ofWallet: id))
          && (try reference.tree.leaf(ofWallet: id)) == proof.leaf && (changedAfter[id] ?? -1) < seenIndex
        let outcome = Result { () throws(RequestError) in
          try running.update(
            walletID: id, oldLeaf: proof.leaf, newLeaf: newLeaf,
            proof: WalletProof(siblings: proof.siblings, anchor: anchor))
        }
        switch outcome {
        case .success(let change):
          #expect(expectAccepted)
          #expect(change.kind == (newLeaf.isZero ? .remove : .update))
          try reference.set(id, newLeaf)
          changedAfter[id] = snapshots.count - 1
          accepted += 1
        case .failure(let error):
          #expect(!expectAccepted && error.code == .staleProof, "\(error)")
          #expect(running.running == before)
          stale += 1
        }
      }
      #expect(running.running.root == reference.naive.root)
      #expect(running.running.leafCount == reference.tree.leafCount)
      snapshots.append(reference.tree)
      if Int.random(in: 0..<5, using: &random) == 0 {
        running.committed(through: running.runningSequence, as: running.commitTarget(through: running.runningSequence))
      }
    }
    #expect(accepted > 300 && stale > 20, "both paths ran: \(accepted) accepted, \(stale) stale")
  }

  /// A proof that does not give its anchor's root is invalid, not stale; an anchor the vault
  /// never had is stale.
  @Test func invalidAndUnknownAnchors() throws {
    var reference = Reference()
    for index in 0..<5 { try reference.add(Hash256.sha256([UInt8(index)])) }
    let running = RunningRoot(
      durable: RootState(epoch: 3, leafCount: reference.tree.leafCount, root: try reference.tree.root()))
    let proof = try reference.tree.proof(ofWallet: 2)
    var wrong = proof.siblings
    wrong[0] = Hash256.sha256([9])
    #expect(
      refusal {
        _ = try running.verify(
          walletID: 2, leaf: proof.leaf, proof: WalletProof(siblings: wrong, anchor: reference.anchor))
      }
        == .proofInvalid)
    #expect(
      refusal {
        _ = try running.verify(
          walletID: 2, leaf: proof.leaf,
          proof: WalletProof(siblings: Array(proof.siblings.dropLast()), anchor: reference.anchor))
      } == .proofInvalid)
    #expect(
      refusal {
        _ = try running.verify(
          walletID: 9, leaf: proof.leaf, proof: WalletProof(siblings: proof.siblings, anchor: reference.anchor))
      }
        == .proofInvalid)
    let unknown = RootAnchor(leafCount: reference.tree.leafCount, root: Hash256.sha256([7]))
    #expect(
      refusal {
        _ = try running.verify(
          walletID: 2, leaf: proof.leaf, proof: WalletProof(siblings: proof.siblings, anchor: unknown))
      } == .staleProof)
    #expect(
      try running.verify(
        walletID: 2, leaf: proof.leaf, proof: WalletProof(siblings: proof.siblings, anchor: reference.anchor)) == 10,
      "wallet 2 of 5 sits at node 10")
  }

  /// The window: a root older than the kept changes is stale; the changes after the durable
  /// root are never dropped; a rollback forgets the roots of the changes it discards.
  @Test func windowAndRollback() throws {
    var reference = Reference()
    for index in 0..<8 { try reference.add(Hash256.sha256([UInt8(index)])) }
    var running = RunningRoot(
      durable: RootState(epoch: 0, leafCount: reference.tree.leafCount, root: try reference.tree.root()), window: 8)
    let first = reference.tree
    var random = SplitMix64(seed: 42)
    func change(_ id: UInt64) throws {
      let proof = try reference.tree.proof(ofWallet: id)
      let leaf = Self.leaf(&random)
      _ = try running.update(
        walletID: id, oldLeaf: proof.leaf, newLeaf: leaf,
        proof: WalletProof(siblings: proof.siblings, anchor: reference.anchor))
      try reference.set(id, leaf)
    }
    // 20 pending changes: nothing committed, so nothing may leave the log.
    for step in 0..<20 { try change(UInt64(step % 8) + 1) }
    #expect(running.sequence(of: RootAnchor(leafCount: first.leafCount, root: try first.root())) == 0)
    running.committed(through: 20, as: running.commitTarget(through: 20))
    for step in 0..<20 { try change(UInt64(step % 7) + 1) }
    // Now the first root is long out of the window.
    let old = try first.proof(ofWallet: 8)
    #expect(
      refusal {
        _ = try running.update(
          walletID: 8, oldLeaf: old.leaf, newLeaf: .zero,
          proof: WalletProof(
            siblings: old.siblings, anchor: RootAnchor(leafCount: first.leafCount, root: try first.root())))
      } == .staleProof)
    // Roll back the 20 pending changes: the running root is the durable one again, and the
    // roots of the discarded changes are unknown.
    let discarded = reference.anchor
    running.rollBack()
    #expect(running.running.root == running.durable.root)
    #expect(running.runningSequence == 20)
    #expect(running.sequence(of: discarded) == nil)
    #expect(running.sequence(of: RootAnchor(running.durable)) == 20)
  }
}
