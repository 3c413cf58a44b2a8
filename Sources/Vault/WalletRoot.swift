import Custody
import Foundation
import Logging

/// The vault's Merkle root: it verifies the server's changes against the committed root and
/// commits each batch with one token write.
///
/// Semantics of `apply(_:)` (tested in `WalletRootTests`):
/// - changes are verified in order, each against the root the previous ones produced;
/// - the first change that fails verification stops the batch: it and every change after it
///   are not applied (later changes were built on a tree that includes it, so none could be
///   right);
/// - the changes before it that verified are committed together, in one token write, as the
///   next epoch; when none verified nothing is written and the epoch stays;
/// - when the token write itself fails nothing of the batch is committed and the error is
///   thrown (the root state is re-read from the token).
public final class WalletRoot: @unchecked Sendable {
  private let store: RootStateStore
  private let logger: Logger
  private let lock = NSLock()

  /// The root held in `store`.
  public init(store: RootStateStore, logger: Logger) {
    self.store = store
    self.logger = logger
  }

  /// The committed state.
  public var state: RootState { store.state }

  /// The id the next added wallet must carry (ids follow insertion order).
  public var nextWalletID: UInt64 { store.state.leafCount }

  /// Verifies `changes` in order and commits the verified prefix in one token write.
  public func apply(_ changes: [MerkleChange]) throws -> BatchOutcome {
    try lock.withLock {
      let before = store.state
      var verifier = MerkleVerifier(state: before)
      var applied = [AppliedChange]()
      applied.reserveCapacity(changes.count)
      var rejection: BatchOutcome.Rejection? = nil
      for (index, change) in changes.enumerated() {
        do throws(MerkleError) {
          applied.append(try verifier.apply(change))
        } catch {
          rejection = BatchOutcome.Rejection(
            index: index, kind: change.kind, error: error, notApplied: changes.count - index)
          logger.warning(
            "change refused; it and the rest of the batch are not applied",
            metadata: [
              "vault.change": "\(index)", "vault.kind": "\(change.kind)", "vault.refused": "\(changes.count - index)",
              "vault.error": "\(error)",
            ])
          break
        }
      }
      guard !applied.isEmpty else {
        return BatchOutcome(applied: [], committed: before, rejection: rejection)
      }
      var next = verifier.state
      next.epoch = before.epoch + 1
      try store.commit(next)
      for index in applied.indices { applied[index].state.epoch = next.epoch }
      logger.info(
        "batch committed",
        metadata: [
          "vault.epoch": "\(next.epoch)", "vault.applied": "\(applied.count)", "vault.leaves": "\(next.leafCount)",
          "vault.root": "\(next.root.hex)",
        ])
      return BatchOutcome(applied: applied, committed: next, rejection: rejection)
    }
  }
}

/// What one `apply` did.
public struct BatchOutcome: Sendable, Hashable {
  /// The changes committed, in order (their `state` carries the committed epoch).
  public var applied: [AppliedChange]
  /// The state in the token after the call (unchanged when nothing was applied).
  public var committed: RootState
  /// The change that stopped the batch, if one did.
  public var rejection: Rejection?

  /// The first refused change of a batch.
  public struct Rejection: Sendable, Hashable {
    /// Its position in the batch.
    public var index: Int
    /// `add`, `update` or `remove`.
    public var kind: String
    public var error: MerkleError
    /// It and the changes after it, none of which was applied.
    public var notApplied: Int
  }
}
