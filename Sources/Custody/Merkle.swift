/// The balanced Merkle tree of wallets (DESIGN.md section 6, the whitepaper's "Wallet Data and
/// Merkle Tree" chapter): positions, paths and the arithmetic every side shares.
///
/// Nodes are numbered as in a binary heap: the root is 1, the children of node n are 2n (left)
/// and 2n+1 (right), so node n sits at depth floor(log2 n) and its bits after the leading 1,
/// read from the top, are its path (0 = left, 1 = right).
///
/// With m leaves the leaves are exactly the nodes m ... 2m-1. At init the tree is one empty leaf
/// (m = 1, node 1 = 32 zero bytes). Adding a wallet splits the current leaf, node m: its old
/// value moves to its left child 2m and the new wallet becomes its right child 2m+1; this is the
/// paper's rule (the leaf split next is number m - 2^floor(log2 m), left to right, at depth
/// floor(log2 m)). Wallet w (ids from 1, in insertion order) therefore starts at node 2w+1 and
/// moves to the left child each time its node is split, which gives its position from the
/// leaf count alone: the vault computes it, never the server. The initial empty leaf behaves
/// as wallet 0 (node 1, always the leftmost leaf).
public enum Merkle {
  /// Most leaves a tree may have, so that every node number fits in 63 bits.
  public static let maxLeafCount: UInt64 = 1 << 62

  /// The node a new wallet is added under (the current leaf) when the tree has `leafCount` leaves.
  @inline(__always)
  public static func currentLeaf(leafCount: UInt64) -> UInt64 { leafCount }

  /// The node holding wallet `walletID`'s leaf when the tree has `leafCount` leaves.
  /// Requires `walletID < leafCount` (wallet 0 is the initial empty leaf).
  @inline(__always)
  public static func node(ofWallet walletID: UInt64, leafCount: UInt64) -> UInt64 {
    var node = 2 &* walletID &+ 1
    // A node below m is internal: its value went down to the left child each time it was
    // split, until it reached the leaves m ... 2m-1. Same as doubling while below m.
    if node < leafCount {
      node <<= UInt64(depth(of: leafCount) - depth(of: node))
      if node < leafCount { node <<= 1 }
    }
    return node
  }

  /// floor(log2 node): the depth of `node` (the root is at depth 0).
  @inline(__always)
  public static func depth(of node: UInt64) -> Int { 63 - node.leadingZeroBitCount }

  /// The path from the root down to `node`.
  public static func path(to node: UInt64) -> MerklePath {
    let depth = depth(of: node)
    var sides = [MerklePath.Side]()
    sides.reserveCapacity(depth)
    for level in stride(from: depth - 1, through: 0, by: -1) {
      sides.append((node >> UInt64(level)) & 1 == 0 ? .left : .right)
    }
    return MerklePath(node: node, sides: sides)
  }

  /// The root computed from `leaf` at `node` and its siblings, nearest first: each step hashes
  /// the running value with the sibling on the side the node's own bit says.
  @inline(__always)
  public static func root(from leaf: Hash256, at node: UInt64, siblings: [Hash256]) -> Hash256 {
    var value = leaf
    var index = node
    for sibling in siblings {
      value = index & 1 == 0 ? Hash256.parent(value, sibling) : Hash256.parent(sibling, value)
      index >>= 1
    }
    return value
  }
}

/// Where a node is: the sides taken from the root down to it.
public struct MerklePath: Hashable, Sendable, CustomStringConvertible {
  public enum Side: Hashable, Sendable {
    case left, right
  }
  /// The node's heap number.
  public let node: UInt64
  /// From the root down; empty for the root itself.
  public let sides: [Side]

  public var depth: Int { sides.count }

  /// `L/R/L` style, as the paper writes paths; `root` for the root.
  public var description: String {
    sides.isEmpty ? "root" : sides.map { $0 == .left ? "L" : "R" }.joined(separator: "/")
  }
}

/// A leaf's value and the hashes beside its path, nearest first: what the server sends with a
/// change so the vault can recompute the root it holds.
public struct MerkleProof: Hashable, Sendable {
  /// The value at the node (a wallet hash, or zero for an empty leaf).
  public var leaf: Hash256
  /// Sibling hashes from the leaf's level up to the root's children.
  public var siblings: [Hash256]

  public init(leaf: Hash256, siblings: [Hash256]) {
    self.leaf = leaf
    self.siblings = siblings
  }
}

/// The state the HSM keeps: which commit this is, how many leaves, and the root.
public struct RootState: Hashable, Sendable, CustomStringConvertible {
  /// Counts commits: 0 for a fresh device, one more for every committed batch.
  public var epoch: UInt64
  /// Leaves in the tree (wallets added + 1).
  public var leafCount: UInt64
  public var root: Hash256

  public init(epoch: UInt64, leafCount: UInt64, root: Hash256) {
    self.epoch = epoch
    self.leafCount = leafCount
    self.root = root
  }

  /// A fresh device: epoch 0, one empty leaf, which is the root.
  public static let genesis = RootState(epoch: 0, leafCount: 1, root: .zero)

  public var description: String { "epoch \(epoch), \(leafCount) leaves, root \(root.hex)" }
}

/// One change the server asks the vault to make, with what the vault needs to check it.
public enum MerkleChange: Hashable, Sendable {
  /// Add a wallet: its encoding (its id must be the next one, the leaf count) and the current
  /// leaf's value and siblings.
  case add(wallet: [UInt8], currentLeaf: MerkleProof)
  /// Replace a wallet's data: the encoding the tree holds now, the new one (same id), and the
  /// siblings of the wallet's leaf.
  case update(old: [UInt8], new: [UInt8], siblings: [Hash256])
  /// Remove a wallet (its leaf becomes zero): the encoding the tree holds and the siblings.
  case remove(old: [UInt8], siblings: [Hash256])

  /// `add`, `update` or `remove`.
  public var kind: String {
    switch self {
    case .add: "add"
    case .update: "update"
    case .remove: "remove"
    }
  }
}

/// What a verified change did.
public struct AppliedChange: Hashable, Sendable {
  public var kind: String
  public var walletID: UInt64
  /// The wallet's node before the change (for an add, the node that was split).
  public var node: UInt64
  /// The wallet's new leaf: its hash (of the encoding the change carried, which the vault
  /// decoded and validated), or zero after a removal.
  public var leaf: Hash256
  /// The tree after the change (same epoch: epochs count commits, not changes).
  public var state: RootState

  /// A change as the vault reported it (the server rebuilds one from the wire to mirror it).
  public init(kind: String, walletID: UInt64, node: UInt64, leaf: Hash256, state: RootState) {
    self.kind = kind
    self.walletID = walletID
    self.node = node
    self.leaf = leaf
    self.state = state
  }
}

/// The vault's side of the tree: it holds only a `RootState` and accepts a change only after
/// recomputing its current root from the leaf and siblings the server supplies.
///
/// Positions come from the wallet id and the leaf count, never from the server. Every wallet
/// encoding is decoded (and so validated) before its hash is trusted, which also refuses a
/// 64-byte internal node passed off as a leaf preimage. A refused change leaves the state as
/// it was.
public struct MerkleVerifier: Sendable, Hashable {
  public private(set) var state: RootState

  public init(state: RootState) {
    self.state = state
  }

  /// The id the next added wallet must carry.
  public var nextWalletID: UInt64 { state.leafCount }

  /// Verifies `change` against the current state and, when it holds, applies it.
  @discardableResult
  public mutating func apply(_ change: MerkleChange) throws(MerkleError) -> AppliedChange {
    switch change {
    case .add(let encoding, let proof):
      let wallet = try MerkleVerifier.decodeLeaf(encoding, role: "new wallet")
      let leaf = Hash256.sha256(encoding)
      let applied = try add(leaf: leaf, walletID: wallet.id, currentLeaf: proof)
      return AppliedChange(
        kind: "add", walletID: wallet.id, node: applied.node, leaf: leaf, state: applied.state)
    case .update(let oldEncoding, let newEncoding, let siblings):
      let old = try MerkleVerifier.decodeLeaf(oldEncoding, role: "current wallet")
      let new = try MerkleVerifier.decodeLeaf(newEncoding, role: "updated wallet")
      guard new.id == old.id else {
        throw MerkleError(
          .walletIDMismatch, "an update may not change the wallet id (\(old.id) -> \(new.id))")
      }
      let leaf = Hash256.sha256(newEncoding)
      let node = try replace(
        walletID: old.id, oldLeaf: Hash256.sha256(oldEncoding), newLeaf: leaf, siblings: siblings)
      return AppliedChange(kind: "update", walletID: old.id, node: node, leaf: leaf, state: state)
    case .remove(let oldEncoding, let siblings):
      let old = try MerkleVerifier.decodeLeaf(oldEncoding, role: "removed wallet")
      let node = try replace(
        walletID: old.id, oldLeaf: Hash256.sha256(oldEncoding), newLeaf: .zero, siblings: siblings)
      return AppliedChange(kind: "remove", walletID: old.id, node: node, leaf: .zero, state: state)
    }
  }

  /// Adds the leaf of wallet `walletID` under the current leaf (leaf-level: the caller has
  /// decoded the wallet). The id must be the next one.
  public mutating func add(
    leaf: Hash256, walletID: UInt64, currentLeaf proof: MerkleProof
  ) throws(MerkleError) -> (node: UInt64, state: RootState) {
    let leafCount = state.leafCount
    guard walletID == leafCount else {
      throw MerkleError(
        .walletIDMismatch,
        "the new wallet carries id \(walletID) but the next id is \(leafCount) (ids follow insertion order)")
    }
    guard leafCount < Merkle.maxLeafCount else {
      throw MerkleError(.treeFull, "the tree holds the most leaves it may (\(Merkle.maxLeafCount))")
    }
    let node = Merkle.currentLeaf(leafCount: leafCount)
    try checkOldRoot(leaf: proof.leaf, node: node, siblings: proof.siblings, what: "the current leaf")
    let split = Hash256.parent(proof.leaf, leaf)
    state.root = Merkle.root(from: split, at: node, siblings: proof.siblings)
    state.leafCount = leafCount + 1
    return (node, state)
  }

  /// Replaces wallet `walletID`'s leaf `oldLeaf` by `newLeaf` (leaf-level: the caller has
  /// decoded both wallets). Returns the wallet's node.
  public mutating func replace(
    walletID: UInt64, oldLeaf: Hash256, newLeaf: Hash256, siblings: [Hash256]
  ) throws(MerkleError) -> UInt64 {
    guard walletID >= 1, walletID < state.leafCount else {
      throw MerkleError(
        .unknownWallet, "wallet \(walletID) is not in the tree (ids 1 to \(state.leafCount - 1) are)")
    }
    let node = Merkle.node(ofWallet: walletID, leafCount: state.leafCount)
    try checkOldRoot(leaf: oldLeaf, node: node, siblings: siblings, what: "wallet \(walletID)'s leaf")
    state.root = Merkle.root(from: newLeaf, at: node, siblings: siblings)
    return node
  }

  private func checkOldRoot(leaf: Hash256, node: UInt64, siblings: [Hash256], what: String) throws(MerkleError) {
    let depth = Merkle.depth(of: node)
    guard siblings.count == depth else {
      throw MerkleError(
        .proofLength,
        "\(what) is at \(Merkle.path(to: node)) (depth \(depth) with \(state.leafCount) leaves) but \(siblings.count) siblings were given"
      )
    }
    let computed = Merkle.root(from: leaf, at: node, siblings: siblings)
    guard computed == state.root else {
      throw MerkleError(
        .rootMismatch,
        "\(what) and its siblings give root \(computed.hex), not the committed root \(state.root.hex) (epoch \(state.epoch))"
      )
    }
  }

  private static func decodeLeaf(_ encoding: [UInt8], role: String) throws(MerkleError) -> WalletData {
    do {
      return try WalletData.decode(encoding)
    } catch {
      throw MerkleError(
        .leafPreimageInvalid, "the \(role)'s \(encoding.count)-byte encoding is not wallet data: \(error)")
    }
  }
}

/// A change the vault refuses: which check failed.
public struct MerkleError: Error, Hashable, Sendable, CustomStringConvertible {
  /// What kind of failure this is. Extensible: new codes are added as static members.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public var description: String { name }

    /// The supplied leaf and siblings do not give the committed root.
    public static let rootMismatch = Code("rootMismatch")
    /// The number of siblings is not the depth the vault computes for the leaf.
    public static let proofLength = Code("proofLength")
    /// A wallet encoding that does not decode as wallet data.
    public static let leafPreimageInvalid = Code("leafPreimageInvalid")
    /// A wallet id other than the one the change must carry.
    public static let walletIDMismatch = Code("walletIDMismatch")
    /// A wallet id that is not in the tree.
    public static let unknownWallet = Code("unknownWallet")
    /// No more leaves may be added.
    public static let treeFull = Code("treeFull")
    /// A node the store does not hold (server side).
    public static let missingNode = Code("missingNode")
  }

  public let code: Code
  public let reason: String

  public init(_ code: Code, _ reason: String) {
    self.code = code
    self.reason = reason
  }

  public var description: String { "\(code): \(reason)" }
}
