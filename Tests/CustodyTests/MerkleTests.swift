import Custody
import Foundation
import TestSupport
import Testing

/// W1 ... W5 and their leaves.
let walletEncodings = (0...8).map { $0 == 0 ? [] : SampleWallet.encoding(id: UInt64($0)) }
let W = walletEncodings.map { $0.isEmpty ? Hash256.zero : Hash256.sha256($0) }
func H(_ left: Hash256, _ right: Hash256) -> Hash256 { Hash256.parent(left, right) }

/// The server tree and the vault verifier after adding wallets 1 ... n through real changes.
func treeAndVerifier(wallets n: Int) throws -> (MerkleTree<InMemoryMerkleNodeStore>, MerkleVerifier) {
  var tree = MerkleTree()
  var verifier = MerkleVerifier(state: .genesis)
  for id in 1...n {
    try verifier.apply(try tree.addChange(wallet: walletEncodings[id]))
    try tree.add(walletHash: W[id])
  }
  return (tree, verifier)
}

@Suite struct MerklePaperDiagramTests {
  @Test func initIsOneEmptyLeafWhichIsTheRoot() throws {
    let tree = MerkleTree()
    #expect(tree.leafCount == 1)
    #expect(try tree.root() == .zero)
    #expect(RootState.genesis == RootState(epoch: 0, leafCount: 1, root: .zero))
    #expect(Merkle.path(to: Merkle.currentLeaf(leafCount: 1)).description == "root")
  }

  @Test func afterOneWallet() throws {
    let (tree, verifier) = try treeAndVerifier(wallets: 1)
    // root(0, W1): the empty leaf moved left, W1 on the right; the current leaf is the 0 at L.
    #expect(try tree.root() == H(.zero, W[1]))
    #expect(verifier.state.root == H(.zero, W[1]))
    #expect(try tree.path(ofWallet: 1).description == "R")
    #expect(Merkle.path(to: Merkle.currentLeaf(leafCount: tree.leafCount)).description == "L")
    #expect(try tree.currentLeafProof().leaf == .zero)
  }

  @Test func afterTwoWallets() throws {
    let (tree, verifier) = try treeAndVerifier(wallets: 2)
    // root(L(0, W2), R(W1)); the current leaf is W1 at R.
    #expect(try tree.root() == H(H(.zero, W[2]), W[1]))
    #expect(verifier.state.root == (try tree.root()))
    #expect(try tree.path(ofWallet: 1).description == "R")
    #expect(try tree.path(ofWallet: 2).description == "L/R")
    #expect(try tree.currentLeafProof().leaf == W[1])
    #expect(Merkle.path(to: Merkle.currentLeaf(leafCount: tree.leafCount)).description == "R")
  }

  @Test func afterFiveWallets() throws {
    let (tree, verifier) = try treeAndVerifier(wallets: 5)
    // root(L(LL(0, W4), LR(W2, W5)), R(W1, W3)).
    let expected = H(H(H(.zero, W[4]), H(W[2], W[5])), H(W[1], W[3]))
    #expect(try tree.root() == expected)
    #expect(verifier.state == RootState(epoch: 0, leafCount: 6, root: expected))
    let paths = try (1...5).map { try tree.path(ofWallet: UInt64($0)).description }
    #expect(paths == ["R/L", "L/R/L", "R/R", "L/L/R", "L/R/R"])
    // The current leaf is W1 (at R/L): the next add splits it.
    #expect(try tree.currentLeafProof().leaf == W[1])
    #expect(Merkle.path(to: Merkle.currentLeaf(leafCount: 6)).description == "R/L")
  }

  @Test func updatingWallet2AlongLRLWithItsThreeSiblings() throws {
    var (tree, verifier) = try treeAndVerifier(wallets: 5)
    let proof = try tree.proof(ofWallet: 2)
    // Nearest first: W5 beside it, LL = H(0, W4) above, R = H(W1, W3) at the top.
    #expect(proof.leaf == W[2])
    #expect(proof.siblings == [W[5], H(.zero, W[4]), H(W[1], W[3])])
    let updated = SampleWallet.encoding(id: 2, revision: 1)
    let applied = try verifier.apply(try tree.updateChange(walletID: 2, old: walletEncodings[2], new: updated))
    try tree.update(walletID: 2, walletHash: Hash256.sha256(updated))
    let expected = H(H(H(.zero, W[4]), H(Hash256.sha256(updated), W[5])), H(W[1], W[3]))
    #expect(applied.walletID == 2 && applied.kind == "update" && Merkle.path(to: applied.node).description == "L/R/L")
    #expect(verifier.state.root == expected)
    #expect(try tree.root() == expected)
  }

  @Test func removingWallet2() throws {
    var (tree, verifier) = try treeAndVerifier(wallets: 5)
    let before = try (1...5).map { try tree.path(ofWallet: UInt64($0)) }
    try verifier.apply(try tree.removeChange(walletID: 2, old: walletEncodings[2]))
    try tree.remove(walletID: 2)
    let expected = H(H(H(.zero, W[4]), H(.zero, W[5])), H(W[1], W[3]))
    #expect(try tree.root() == expected)
    #expect(verifier.state.root == expected)
    #expect(try tree.leaf(ofWallet: 2) == .zero)
    // Nobody moves: the other wallets keep their paths.
    #expect(try (1...5).map { try tree.path(ofWallet: UInt64($0)) } == before)
    // A removed wallet cannot be updated or removed again: no encoding hashes to zero.
    let again = #expect(throws: MerkleError.self) {
      try verifier.apply(.remove(old: walletEncodings[2], siblings: try tree.proof(ofWallet: 2).siblings))
    }
    #expect(again?.code == .rootMismatch)
  }
}

@Suite struct MerklePositionTests {
  @Test func positionsFollowFromTheLeafCountAsTheSplitRuleSays() {
    for leafCount in UInt64(1)...600 {
      // The paper: the leaf split next is number m - 2^floor(log2 m) at depth floor(log2 m).
      let current = Merkle.currentLeaf(leafCount: leafCount)
      let depth = 63 - leafCount.leadingZeroBitCount
      #expect(Merkle.depth(of: current) == depth)
      #expect(current - (1 << UInt64(depth)) == leafCount - (1 << UInt64(depth)))
      for wallet in UInt64(0)..<leafCount {
        // Wallet w enters at 2w+1 and goes left each time its node is split.
        var node = 2 * wallet + 1
        while node < leafCount { node *= 2 }
        #expect(Merkle.node(ofWallet: wallet, leafCount: leafCount) == node)
      }
    }
    #expect(Merkle.node(ofWallet: 3, leafCount: Merkle.maxLeafCount) == 7 << 60)
  }

  @Test func theNaiveTreeAgreesOnShapesAndPaths() throws {
    var tree = MerkleTree()
    let naive = NaiveWalletTree()
    #expect(naive.shape == "0")
    var shapes = [String]()
    for id in 1...8 {
      try tree.add(walletHash: W[id])
      naive.add(W[id])
      shapes.append(naive.shape)
      for wallet in 1...id {
        #expect(try tree.path(ofWallet: UInt64(wallet)).description == naive.path(of: UInt64(wallet)))
      }
      #expect(Merkle.path(to: Merkle.currentLeaf(leafCount: tree.leafCount)).description == naive.currentLeafPath)
      #expect(try tree.root() == naive.root)
    }
    #expect(shapes[0] == "(0, W1)")
    #expect(shapes[1] == "((0, W2), W1)")
    #expect(shapes[4] == "(((0, W4), (W2, W5)), (W1, W3))")
  }
}

@Suite struct MerklePropertyTests {
  /// Thousands of random sequences: the server tree, the vault verifier and a naive full
  /// recompute agree on every root, and the server's paths match the naive tree's.
  @Test func serverTreeVaultVerifierAndNaiveRecomputeAgree() throws {
    var random = SplitMix64(seed: 0x5EED_0005)
    let pool = (1...40).map { id in (0...3).map { SampleWallet.encoding(id: UInt64(id), revision: UInt64($0)) } }
    var changes = 0
    for sequence in 0..<2_000 {
      var tree = MerkleTree()
      var verifier = MerkleVerifier(state: .genesis)
      let naive = NaiveWalletTree()
      var current = [UInt64: [UInt8]]()  // live wallets' encodings
      for _ in 0..<Int.random(in: 1...20, using: &random) {
        let roll = Int.random(in: 0..<10, using: &random)
        let change: MerkleChange
        if current.isEmpty || roll < 5 {
          let id = tree.nextWalletID
          guard id <= 40 else { break }
          let encoding = pool[Int(id) - 1][0]
          change = try tree.addChange(wallet: encoding)
          try tree.add(walletHash: Hash256.sha256(encoding))
          naive.add(Hash256.sha256(encoding))
          current[id] = encoding
        } else {
          let id = current.keys.sorted().randomElement(using: &random)!
          if roll < 8 {
            let new = pool[Int(id) - 1][Int.random(in: 0...3, using: &random)]
            change = try tree.updateChange(walletID: id, old: current[id]!, new: new)
            try tree.update(walletID: id, walletHash: Hash256.sha256(new))
            naive.set(walletID: id, to: Hash256.sha256(new))
            current[id] = new
          } else {
            change = try tree.removeChange(walletID: id, old: current[id]!)
            try tree.remove(walletID: id)
            naive.set(walletID: id, to: .zero)
            current[id] = nil
          }
        }
        let applied = try verifier.apply(change)
        changes += 1
        let root = try tree.root()
        #expect(applied.state.root == root, "sequence \(sequence)")
        #expect(naive.root == root, "sequence \(sequence)")
        #expect(verifier.state.leafCount == tree.leafCount)
        #expect(try tree.path(ofWallet: applied.walletID).description == naive.path(of: applied.walletID))
      }
    }
    #expect(changes > 10_000)
  }
}

@Suite struct ForgedProofTests {
  /// Five wallets, then each forgery: refused with its code, the verifier's state untouched.
  func expectRefused(
    _ change: MerkleChange, _ code: MerkleError.Code, _ what: String, wallets: Int = 5,
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    var (_, verifier) = try treeAndVerifier(wallets: wallets)
    let before = verifier.state
    let error = #expect(throws: MerkleError.self, "\(what)", sourceLocation: sourceLocation) {
      try verifier.apply(change)
    }
    #expect(error?.code == code, "\(what): \(String(describing: error))", sourceLocation: sourceLocation)
    #expect(verifier.state == before, "\(what) changed the state", sourceLocation: sourceLocation)
  }

  @Test func everyForgedProofIsRefusedAndTheRootStaysAsItWas() throws {
    let (tree, _) = try treeAndVerifier(wallets: 5)
    let siblings = try tree.proof(ofWallet: 2).siblings
    let updated = SampleWallet.encoding(id: 2, revision: 1)

    // Wrong leaf: stale data for wallet 2, or another wallet's data sent as wallet 2's.
    try expectRefused(
      .update(old: SampleWallet.encoding(id: 2, revision: 3), new: updated, siblings: siblings), .rootMismatch,
      "wrong leaf")
    try expectRefused(
      .update(old: walletEncodings[5], new: SampleWallet.encoding(id: 5, revision: 1), siblings: siblings),
      .rootMismatch, "another wallet's leaf with wallet 2's siblings")
    // Wrong sibling: one bit of one sibling.
    for index in siblings.indices {
      var bytes = siblings[index].bytes
      bytes[7] ^= 0x10
      var forged = siblings
      forged[index] = Hash256(bytes)!
      try expectRefused(
        .update(old: walletEncodings[2], new: updated, siblings: forged), .rootMismatch, "sibling \(index)")
    }
    // Wrong side: the siblings in another order, or a proof made for the node beside it.
    try expectRefused(
      .update(old: walletEncodings[2], new: updated, siblings: siblings.reversed()), .rootMismatch, "reversed siblings")
    try expectRefused(
      .update(old: walletEncodings[2], new: updated, siblings: [W[2]] + siblings.dropFirst()), .rootMismatch,
      "wallet 2 presented as its right-hand neighbour")
    // Wrong count: a proof from when the tree had 3 leaves (wallet 2 was at L/R, depth 2).
    let (small, _) = try treeAndVerifier(wallets: 2)
    try expectRefused(
      .update(old: walletEncodings[2], new: updated, siblings: try small.proof(ofWallet: 2).siblings), .proofLength,
      "proof for a smaller tree")
    try expectRefused(
      .add(wallet: walletEncodings[6], currentLeaf: try small.currentLeafProof()), .proofLength,
      "current leaf of a smaller tree")
    try expectRefused(
      .add(wallet: walletEncodings[7], currentLeaf: try tree.currentLeafProof()), .walletIDMismatch,
      "an add that claims id 7 when the next is 6")
    try expectRefused(
      .update(old: walletEncodings[7], new: walletEncodings[7], siblings: siblings), .unknownWallet,
      "a wallet not yet added")
    try expectRefused(
      .update(old: walletEncodings[2], new: walletEncodings[3], siblings: siblings), .walletIDMismatch,
      "an update that changes the id")
    // An internal node passed off as a leaf: wallet 2's parent (L/R) is H(W2, W5); its 64-byte
    // preimage is offered as wallet data, with the siblings of that internal node.
    let internalPreimage = W[2].bytes + W[5].bytes
    try expectRefused(
      .update(old: internalPreimage, new: updated, siblings: Array(siblings.dropFirst())), .leafPreimageInvalid,
      "a 64-byte internal node as wallet data")
    try expectRefused(
      .remove(old: internalPreimage, siblings: Array(siblings.dropFirst())), .leafPreimageInvalid,
      "removing an internal node")
    // ... and at the leaf level, where no decoding happens, the vault's own depth refuses it.
    var (_, verifier) = try treeAndVerifier(wallets: 5)
    let before = verifier.state
    let error = #expect(throws: MerkleError.self) {
      try verifier.replace(walletID: 2, oldLeaf: H(W[2], W[5]), newLeaf: .zero, siblings: Array(siblings.dropFirst()))
    }
    #expect(error?.code == .proofLength)
    #expect(verifier.state == before)
  }

  @Test func aStaleProofIsRefusedAfterTheTreeMoved() throws {
    var (tree, verifier) = try treeAndVerifier(wallets: 5)
    let stale = try tree.updateChange(
      walletID: 2, old: walletEncodings[2], new: SampleWallet.encoding(id: 2, revision: 1))
    // Another change lands first: wallet 4 is updated, so the root moved.
    let other = SampleWallet.encoding(id: 4, revision: 1)
    try verifier.apply(try tree.updateChange(walletID: 4, old: walletEncodings[4], new: other))
    try tree.update(walletID: 4, walletHash: Hash256.sha256(other))
    let before = verifier.state
    let error = #expect(throws: MerkleError.self) { try verifier.apply(stale) }
    #expect(error?.code == .rootMismatch)
    #expect(verifier.state == before)
    // The same change made against the current tree goes through.
    try verifier.apply(
      try tree.updateChange(walletID: 2, old: walletEncodings[2], new: SampleWallet.encoding(id: 2, revision: 1)))
  }
}

/// `Hash256` from 32 bytes in any collection: arrays and `Data` take the one-load path, other
/// collections the element-wise one, and all give the same value; other lengths give nil.
@Suite struct Hash256BytesTests {
  @Test func everyCollectionOf32BytesGivesTheSameValue() throws {
    let bytes = (0..<32).map { UInt8($0 * 7 + 1) }
    let value = try #require(Hash256(bytes))
    #expect(value.bytes == bytes)
    #expect(Hash256(Data(bytes)) == value)
    #expect(Hash256(bytes[0..<32]) == value)
    #expect(Hash256(bytes.reversed().reversed()) == value)  // not contiguous
    #expect(Hash256(bytes.lazy.map { $0 }) == value)
    #expect(Hash256(Array(bytes.dropLast())) == nil)
    #expect(Hash256(Data(bytes + [0])) == nil)
    #expect(Hash256(hex: value.hex) == value)
  }
}
