import Custody
import Dispatch
import Foundation
import Logging

/// The group commit: changes are applied to the running root in arrival order as requests
/// finish their checks and signatures (in parallel), and batched into one token write
/// (`RootStateStore.commit`) while the previous write is in flight. A request's result is
/// released only when the write recording its change has completed.
///
/// A batch waits a little for requests that are still being checked and signed: at most
/// `linger` after its first change, and not at all when no other request is under way. Fewer,
/// larger token writes leave more of the machine to the requests, for that much latency.
///
/// Adds are applied strictly in wallet-id order (the id is the leaf count the add is applied
/// at). An add prepared for a later id than the running tree's next one (a server with several
/// adds in flight) waits, without a token call, until the adds before it are applied, at most
/// `addWait`; it is then refused with `staleProof` (an earlier id never came: the server sends
/// it again with a fresh proof). So concurrent creations join one token write like signatures.
///
/// When a write fails and the token still holds the previous root, every change of that batch
/// and every change applied after it (they were built on it) fails with `commitFailed`, and
/// the running root falls back to the durable one. When the write failed after the token took
/// the new root (the flush to disk reported an error), the token's root is the truth and the
/// batch is released: holding it back would leave the server without wallet data the vault's
/// root already records.
final class GroupCommit: @unchecked Sendable {
  private struct Waiter {
    let change: AppliedWalletChange
    let continuation: CheckedContinuation<AppliedWalletChange, any Error>
    let applied: ContinuousClock.Instant
  }

  /// A request under way (being checked and signed): counted until its change is applied or
  /// the ticket is closed, so a batch knows whether more changes are coming.
  final class Ticket: @unchecked Sendable {
    // Guarded by the owner's lock.
    fileprivate var open = true
    fileprivate let owner: GroupCommit

    fileprivate init(owner: GroupCommit) {
      self.owner = owner
    }

    /// The request ended without a change (refused or failed); nothing once it was applied.
    func close() { owner.lock.withLock { owner.closeLocked(self) } }
  }

  /// Most changes in one token write.
  static let maxBatch = 1024
  /// How far beyond the running tree's next wallet id an add may be prepared.
  static let maxAddsAhead = 1024

  /// An add waiting for the adds of the ids before it.
  private struct ParkedAdd {
    let serial: UInt64
    let apply: (inout RunningRoot) throws(RequestError) -> AppliedWalletChange
    let continuation: CheckedContinuation<AppliedWalletChange, any Error>
  }

  private let store: RootStateStore
  private let logger: Logger
  private let linger: Duration
  private let addWait: Duration
  private let queue = DispatchQueue(label: "custos.vault.commit")
  // Guarded by `lock`, whose condition tells a lingering batch that nothing is under way.
  fileprivate let lock = NSCondition()
  private var root: RunningRoot
  private var waiting: [Waiter] = []
  private var committing = false
  private var underWay = 0
  private var statistics = CommitStatistics()
  /// Adds waiting for earlier ids, by the id they get.
  private var parked: [UInt64: ParkedAdd] = [:]
  private var parkedSerial: UInt64 = 0

  /// Commits onto `store`, keeping the last `window` changes for proof rebasing; a batch waits
  /// at most `linger` for requests still under way; an add waits at most `addWait` for the adds
  /// of the ids before it.
  init(store: RootStateStore, window: Int, linger: Duration, addWait: Duration = .seconds(2), logger: Logger) {
    self.store = store
    self.logger = logger
    self.linger = linger
    self.addWait = addWait
    root = RunningRoot(durable: store.state, window: window)
  }

  var state: VaultRootState { lock.withLock { root.snapshot } }

  var commitStatistics: CommitStatistics { lock.withLock { statistics } }

  func resetStatistics() { lock.withLock { statistics = CommitStatistics() } }

  /// Counts a request as under way until its change is applied or the ticket is closed.
  func begin() -> Ticket {
    lock.withLock { underWay += 1 }
    return Ticket(owner: self)
  }

  fileprivate func closeLocked(_ ticket: Ticket) {
    guard ticket.open else { return }
    ticket.open = false
    underWay -= 1
    if underWay == 0 { lock.signal() }
  }

  /// Checks a wallet's proof against its anchor without changing anything.
  func verify(walletID: UInt64, leaf: Hash256, proof: WalletProof) throws(RequestError) {
    let result = lock.withLock {
      Result { () throws(RequestError) in _ = try root.verify(walletID: walletID, leaf: leaf, proof: proof) }
    }
    try result.get()
  }

  /// Checks an add's proof against its anchor and that its id is not taken.
  func verifyAdd(_ proof: CurrentLeafProof) throws(RequestError) {
    let result = lock.withLock { Result { () throws(RequestError) in try root.verifyAdd(proof) } }
    try result.get()
  }

  /// Applies a wallet's new leaf to the running root and returns once it is durable.
  func update(
    walletID: UInt64, oldLeaf: Hash256, newLeaf: Hash256, proof: WalletProof, ticket: Ticket
  ) async throws -> AppliedWalletChange {
    try await submit(ticket) { root throws(RequestError) in
      try root.update(walletID: walletID, oldLeaf: oldLeaf, newLeaf: newLeaf, proof: proof)
    }
  }

  /// Adds a wallet's leaf to the running root once the adds of the ids before `walletID` are
  /// applied, and returns once it is durable.
  func add(
    walletID: UInt64, newLeaf: Hash256, proof: CurrentLeafProof, ticket: Ticket
  ) async throws -> AppliedWalletChange {
    try await submit(ticket, addID: walletID) { root throws(RequestError) in
      try root.add(walletID: walletID, newLeaf: newLeaf, proof: proof)
    }
  }

  /// Adds waiting for earlier ids now.
  var parkedAdds: Int { lock.withLock { parked.count } }

  private func submit(
    _ ticket: Ticket, addID: UInt64? = nil,
    _ apply: @escaping (inout RunningRoot) throws(RequestError) -> AppliedWalletChange
  ) async throws -> AppliedWalletChange {
    try await withCheckedThrowingContinuation { continuation in
      let refusals: [(CheckedContinuation<AppliedWalletChange, any Error>, RequestError)] = lock.withLock {
        closeLocked(ticket)
        if let addID, addID > root.running.leafCount {
          return park(addID, apply, continuation).map { [(continuation, $0)] } ?? []
        }
        do throws(RequestError) {
          try applyLocked(apply, continuation)
        } catch {
          return [(continuation, error)]
        }
        return applyParkedLocked()
      }
      for (waiter, refusal) in refusals { waiter.resume(throwing: refusal) }
    }
  }

  /// Applies one change and queues it for the next token write. Under the lock.
  private func applyLocked(
    _ apply: (inout RunningRoot) throws(RequestError) -> AppliedWalletChange,
    _ continuation: CheckedContinuation<AppliedWalletChange, any Error>
  ) throws(RequestError) {
    let change = try apply(&root)
    waiting.append(Waiter(change: change, continuation: continuation, applied: .now))
    if !committing {
      committing = true
      queue.async { self.commitLoop() }
    }
  }

  /// Applies the parked adds whose turn has come; the refusals among them. Under the lock.
  private func applyParkedLocked() -> [(CheckedContinuation<AppliedWalletChange, any Error>, RequestError)] {
    var refusals = [(CheckedContinuation<AppliedWalletChange, any Error>, RequestError)]()
    while let next = parked.removeValue(forKey: root.running.leafCount) {
      do throws(RequestError) {
        try applyLocked(next.apply, next.continuation)
      } catch {
        refusals.append((next.continuation, error))
      }
    }
    return refusals
  }

  /// Parks an add of a later id than the running tree's next one, to be applied in turn or
  /// refused after `addWait`; the refusal when it cannot wait. Under the lock.
  private func park(
    _ id: UInt64, _ apply: @escaping (inout RunningRoot) throws(RequestError) -> AppliedWalletChange,
    _ continuation: CheckedContinuation<AppliedWalletChange, any Error>
  ) -> RequestError? {
    let next = root.running.leafCount
    guard id - next <= GroupCommit.maxAddsAhead else {
      return RequestError(
        .staleProof,
        "the add was prepared for wallet id \(id), more than \(GroupCommit.maxAddsAhead) ahead of the next id, \(next)")
    }
    guard parked[id] == nil else {
      return RequestError(.staleProof, "another add of wallet id \(id) is already waiting for its turn")
    }
    parkedSerial += 1
    let serial = parkedSerial
    parked[id] = ParkedAdd(serial: serial, apply: apply, continuation: continuation)
    statistics.parkedAdds += 1
    DispatchQueue.global().asyncAfter(deadline: .now() + seconds(addWait)) { [weak self] in
      self?.expire(id, serial: serial)
    }
    return nil
  }

  /// Refuses a parked add whose earlier ids did not come in time (if it still waits).
  private func expire(_ id: UInt64, serial: UInt64) {
    let expired: (ParkedAdd, UInt64)? = lock.withLock {
      guard let add = parked[id], add.serial == serial else { return nil }
      parked[id] = nil
      statistics.expiredAdds += 1
      return (add, root.running.leafCount)
    }
    guard let (add, next) = expired else { return }
    add.continuation.resume(
      throwing: RequestError(
        .staleProof,
        "the add of wallet id \(id) waited \(addWait) for the ids before it, but the next id is still \(next): send it again with a fresh proof"
      ))
  }

  /// Runs on `queue`: one token write per batch of waiting changes, until none wait.
  private func commitLoop() {
    while true {
      let next: (batch: [Waiter], target: RootState)? = lock.withLock {
        guard let first = waiting.first else {
          committing = false
          return nil
        }
        // Requests are still under way: give them a moment to join this write (woken early
        // when the last of them is applied or refused).
        let deadline = Date(timeIntervalSinceNow: max(0, seconds(linger - (ContinuousClock.now - first.applied))))
        while underWay > 0 && waiting.count < GroupCommit.maxBatch && lock.wait(until: deadline) {}
        let batch = Array(waiting.prefix(GroupCommit.maxBatch))
        waiting.removeFirst(batch.count)
        return (batch, root.commitTarget(through: batch[batch.count - 1].change.sequence))
      }
      guard let (batch, target) = next else { return }
      let started = ContinuousClock.now
      var failure: (any Error)? = nil
      do {
        try store.commit(target)
      } catch {
        if store.state == target {
          logger.error(
            "root state written but its flush failed; the token holds the new root, so the batch is released",
            metadata: ["vault.epoch": "\(target.epoch)", "vault.error": "\(error)"])
        } else {
          failure = error
        }
      }
      let elapsed = ContinuousClock.now - started
      if let failure {
        fail(batch, target: target, error: failure)
      } else {
        let last = batch[batch.count - 1].change.sequence
        lock.withLock {
          root.committed(through: last, as: target)
          statistics.record(batchSize: batch.count, duration: elapsed)
        }
        for waiter in batch {
          var change = waiter.change
          change.root.epoch = target.epoch
          waiter.continuation.resume(returning: change)
        }
      }
    }
  }

  private func fail(_ batch: [Waiter], target: RootState, error: any Error) {
    let (failed, parkedAdds): ([Waiter], [ParkedAdd]) = lock.withLock {
      let failed = batch + waiting
      waiting.removeAll()
      // Parked adds were prepared on ids the failed changes took: none of them can follow now.
      let parkedAdds = Array(parked.values)
      parked.removeAll()
      let token = store.state
      if token == root.durable {
        root.rollBack()
      } else {
        logger.critical(
          "the token's root is neither the durable root nor the one written; starting again from the token's",
          metadata: ["vault.epoch": "\(token.epoch)"])
        root = RunningRoot(durable: token, sequence: root.durableSequence, window: root.window)
      }
      statistics.failedCommits += 1
      return (failed, parkedAdds)
    }
    logger.error(
      "root state commit failed; the batch and every change after it are refused",
      metadata: ["vault.epoch": "\(target.epoch)", "vault.refused": "\(failed.count)", "vault.error": "\(error)"])
    let refusal = RequestError(
      .commitFailed,
      "the token write of epoch \(target.epoch) failed (\(error)); the change was not kept: retry the request")
    for waiter in failed { waiter.continuation.resume(throwing: refusal) }
    for add in parkedAdds { add.continuation.resume(throwing: refusal) }
  }
}

/// Batch sizes and commit times of a group commit, for the benchmark and the logs.
public struct CommitStatistics: Sendable, Hashable {
  /// Token writes that committed a batch.
  public var commits = 0
  /// Token writes that failed.
  public var failedCommits = 0
  /// Changes committed.
  public var changes = 0
  public var smallestBatch = Int.max
  public var largestBatch = 0
  /// Commits whose batch had 1, 2, 3-4, 5-8, 9-16, 17-32, 33-64, 65-128, 129+ changes.
  public var histogram = [Int](repeating: 0, count: 9)
  /// Time spent in token writes (and their flush).
  public var commitDuration = Duration.zero
  /// Adds that arrived before the adds of the ids before them, and waited for them.
  public var parkedAdds = 0
  /// Of those, the ones refused because the earlier ids did not come in time.
  public var expiredAdds = 0

  public init() {}

  /// The histogram's bucket labels.
  public static let bucketLabels = ["1", "2", "3-4", "5-8", "9-16", "17-32", "33-64", "65-128", "129+"]

  public var meanBatch: Double { commits == 0 ? 0 : Double(changes) / Double(commits) }

  mutating func record(batchSize: Int, duration: Duration) {
    commits += 1
    changes += batchSize
    smallestBatch = min(smallestBatch, batchSize)
    largestBatch = max(largestBatch, batchSize)
    let bucket = batchSize <= 1 ? 0 : min(8, Int.bitWidth - (batchSize - 1).leadingZeroBitCount)
    histogram[bucket] += 1
    commitDuration += duration
  }
}
