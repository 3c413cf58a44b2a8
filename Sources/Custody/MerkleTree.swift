/// One node value to store.
public struct MerkleNodeWrite: Hashable, Sendable {
  /// Heap number of the node (root 1; children of n are 2n and 2n+1).
  public var node: UInt64
  public var value: Hash256

  public init(node: UInt64, value: Hash256) {
    self.node = node
    self.value = value
  }
}

/// Where the server's tree keeps its nodes: in memory here, in the database on the server.
///
/// A tree with m leaves holds exactly the nodes 1 ... 2m-1, so a store can be a flat table
/// keyed by node number; every change writes one node per level plus, for an add, the two new
/// leaves 2m and 2m+1.
public protocol MerkleNodeStore {
  /// Leaves of the stored tree; 0 for a store never initialised.
  var leafCount: UInt64 { get }
  /// The value of `node`; throws when the store does not hold it.
  func node(_ node: UInt64) throws -> Hash256
  /// The values of several nodes, in order (a database store answers them in one query).
  func nodes(_ nodes: [UInt64]) throws -> [Hash256]
  /// Stores `writes` and the new leaf count as one atomic change: all of it or nothing.
  mutating func write(_ writes: [MerkleNodeWrite], leafCount: UInt64) throws
}

extension MerkleNodeStore {
  public func nodes(_ nodes: [UInt64]) throws -> [Hash256] {
    try nodes.map { try node($0) }
  }
}

/// The fast store: node n's value at index n of one flat array of 32-byte values (index 0 is
/// unused). An add appends nodes 2m and 2m+1, which are always the next two indices.
public struct InMemoryMerkleNodeStore: MerkleNodeStore, Sendable {
  private var values: [Hash256]

  /// An empty store; `MerkleTree` puts the initial empty leaf in it.
  public init() {
    values = [.zero]
  }

  /// Room for a tree of `leaves` leaves without reallocating.
  public mutating func reserveCapacity(leaves: Int) {
    values.reserveCapacity(2 * leaves)
  }

  public var leafCount: UInt64 { UInt64(values.count / 2) }

  @inline(__always)
  public func node(_ node: UInt64) throws -> Hash256 {
    guard node >= 1, node < UInt64(values.count) else {
      throw MerkleError(.missingNode, "node \(node) is not in a tree of \(leafCount) leaves")
    }
    return values[Int(node)]
  }

  @inline(__always)
  public mutating func write(_ writes: [MerkleNodeWrite], leafCount: UInt64) throws {
    // Checked before anything changes, so a refused batch writes nothing.
    let count = UInt64(values.count)
    var appended: UInt64 = 0
    for write in writes where write.node >= count {
      guard write.node == count + appended else {
        throw MerkleError(.missingNode, "node \(write.node) would leave a gap after node \(count + appended - 1)")
      }
      appended += 1
    }
    guard leafCount * 2 == count + appended, writes.allSatisfy({ $0.node >= 1 }) else {
      throw MerkleError(
        .missingNode, "\(count + appended - 1) nodes do not make a tree of \(leafCount) leaves (it has 2m-1 nodes)")
    }
    for write in writes {
      if write.node < UInt64(values.count) {
        values[Int(write.node)] = write.value
      } else {
        values.append(write.value)
      }
    }
  }
}

/// The server's whole tree: every node, O(log n) add, update, remove, proof and path lookup,
/// over any `MerkleNodeStore`.
///
/// It follows exactly the rules the vault checks (see `Merkle`), and builds the `MerkleChange`
/// values the vault expects.
public struct MerkleTree<Store: MerkleNodeStore> {
  public private(set) var store: Store
  private var scratch: [MerkleNodeWrite] = []

  /// The tree in `store`; an empty store gets the initial tree, one empty leaf.
  public init(store: Store) throws {
    self.store = store
    if store.leafCount == 0 {
      try self.store.write([MerkleNodeWrite(node: 1, value: .zero)], leafCount: 1)
    }
  }

  /// Leaves in the tree (wallets added + 1).
  public var leafCount: UInt64 { store.leafCount }

  /// The id the next added wallet gets.
  public var nextWalletID: UInt64 { store.leafCount }

  /// The root hash.
  public func root() throws -> Hash256 { try store.node(1) }

  /// Where wallet `walletID` is now.
  public func path(ofWallet walletID: UInt64) throws -> MerklePath {
    Merkle.path(to: try node(ofWallet: walletID))
  }

  /// The node holding wallet `walletID`'s leaf now.
  public func node(ofWallet walletID: UInt64) throws -> UInt64 {
    guard walletID >= 1, walletID < leafCount else {
      throw MerkleError(.unknownWallet, "wallet \(walletID) is not in the tree (ids 1 to \(leafCount - 1) are)")
    }
    return Merkle.node(ofWallet: walletID, leafCount: leafCount)
  }

  /// Wallet `walletID`'s leaf (its hash, or zero once removed).
  public func leaf(ofWallet walletID: UInt64) throws -> Hash256 {
    try store.node(try node(ofWallet: walletID))
  }

  /// The leaf of wallet `walletID` and its siblings, for an update or a removal.
  public func proof(ofWallet walletID: UInt64) throws -> MerkleProof {
    try proof(atNode: try node(ofWallet: walletID))
  }

  /// The current leaf (the one the next add splits) and its siblings.
  public func currentLeafProof() throws -> MerkleProof {
    try proof(atNode: Merkle.currentLeaf(leafCount: leafCount))
  }

  /// The value at `node` and the siblings along its path, nearest first.
  public func proof(atNode node: UInt64) throws -> MerkleProof {
    var indices = [UInt64]()
    indices.reserveCapacity(Merkle.depth(of: node) + 1)
    indices.append(node)
    var index = node
    while index > 1 {
      indices.append(index ^ 1)
      index >>= 1
    }
    let values = try store.nodes(indices)
    return MerkleProof(leaf: values[0], siblings: Array(values.dropFirst()))
  }

  /// Adds a wallet's leaf under the current leaf; returns the wallet's id.
  @discardableResult
  public mutating func add(walletHash: Hash256) throws -> UInt64 {
    let leafCount = store.leafCount
    guard leafCount < Merkle.maxLeafCount else {
      throw MerkleError(.treeFull, "the tree holds the most leaves it may (\(Merkle.maxLeafCount))")
    }
    let split = Merkle.currentLeaf(leafCount: leafCount)
    let old = try store.node(split)
    scratch.removeAll(keepingCapacity: true)
    scratch.append(MerkleNodeWrite(node: 2 * split, value: old))
    scratch.append(MerkleNodeWrite(node: 2 * split + 1, value: walletHash))
    try rehash(from: split, value: Hash256.parent(old, walletHash))
    try store.write(scratch, leafCount: leafCount + 1)
    return leafCount
  }

  /// Replaces wallet `walletID`'s leaf with `walletHash`.
  public mutating func update(walletID: UInt64, walletHash: Hash256) throws {
    let node = try node(ofWallet: walletID)
    scratch.removeAll(keepingCapacity: true)
    try rehash(from: node, value: walletHash)
    try store.write(scratch, leafCount: store.leafCount)
  }

  /// Replaces wallet `walletID`'s leaf with zero. Other wallets keep their paths.
  public mutating func remove(walletID: UInt64) throws {
    try update(walletID: walletID, walletHash: .zero)
  }

  /// Writes `value` at `node` and the new values of its ancestors into `scratch`.
  private mutating func rehash(from node: UInt64, value: Hash256) throws {
    var index = node
    var running = value
    scratch.append(MerkleNodeWrite(node: index, value: running))
    while index > 1 {
      let sibling = try store.node(index ^ 1)
      running = index & 1 == 0 ? Hash256.parent(running, sibling) : Hash256.parent(sibling, running)
      index >>= 1
      scratch.append(MerkleNodeWrite(node: index, value: running))
    }
  }

  // MARK: Changes for the vault

  /// The change that asks the vault to add `wallet` (an encoding whose id is `nextWalletID`).
  public func addChange(wallet: [UInt8]) throws -> MerkleChange {
    .add(wallet: wallet, currentLeaf: try currentLeafProof())
  }

  /// The change that asks the vault to replace wallet `walletID`'s data `old` by `new`.
  public func updateChange(walletID: UInt64, old: [UInt8], new: [UInt8]) throws -> MerkleChange {
    .update(old: old, new: new, siblings: try proof(ofWallet: walletID).siblings)
  }

  /// The change that asks the vault to remove wallet `walletID`, whose data is `old`.
  public func removeChange(walletID: UInt64, old: [UInt8]) throws -> MerkleChange {
    .remove(old: old, siblings: try proof(ofWallet: walletID).siblings)
  }
}

extension MerkleTree where Store == InMemoryMerkleNodeStore {
  /// A new tree in memory: one empty leaf.
  public init() {
    store = InMemoryMerkleNodeStore()
    try! store.write([MerkleNodeWrite(node: 1, value: .zero)], leafCount: 1)
  }
}
