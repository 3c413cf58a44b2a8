import Custody
import Foundation
import Logging

/// Whether the server's tree and the device's root agree.
public enum Agreement: Sendable, Hashable, CustomStringConvertible {
  /// Not settled since the server started (the device was not reached yet).
  case unknown
  /// The server's root is the device's, or differs only by calls in flight.
  case agreed
  /// Settling pending intents with the device: no new vault calls until done.
  case reconciling
  /// The roots differ and nothing pending explains it. Wallet changes are refused.
  case diverged(String)

  public var description: String {
    switch self {
    case .unknown: "unknown"
    case .agreed: "agreed"
    case .reconciling: "reconciling"
    case .diverged(let reason): "diverged: \(reason)"
    }
  }
}

/// The sequencer of the server's tree: it hands out proofs against the tree the database
/// holds, counts the vault calls in flight, applies their results in the vault's order, and
/// reconciles the tree with the device when an outcome is unknown or on start.
///
/// The order: every result carries the vault's sequence number; result n is applied only after
/// result n-1. After a (re)connection the sequence numbers the device will use are not known
/// (they restart with each device process), so the first result whose change fits the tree
/// (its root after the change is the one the vault reported) sets the count. A result waits
/// ("held") until its turn; a hole that no call in flight can fill (a call whose outcome is
/// unknown) starts a reconciliation.
///
/// Reconciliation, with nothing in flight: read the device's root; apply the held results that
/// fit; if the server's root is then the device's, every intent still pending was not applied
/// by the device and is discarded (its request is approved again and will be sent anew);
/// otherwise the results of the pending intents are asked from the device (when it keeps
/// them) and applied in its order; if the roots still differ, the ledger is `diverged` and
/// wallet changes stop until an operator looks. It never guesses a change it has not seen.
public actor Ledger {
  private let repository: any CustodyRepository
  private let device: DeviceConnection
  private let logger: Logger
  private let now: @Sendable () -> Date

  public private(set) var agreement: Agreement = .unknown
  private var inFlight = 0
  private var nextSequence: UInt64?
  private var held: [Held] = []
  private var draining = false
  /// A drain is scheduled (a result was delivered) and has not started yet.
  private var drainScheduled = false
  private var uncertain = false
  private var idleWaiters: [CheckedContinuation<Void, Never>] = []
  private var busyWallets: Set<UInt64> = []
  private var addInFlight = false
  /// The device's root as last read by a reconciliation.
  public private(set) var lastDeviceRoot: RootState?

  struct Held {
    let result: RequestResult
    let intent: Intent
    /// The reservation the call held (released when the result is applied or dropped).
    let walletID: UInt64?
    let isAdd: Bool
    /// The caller waiting for it; nil for a result recovered from the device.
    let continuation: CheckedContinuation<Void, any Error>?
  }

  public init(
    repository: any CustodyRepository, device: DeviceConnection, logger: Logger,
    now: @escaping @Sendable () -> Date = { Date() }
  ) {
    self.repository = repository
    self.device = device
    self.logger = logger
    self.now = now
  }

  // MARK: Calls

  /// Whether a reservation refused now may be granted soon: a reconciliation is due or under way.
  var settling: Bool {
    switch agreement {
    case .reconciling, .unknown: true
    case .agreed: uncertain
    case .diverged: false
    }
  }

  /// Reserves the right to send a call for `walletID` (one call per wallet at a time; one add
  /// at a time), when the ledger agrees with the device. False: try later.
  func reserve(walletID: UInt64?, isAdd: Bool) -> Bool {
    guard case .agreed = agreement, !uncertain else { return false }
    if isAdd {
      guard !addInFlight else { return false }
      addInFlight = true
    } else if let walletID {
      guard busyWallets.insert(walletID).inserted else { return false }
    }
    inFlight += 1
    return true
  }

  /// Gives back a reservation. `outcomeKnown` false: the call may have reached the device and
  /// its result is lost (a broken connection, a timeout), so the tree must be reconciled.
  func release(walletID: UInt64?, isAdd: Bool, outcomeKnown: Bool) {
    if isAdd { addInFlight = false } else if let walletID { busyWallets.remove(walletID) }
    inFlight -= 1
    if !outcomeKnown {
      uncertain = true
      logger.warning("a vault call's outcome is unknown: the tree will be reconciled with the device")
    }
    wakeIfIdle()
  }

  /// Takes the result of a reserved call in (the call no longer counts as in flight) and
  /// returns once it is applied to the database, in the vault's order. Throws when a
  /// reconciliation settled its intent otherwise.
  func deliver(_ result: RequestResult, intent: Intent, walletID: UInt64?, isAdd: Bool) async throws {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
      held.append(Held(result: result, intent: intent, walletID: walletID, isAdd: isAdd, continuation: continuation))
      held.sort { $0.result.change.sequence < $1.result.change.sequence }
      inFlight -= 1
      drainScheduled = true
      Task { await self.drain() }
    }
  }

  private func releaseReservation(of entry: Held) {
    if entry.isAdd { addInFlight = false } else if let walletID = entry.walletID { busyWallets.remove(walletID) }
  }

  /// Applies the held results that are next, in order.
  private func drain() async {
    drainScheduled = false
    guard !draining else { return }
    draining = true
    var progress = true
    while progress {
      progress = false
      for index in held.indices {
        let entry = held[index]
        let sequence = entry.result.change.sequence
        if let expected = nextSequence, sequence != expected { continue }
        do {
          try await repository.complete(intent: entry.intent, result: entry.result, at: now())
        } catch let error as LedgerError where error.code == .doesNotFit {
          if nextSequence != nil {
            // The vault says it is next and it does not fit: the trees disagree.
            logger.error(
              "a vault result does not fit the server's tree",
              metadata: ["vault.sequence": "\(sequence)", "reason": "\(error.reason)"])
            uncertain = true
          }
          continue
        } catch {
          logger.error("cannot store a vault result", metadata: ["error": "\(error)"])
          uncertain = true
          continue
        }
        nextSequence = sequence &+ 1
        // Results delivered during the await above were inserted in order, so the entry may
        // have moved: remove it by its intent, not by the index it had.
        held.removeAll { $0.intent.id == entry.intent.id }
        releaseReservation(of: entry)
        entry.continuation?.resume()
        progress = true
        break
      }
    }
    // Not draining any more before waking those waiting for idleness (a reconciliation): woken
    // while still marked draining, they would wait for a wake-up that never comes.
    draining = false
    wakeIfIdle()
  }

  /// Forgets the vault's sequence numbers (a new session: the device may have restarted).
  func forgetSequence() {
    nextSequence = nil
  }

  /// Asks for a reconciliation before the next call (the device came back or was unsealed).
  func requireReconciliation() {
    if case .agreed = agreement { uncertain = true }
  }

  /// Whether a reconciliation is due (an unknown outcome, a hole nothing in flight can fill).
  var needsReconciliation: Bool {
    switch agreement {
    case .unknown, .reconciling: return true
    case .diverged: return false
    case .agreed:
      // A hole: results held that no call in flight and no drain under way or scheduled can apply.
      return uncertain || (inFlight == 0 && !held.isEmpty && !draining && !drainScheduled)
    }
  }

  private func wakeIfIdle() {
    guard inFlight == 0, !draining else { return }
    let waiters = idleWaiters
    idleWaiters = []
    for waiter in waiters { waiter.resume() }
  }

  private func waitUntilIdle() async {
    while inFlight > 0 || draining {
      await withCheckedContinuation { idleWaiters.append($0) }
    }
  }

  // MARK: Reconciliation

  /// Settles the server's tree with the device's root (see the type's description). Throws
  /// when the device cannot be asked (the ledger then stays as it was and is tried again).
  public func reconcile() async throws {
    if case .diverged = agreement { return }
    agreement = .reconciling
    await waitUntilIdle()
    let deviceRoot: RootState
    do {
      deviceRoot = try await device.rootState()
    } catch {
      agreement = .unknown
      throw error
    }
    lastDeviceRoot = deviceRoot
    nextSequence = nil
    await drain()
    var tree = try await repository.treeSummary()
    var pending = try await repository.pendingIntents()
    if !matches(tree, deviceRoot), !pending.isEmpty {
      await recoverResults(pending)
      await drain()
      tree = try await repository.treeSummary()
      pending = try await repository.pendingIntents()
    }
    // Held results that never fitted belong to intents settled below.
    let stale = held
    held = []
    for entry in stale {
      releaseReservation(of: entry)
      entry.continuation?.resume(throwing: LedgerError(.doesNotFit, "the result did not follow from the tree"))
    }
    let at = now()
    guard matches(tree, deviceRoot) else {
      let reason =
        "the server's tree (\(tree.leafCount) leaves, root \(tree.root.hex)) is not the device's (\(deviceRoot)) and no pending call explains it"
      agreement = .diverged(reason)
      logger.critical("tree and device diverged", metadata: ["reason": "\(reason)"])
      try? await repository.recordRoot(
        RootHistoryEntry(
          epoch: deviceRoot.epoch, leafCount: deviceRoot.leafCount, root: deviceRoot.root, change: "diverged",
          walletID: nil, requestID: nil, vaultSequence: nil, recordedAt: at))
      try? await repository.audit(
        VaultAuditRecord(
          at: at, call: "GetRootState", requestID: nil, walletID: nil, outcome: "diverged", code: "diverged",
          detail: reason))
      return
    }
    for intent in pending {
      try await repository.settle(
        intent: intent, requestStatus: .approved, failure: nil,
        note: "the device's root does not record it: not applied, to be sent again", at: at)
      try? await repository.audit(
        VaultAuditRecord(
          at: at, call: intent.call, requestID: intent.requestID, walletID: intent.walletID, outcome: "discarded",
          code: nil, detail: "reconciliation: the device did not apply it"))
      logger.notice(
        "pending intent discarded: the device did not apply it",
        metadata: ["request.id": "\(intent.requestID)", "intent.id": "\(intent.id)"])
    }
    try await repository.recordRoot(
      RootHistoryEntry(
        epoch: deviceRoot.epoch, leafCount: deviceRoot.leafCount, root: deviceRoot.root, change: "reconciled",
        walletID: nil, requestID: nil, vaultSequence: nil, recordedAt: at))
    uncertain = false
    agreement = .agreed
    logger.info(
      "tree reconciled with the device",
      metadata: [
        "tree.leaves": "\(tree.leafCount)", "tree.root": "\(tree.root.hex)", "hsm.epoch": "\(deviceRoot.epoch)",
      ]
    )
  }

  private func matches(_ tree: TreeSummary, _ device: RootState) -> Bool {
    tree.root == device.root && tree.leafCount == device.leafCount
  }

  /// Asks the device for the results of pending intents it may have applied, and holds them to
  /// be applied in its order.
  private func recoverResults(_ pending: [Intent]) async {
    for intent in pending {
      do {
        guard let result = try await device.recoverResult(envelopeHash: intent.envelopeHash) else { continue }
        // Held without a waiter: the caller that sent it is gone (a restart) or gave up.
        held.append(Held(result: result, intent: intent, walletID: nil, isAdd: false, continuation: nil))
        held.sort { $0.result.change.sequence < $1.result.change.sequence }
      } catch {
        logger.warning(
          "cannot ask the device for a lost result",
          metadata: ["request.id": "\(intent.requestID)", "error": "\(error)"])
        return
      }
    }
  }
}
