import Custody
import TestSupport
import Testing

/// A store that records every batch: the protocol is all the tree needs.
struct RecordingStore: MerkleNodeStore {
  var values: [UInt64: Hash256] = [:]
  var leafCount: UInt64 = 0
  var batches: [[MerkleNodeWrite]] = []

  func node(_ node: UInt64) throws -> Hash256 {
    guard let value = values[node] else { throw MerkleError(.missingNode, "no node \(node)") }
    return value
  }

  mutating func write(_ writes: [MerkleNodeWrite], leafCount: UInt64) throws {
    batches.append(writes)
    for write in writes { values[write.node] = write.value }
    self.leafCount = leafCount
  }
}

@Suite struct MerkleTreeStoreTests {
  @Test func anyStoreGivesTheSameTreeAndEachChangeWritesOneNodePerLevel() throws {
    var recorded = try MerkleTree(store: RecordingStore())
    var memory = MerkleTree()
    for id in UInt64(1)...100 {
      let leaf = Hash256.sha256(Array("wallet \(id)".utf8))
      try recorded.add(walletHash: leaf)
      try memory.add(walletHash: leaf)
      // Two new leaves (2m, 2m+1), then the split node and each ancestor up to the root.
      let split = Merkle.currentLeaf(leafCount: id)
      #expect(recorded.store.batches.last!.map(\.node).prefix(3) == [2 * split, 2 * split + 1, split])
      #expect(recorded.store.batches.last!.count == Merkle.depth(of: split) + 3)
    }
    try recorded.update(walletID: 37, walletHash: .zero)
    try memory.remove(walletID: 37)
    #expect(recorded.store.batches.last!.count == Merkle.depth(of: try memory.node(ofWallet: 37)) + 1)
    #expect(try recorded.root() == memory.root())
    #expect(recorded.store.values.count == 2 * 101 - 1)
    for id in UInt64(1)...100 {
      #expect(try recorded.proof(ofWallet: id) == memory.proof(ofWallet: id))
    }
  }

  @Test func theInMemoryStoreRefusesABatchThatWouldBreakTheTreeAndWritesNothing() throws {
    var store = InMemoryMerkleNodeStore()
    try store.write([MerkleNodeWrite(node: 1, value: .zero)], leafCount: 1)
    let one = Hash256.sha256([1])
    for bad in [
      [MerkleNodeWrite(node: 3, value: one)],  // a gap: node 2 missing
      [MerkleNodeWrite(node: 2, value: one)],  // 2 nodes do not make a tree of 2 leaves
      [MerkleNodeWrite(node: 0, value: one)],  // there is no node 0
    ] {
      #expect(throws: MerkleError.self) { try store.write(bad, leafCount: 2) }
      #expect(store.leafCount == 1)
      #expect(try store.node(1) == .zero)
    }
    #expect(throws: MerkleError.self) { try store.node(2) }
  }

  @Test func unknownWalletsAreRefused() throws {
    var tree = MerkleTree()
    try tree.add(walletHash: Hash256.sha256([1]))
    for id in [UInt64(0), 2, 99] {
      let error = #expect(throws: MerkleError.self) { try tree.proof(ofWallet: id) }
      #expect(error?.code == .unknownWallet)
      #expect(throws: MerkleError.self) { try tree.update(walletID: id, walletHash: .zero) }
    }
    #expect(try tree.root() == Hash256.parent(.zero, Hash256.sha256([1])))
  }
}
