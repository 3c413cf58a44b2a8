/// The server's side of the vault's request API in its smallest form: the whole tree, each
/// wallet's latest data and sealed seed, and the proofs the vault asks for. Results are
/// mirrored in the vault's order (`AppliedWalletChange.sequence`): a result that arrives early
/// waits until the ones before it are in, and after each change the tree's root must be the
/// root the vault reported for it.
///
/// Tests and benchmarks use it as the server; the custody server keeps the same state in its
/// database.
public struct VaultTreeMirror<Store: MerkleNodeStore> {
  public private(set) var tree: MerkleTree<Store>
  /// Wallet id -> its latest data (encoding) and sealed seed (empty when the mirror does not
  /// keep wallets).
  public private(set) var wallets: [UInt64: (walletData: [UInt8], sealedSeed: [UInt8])] = [:]
  /// The sequence number of the last change mirrored.
  public private(set) var sequence: UInt64
  /// Whether `wallets` is kept.
  public let keepsWallets: Bool
  private var early: [UInt64: RequestResult] = [:]

  /// A mirror of a vault whose root is the tree in `store`, after change `sequence`. Without
  /// `keepingWallets` it follows the tree and checks every root but drops the wallets' data
  /// and sealed seeds (for a run that only creates wallets, a million of them).
  public init(store: Store, sequence: UInt64 = 0, keepingWallets: Bool = true) throws {
    tree = try MerkleTree(store: store)
    self.sequence = sequence
    keepsWallets = keepingWallets
  }

  /// The anchor of the tree as mirrored so far.
  public func anchor() throws -> RootAnchor {
    RootAnchor(leafCount: tree.leafCount, root: try tree.root())
  }

  /// The proof the vault needs to change wallet `walletID`.
  public func proof(ofWallet walletID: UInt64) throws -> WalletProof {
    WalletProof(siblings: try tree.proof(ofWallet: walletID).siblings, anchor: try anchor())
  }

  /// The proof the vault needs to add a wallet.
  public func currentLeafProof() throws -> CurrentLeafProof {
    let proof = try tree.currentLeafProof()
    return CurrentLeafProof(leaf: proof.leaf, siblings: proof.siblings, anchor: try anchor())
  }

  /// The proof for the add that gets wallet id `walletID` while the adds of the ids before it
  /// (from `tree.nextWalletID`) are still under way: leaf `walletID` of this tree, which must
  /// have more than `walletID / 2` leaves (the leaf must exist in it). Nil when it does not yet.
  public func leafProof(forNewWallet walletID: UInt64) throws -> CurrentLeafProof? {
    let leafCount = tree.leafCount
    guard walletID >= leafCount else {
      throw MerkleError(.walletIDMismatch, "wallet id \(walletID) is taken: the tree has \(leafCount) leaves")
    }
    guard walletID < 2 * leafCount else { return nil }
    let proof = try tree.proof(atNode: walletID)
    return CurrentLeafProof(leaf: proof.leaf, siblings: proof.siblings, anchor: try anchor(), node: walletID)
  }

  /// Takes a result in; applies it and every waiting result that now follows in order.
  /// Returns how many changes were applied.
  @discardableResult
  public mutating func receive(_ result: RequestResult) throws -> Int {
    guard result.change.sequence > sequence, early[result.change.sequence] == nil else {
      throw MerkleError(.walletIDMismatch, "change \(result.change.sequence) was mirrored already")
    }
    early[result.change.sequence] = result
    var applied = 0
    while let next = early.removeValue(forKey: sequence + 1) {
      try apply(next)
      applied += 1
    }
    return applied
  }

  private mutating func apply(_ result: RequestResult) throws {
    let change = result.change
    switch change.kind {
    case .add:
      guard change.walletID == tree.nextWalletID else {
        throw MerkleError(
          .walletIDMismatch,
          "change \(change.sequence) adds wallet \(change.walletID), the tree's next is \(tree.nextWalletID)")
      }
      try tree.add(walletHash: change.leaf)
    case .update, .remove:
      try tree.update(walletID: change.walletID, walletHash: change.leaf)
    }
    guard try tree.root() == change.root.root, tree.leafCount == change.root.leafCount else {
      throw MerkleError(.rootMismatch, "after change \(change.sequence) the mirror's root differs from the vault's")
    }
    if change.kind == .remove || !keepsWallets {
      wallets[change.walletID] = nil
    } else {
      wallets[change.walletID] = (result.walletData, result.sealedSeed)
    }
    sequence = change.sequence
  }
}
