import Custody

/// The vault's tree state between token writes: the durable root, the running root (the
/// durable one with every accepted but not yet committed change applied in arrival order), and
/// a log of the last `window` changes, so that a proof made against any recent root can be
/// checked and carried forward.
///
/// Proof rebasing, the rule:
///
/// - A proof names the root it was made against (`RootAnchor`: leaf count and root hash). That
///   root must be the durable root, the running root, or the root after one of the changes in
///   the log (committed or pending). The proof is verified against it, with the wallet's node
///   computed from the anchor's leaf count (never taken from the caller).
/// - It is then carried onto the running root change by change: heap node numbers are stable
///   (`Merkle.node(ofWallet:leafCount:)`), and every later change wrote exactly one node that
///   is a sibling on the proof's path (the child, on the change's side, of the lowest common
///   ancestor of the two leaves), whose new value the log holds. That sibling is replaced.
/// - A proof is stale, and refused (`staleProof`: the caller fetches a new one and retries),
///   when its anchor is not in the window, when its wallet's leaf itself changed since the
///   anchor (another change of the same wallet won the race: the wallet data the request was
///   checked against is no longer current), or when the leaf moved (an add split it).
/// - An add names the leaf it splits (`CurrentLeafProof.node`), which is also the new wallet's
///   id: a leaf of the anchor's tree (m to 2m-1 for an anchor of m leaves), by default its
///   current leaf m. It is applied only when the running tree has exactly `node` leaves, so two
///   adds of one id cannot both land and ids stay in insertion order without gaps; an add of a
///   later id waits for the ones before it (`GroupCommit`). Its proof is rebased like any
///   other: the adds in between split other leaves of the same level, whose new values are
///   siblings on its path; when the leaf's own value changed since the anchor (its wallet was
///   updated) the new value is taken from the log, since an add only moves that value down
///   to the left child.
///
/// After a failed commit the running root falls back to the durable one and every change after
/// it leaves the log (`rollBack`): no proof can be carried over a change that never became
/// durable.
struct RunningRoot {
  /// One applied change: the node written at the leaf level and the values written from it up
  /// to the root (`values[0]` at `node`, the last one the root).
  struct Logged {
    var sequence: UInt64
    var kind: AppliedWalletChange.Kind
    var walletID: UInt64
    var node: UInt64
    var values: [Hash256]
    var leafCount: UInt64
    var leaf: Hash256
    var root: Hash256 { values[values.count - 1] }
  }

  private(set) var durable: RootState
  private(set) var durableSequence: UInt64
  private(set) var running: RootState
  private(set) var runningSequence: UInt64
  /// Changes after `baseSequence`, oldest first: `log[i]` has sequence `baseSequence + 1 + i`.
  private var log: [Logged] = []
  private var baseSequence: UInt64
  private var baseState: RootState
  /// Root hash -> the latest sequence after which the tree had that root.
  private var anchors: [Hash256: UInt64] = [:]
  let window: Int

  /// A running root starting at the durable `state`, after change `sequence`, keeping the
  /// last `window` changes for rebasing.
  init(durable state: RootState, sequence: UInt64 = 0, window: Int = 4096) {
    durable = state
    durableSequence = sequence
    running = state
    runningSequence = sequence
    baseSequence = sequence
    baseState = state
    self.window = max(window, 1)
    anchors[state.root] = sequence
  }

  var snapshot: VaultRootState {
    VaultRootState(
      durable: durable, durableSequence: durableSequence, running: running, runningSequence: runningSequence)
  }

  /// The sequence after which the tree was `anchor`, if the window still holds it.
  func sequence(of anchor: RootAnchor) -> UInt64? {
    guard let sequence = anchors[anchor.root], leafCount(after: sequence) == anchor.leafCount else { return nil }
    return sequence
  }

  private func leafCount(after sequence: UInt64) -> UInt64 {
    sequence == baseSequence ? baseState.leafCount : log[Int(sequence - baseSequence - 1)].leafCount
  }

  private func anchorSequence(_ anchor: RootAnchor) throws(RequestError) -> UInt64 {
    guard let sequence = sequence(of: anchor) else {
      throw RequestError(
        .staleProof,
        "the proof was made against a root the vault no longer holds (\(anchor)); its window keeps the last \(window) changes: fetch a new proof"
      )
    }
    return sequence
  }

  // MARK: Checking proofs

  /// Checks that `leaf` is wallet `walletID`'s leaf in the tree `proof.anchor` names; returns
  /// the wallet's node. Does not change anything.
  func verify(walletID: UInt64, leaf: Hash256, proof: WalletProof) throws(RequestError) -> UInt64 {
    _ = try anchorSequence(proof.anchor)
    guard walletID >= 1, walletID < proof.anchor.leafCount else {
      throw RequestError(
        .proofInvalid, "wallet \(walletID) is not in a tree of \(proof.anchor.leafCount) leaves")
    }
    let node = Merkle.node(ofWallet: walletID, leafCount: proof.anchor.leafCount)
    try RunningRoot.check(
      leaf: leaf, node: node, siblings: proof.siblings, root: proof.anchor.root, what: "wallet \(walletID)'s leaf")
    return node
  }

  /// Checks an add's proof against its anchor, and that its id (`proof.node`) is not taken.
  func verifyAdd(_ proof: CurrentLeafProof) throws(RequestError) {
    let anchorLeaves = proof.anchor.leafCount
    guard proof.node >= anchorLeaves, proof.node / 2 < anchorLeaves else {
      throw RequestError(
        .proofInvalid,
        "an add splits a leaf of its anchor's tree (nodes \(anchorLeaves) to \(2 * anchorLeaves - 1)), not node \(proof.node)"
      )
    }
    try checkNotTaken(proof.node)
    _ = try anchorSequence(proof.anchor)
    try RunningRoot.check(
      leaf: proof.leaf, node: proof.node, siblings: proof.siblings, root: proof.anchor.root,
      what: "the leaf node \(proof.node)")
  }

  /// `staleProof` when wallet id `id` has been given to an earlier add.
  func checkNotTaken(_ id: UInt64) throws(RequestError) {
    guard id >= running.leafCount else {
      throw RequestError(
        .staleProof,
        "the add was prepared for wallet id \(id); the vault's tree has \(running.leafCount) leaves now, so the id is taken: fetch a new proof"
      )
    }
  }

  static func check(leaf: Hash256, node: UInt64, siblings: [Hash256], root: Hash256, what: String) throws(RequestError)
  {
    let depth = Merkle.depth(of: node)
    guard siblings.count == depth else {
      throw RequestError(
        .proofInvalid,
        "\(what) is at \(Merkle.path(to: node)), depth \(depth), but \(siblings.count) siblings were given")
    }
    guard Merkle.root(from: leaf, at: node, siblings: siblings) == root else {
      throw RequestError(.proofInvalid, "\(what) and its siblings do not give the root the proof names (\(root.hex))")
    }
  }

  // MARK: Applying

  /// Rebases `proof` onto the running root and replaces wallet `walletID`'s leaf `oldLeaf` by
  /// `newLeaf` (zero for a removal). Nothing changes when it throws.
  mutating func update(
    walletID: UInt64, oldLeaf: Hash256, newLeaf: Hash256, proof: WalletProof
  ) throws(RequestError) -> AppliedWalletChange {
    let node = try verify(walletID: walletID, leaf: oldLeaf, proof: proof)
    var siblings = proof.siblings
    var leaf = oldLeaf
    try rebase(
      from: try anchorSequence(proof.anchor), node: node, siblings: &siblings, leaf: &leaf, leafMayChange: false)
    guard Merkle.node(ofWallet: walletID, leafCount: running.leafCount) == node,
      Merkle.root(from: leaf, at: node, siblings: siblings) == running.root
    else {
      throw RequestError(.staleProof, "wallet \(walletID)'s proof does not carry onto the running root")
    }
    return append(
      kind: newLeaf.isZero ? .remove : .update, walletID: walletID, node: node, value: newLeaf, leaf: newLeaf,
      siblings: siblings, leafCount: running.leafCount)
  }

  /// Rebases `proof` onto the running root and adds wallet `walletID` (which must be the
  /// running leaf count and the proof's node) with leaf `newLeaf`. Nothing changes when it throws.
  mutating func add(
    walletID: UInt64, newLeaf: Hash256, proof: CurrentLeafProof
  ) throws(RequestError) -> AppliedWalletChange {
    try verifyAdd(proof)
    guard walletID == running.leafCount, walletID == proof.node else {
      throw RequestError(
        .staleProof,
        "the new wallet carries id \(walletID) for leaf \(proof.node) but the next id is \(running.leafCount)")
    }
    guard running.leafCount < Merkle.maxLeafCount else {
      throw RequestError(.unsupported, "the tree holds the most leaves it may")
    }
    let node = Merkle.currentLeaf(leafCount: running.leafCount)
    var siblings = proof.siblings
    var leaf = proof.leaf
    try rebase(
      from: try anchorSequence(proof.anchor), node: node, siblings: &siblings, leaf: &leaf, leafMayChange: true)
    guard Merkle.root(from: leaf, at: node, siblings: siblings) == running.root else {
      throw RequestError(.staleProof, "the current leaf's proof does not carry onto the running root")
    }
    return append(
      kind: .add, walletID: walletID, node: node, value: Hash256.parent(leaf, newLeaf), leaf: newLeaf,
      siblings: siblings, leafCount: running.leafCount + 1)
  }

  /// Carries a proof of `node` made after change `sequence` onto the running root.
  private func rebase(
    from sequence: UInt64, node: UInt64, siblings: inout [Hash256], leaf: inout Hash256, leafMayChange: Bool
  ) throws(RequestError) {
    let depth = Merkle.depth(of: node)
    var index = Int(sequence - baseSequence)
    while index < log.count {
      let change = log[index]
      index += 1
      if change.node == node {
        guard change.kind != .add, leafMayChange else {
          throw RequestError(
            .staleProof,
            change.kind == .add
              ? "the leaf at node \(node) was split by an add since the proof's root: fetch a new proof"
              : "wallet \(change.walletID)'s leaf changed since the proof's root (change \(change.sequence)): fetch the wallet's new data and retry"
          )
        }
        leaf = change.values[0]
        continue
      }
      let changeDepth = Merkle.depth(of: change.node)
      let common = min(depth, changeDepth)
      let mine = node >> UInt64(depth - common)
      let theirs = change.node >> UInt64(changeDepth - common)
      guard mine != theirs else {
        // One leaf above the other: only an add that split this path could do that.
        throw RequestError(.staleProof, "node \(node) moved since the proof's root: fetch a new proof")
      }
      // The two paths part below the lowest common ancestor; the child of it on the change's
      // side is this proof's sibling at that depth, and the change wrote its new value.
      let highestDifferentBit = 63 - (mine ^ theirs).leadingZeroBitCount
      let siblingDepth = common - highestDifferentBit
      siblings[depth - siblingDepth] = change.values[changeDepth - siblingDepth]
    }
  }

  private mutating func append(
    kind: AppliedWalletChange.Kind, walletID: UInt64, node: UInt64, value: Hash256, leaf: Hash256,
    siblings: [Hash256], leafCount: UInt64
  ) -> AppliedWalletChange {
    var values = [Hash256]()
    values.reserveCapacity(siblings.count + 1)
    var running = value
    values.append(running)
    var index = node
    for sibling in siblings {
      running = index & 1 == 0 ? Hash256.parent(running, sibling) : Hash256.parent(sibling, running)
      index >>= 1
      values.append(running)
    }
    runningSequence += 1
    let logged = Logged(
      sequence: runningSequence, kind: kind, walletID: walletID, node: node, values: values, leafCount: leafCount,
      leaf: leaf)
    log.append(logged)
    self.running = RootState(epoch: durable.epoch, leafCount: leafCount, root: logged.root)
    anchors[logged.root] = runningSequence
    evict()
    return AppliedWalletChange(
      sequence: runningSequence, kind: kind, walletID: walletID, node: node, leaf: leaf, root: self.running)
  }

  /// Drops the oldest committed changes beyond the window (pending ones always stay).
  private mutating func evict() {
    // In chunks (a quarter of the window at a time), so the array moves rarely.
    guard log.count > window + window / 4 else { return }
    let drop = min(log.count - window, Int(durableSequence - baseSequence))
    guard drop > 0 else { return }
    // The old base and every dropped change but the last, which becomes the new base.
    if anchors[baseState.root] == baseSequence { anchors[baseState.root] = nil }
    for change in log[0..<drop - 1] where anchors[change.root] == change.sequence {
      anchors[change.root] = nil
    }
    let last = log[drop - 1]
    baseSequence = last.sequence
    baseState = RootState(epoch: 0, leafCount: last.leafCount, root: last.root)
    log.removeFirst(drop)
  }

  // MARK: Commits

  /// The state to write for committing every change up to `sequence` (the next epoch).
  func commitTarget(through sequence: UInt64) -> RootState {
    let change = log[Int(sequence - baseSequence - 1)]
    return RootState(epoch: durable.epoch + 1, leafCount: change.leafCount, root: change.root)
  }

  /// Every change up to `sequence` is durable as `state`.
  mutating func committed(through sequence: UInt64, as state: RootState) {
    durable = state
    durableSequence = sequence
    running.epoch = state.epoch
  }

  /// The commit of the changes after `durableSequence` failed and the token holds `durable`
  /// still: the running root falls back to it and the changes after it leave the log.
  mutating func rollBack() {
    let keep = Int(durableSequence - baseSequence)
    for change in log[keep...] where anchors[change.root] == change.sequence {
      anchors[change.root] = nil
    }
    log.removeLast(log.count - keep)
    running = durable
    runningSequence = durableSequence
    // A root that recurs after the rollback point must be findable at its earlier place.
    if anchors[durable.root] == nil { anchors[durable.root] = durableSequence }
  }
}
