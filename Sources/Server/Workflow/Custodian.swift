import Custody
import Foundation
import Logging
import Synchronization
import VaultWire

/// The device as the server last saw it.
public struct DeviceSnapshot: Sendable {
  /// nil while the device has not answered since the server started, or its socket is gone.
  public var status: DeviceStatus?
  public var checkedAt: Date?
  /// Why the last status call failed, if it did.
  public var error: VaultWireError?

  public var isReady: Bool { status?.state == .ready }
}

/// The approval workflow: it turns customers' wishes into canonical request envelopes, checks
/// and stores approvals, and when a request has its approvals, writes the intent, calls the
/// vault and hands the result to the `Ledger`, which applies it to the database in the
/// vault's order.
///
/// Nothing here decides what the vault decides: the server's checks of approvals (the same
/// code the vault runs) only keep junk out of the database; the vault checks everything again.
public final class Custodian: Sendable {
  public let repository: any CustodyRepository
  public let device: DeviceConnection
  public let ledger: Ledger
  let logger: Logger
  let now: @Sendable () -> Date
  private let snapshot = Mutex(DeviceSnapshot())
  /// Default time approvers have.
  public let defaultExpiry: UInt64 = 3600

  public init(
    repository: any CustodyRepository, device: DeviceConnection, logger: Logger,
    now: @escaping @Sendable () -> Date = { Date() }
  ) {
    self.repository = repository
    self.device = device
    self.logger = logger
    self.now = now
    ledger = Ledger(repository: repository, device: device, logger: logger, now: now)
    device.onNewSession { [ledger] in await ledger.forgetSequence() }
  }

  // MARK: The device's state

  /// The device as last seen.
  public var deviceSnapshot: DeviceSnapshot { snapshot.withLock { $0 } }

  /// Asks the device for its status and remembers it; returns whether it just became READY
  /// (after being sealed, unreachable or unseen).
  @discardableResult
  public func refreshDeviceStatus() async -> Bool {
    let at = now()
    do {
      let status = try await device.status()
      let wasReady = snapshot.withLock { state in
        defer { state = DeviceSnapshot(status: status, checkedAt: at, error: nil) }
        return state.isReady
      }
      return status.state == .ready && !wasReady
    } catch {
      snapshot.withLock { $0 = DeviceSnapshot(status: nil, checkedAt: at, error: error) }
      return false
    }
  }

  /// Refuses when new requests cannot go anywhere: the device sealed or unreachable, or the
  /// tree diverged from it.
  func requireDeviceForNewRequests() async throws(APIError) {
    let state = deviceSnapshot
    guard let status = state.status else {
      throw APIError(
        .deviceUnavailable,
        "the device cannot be reached" + (state.error.map { " (\($0.code): \($0.message))" } ?? ""))
    }
    guard status.state != .sealed else {
      throw APIError(.deviceSealed, "the device is SEALED: a quorum of unseal key holders must unseal it first")
    }
    guard status.state == .ready else {
      throw APIError(.deviceUnavailable, "the device is \(status.state)")
    }
    if case .diverged(let reason) = await ledger.agreement {
      throw APIError(.diverged, reason)
    }
  }

  // MARK: New requests

  /// A `create-wallet` request for `configuration`, awaiting every proposed approver.
  public func proposeWallet(
    _ configuration: WalletConfiguration, expiresIn: UInt64?, apiKeyID: String?
  ) async throws(APIError) -> StoredRequest {
    try await requireDeviceForNewRequests()
    let envelope = RequestEnvelope(
      walletID: 0, walletHash: .zero, operation: .createWallet(configuration), nonce: 1,
      expiry: expiry(expiresIn))
    return try await store(
      envelope, walletID: nil, threshold: configuration.approvers.count,
      approverIDs: configuration.approvers.map(\.id), apiKeyID: apiKeyID)
  }

  /// A request on an existing wallet: change, removal or signature, against its current data.
  public func propose(
    _ operation: RequestEnvelope.Operation, walletID: UInt64, path: [UInt32]?, expiresIn: UInt64?,
    apiKeyID: String?
  ) async throws(APIError) -> StoredRequest {
    let (_, data) = try await activeWallet(walletID)
    try await requireDeviceForNewRequests()
    var chain: ChainData? = nil
    switch operation {
    case .signEIP1559(let transaction):
      chain = .ethereum(chainID: transaction.chainID, path: path ?? ChainData.defaultEthereumPath)
    case .signPersonalMessage:
      chain = .ethereum(chainID: 1, path: path ?? ChainData.defaultEthereumPath)
    default:
      break
    }
    let envelope = RequestEnvelope(
      walletID: walletID, walletHash: Hash256.sha256(try encoded(data)), operation: operation,
      nonce: data.requestNonce + 1, expiry: expiry(expiresIn), chain: chain)
    return try await store(
      envelope, walletID: walletID, threshold: Int(data.threshold), approverIDs: data.approvers.map(\.id),
      apiKeyID: apiKeyID)
  }

  /// The wallet and its decoded data; 404 when unknown, 409 when removed.
  func activeWallet(_ walletID: UInt64) async throws(APIError) -> (StoredWallet, WalletData) {
    let stored: StoredWallet?
    do {
      stored = try await repository.wallet(walletID)
    } catch {
      throw internalError("reading wallet \(walletID)", error)
    }
    return try active(stored, walletID)
  }

  /// `stored` (wallet `walletID` as read) and its decoded data; 404 when unknown, 409 when removed.
  func active(_ stored: StoredWallet?, _ walletID: UInt64) throws(APIError) -> (StoredWallet, WalletData) {
    guard let wallet = stored else { throw APIError(.walletNotFound, "there is no wallet \(walletID)") }
    guard wallet.status == .active, let bytes = wallet.walletData else {
      throw APIError(.walletRemoved, "wallet \(walletID) was removed")
    }
    do {
      return (wallet, try WalletData.decode(bytes))
    } catch {
      throw internalError("decoding wallet \(walletID)'s stored data", error)
    }
  }

  private func encoded(_ data: WalletData) throws(APIError) -> [UInt8] {
    do { return try data.encoded() } catch { throw internalError("encoding wallet data", error) }
  }

  private func expiry(_ seconds: UInt64?) -> UInt64 {
    UInt64(now().timeIntervalSince1970) + (seconds ?? defaultExpiry)
  }

  private func store(
    _ envelope: RequestEnvelope, walletID: UInt64?, threshold: Int, approverIDs: [String], apiKeyID: String?
  ) async throws(APIError) -> StoredRequest {
    let bytes: [UInt8]
    do {
      bytes = try envelope.encoded()
    } catch {
      throw APIError(.invalidValue, error.reason, field: Self.apiField(error.field))
    }
    let at = now()
    let request = StoredRequest(
      id: Self.newRequestID(), kind: RequestKind(envelope.operation), walletID: walletID, status: .awaitingApprovals,
      envelope: bytes, envelopeHash: Hash256.sha256(bytes), baseWalletHash: envelope.walletHash,
      nonce: envelope.nonce, threshold: threshold, approverIDs: approverIDs, createdAt: at,
      expiresAt: Date(timeIntervalSince1970: Double(envelope.expiry)), apiKeyID: apiKeyID)
    do {
      try await repository.insert(request)
    } catch {
      throw internalError("storing a request", error)
    }
    logger.info(
      "request created",
      metadata: [
        "request.id": "\(request.id)", "request.kind": "\(request.kind.rawValue)",
        "wallet.id": "\(walletID.map(String.init) ?? "new")",
      ])
    return request
  }

  /// `rq_` and 32 hex digits of the system's random generator: 128 bits, unguessable.
  static func newRequestID() -> String {
    "rq_" + Hex.encode(SystemRandom.bytes(16))
  }

  /// An envelope field path as the API names it (`operation.approvers[1].rpID` -> `approvers[1].rpID`).
  static func apiField(_ field: String) -> String? {
    guard !field.isEmpty else { return nil }
    for prefix in ["operation.", "chain."] where field.hasPrefix(prefix) {
      return String(field.dropFirst(prefix.count))
    }
    return field
  }

  // MARK: Approvals

  /// The approvers a request's approvals are checked against: the proposal's for a creation,
  /// the current ones of `wallet` (the request's, read with it) otherwise.
  func approvers(of request: StoredRequest, wallet stored: StoredWallet?) throws(APIError) -> [Approver] {
    if request.kind == .createWallet {
      guard let envelope = try? RequestEnvelope.decode(request.envelope),
        case .createWallet(let configuration) = envelope.operation
      else { throw internalError("decoding a stored creation request", nil) }
      return configuration.approvers
    }
    guard let walletID = request.walletID else { throw internalError("a stored request without its wallet", nil) }
    let (wallet, data) = try active(stored, walletID)
    guard wallet.walletHash == request.baseWalletHash else {
      throw APIError(
        .requestClosed, "wallet \(walletID) changed after this request was made; it can no longer be approved")
    }
    return data.approvers
  }

  /// Checks one approval against the request's envelope and its approver's enrolled key (the
  /// vault's own check), stores it, and when it completes the threshold sends the request to
  /// the vault. Returns the request afterwards.
  public func submitApproval(_ approval: Approval, to requestID: String) async throws(APIError) -> StoredRequest {
    let (request, wallet) = try await existingRequestAndWallet(requestID)
    guard request.status == .awaitingApprovals else {
      throw APIError(.requestClosed, "request \(requestID) is \(request.status.rawValue): it takes no more approvals")
    }
    guard request.expiresAt > now() else {
      throw APIError(.requestClosed, "request \(requestID) expired")
    }
    guard request.approverIDs.contains(approval.approverID) else {
      throw APIError(
        .approvalRefused, "'\(approval.approverID)' is not an approver of this request", field: "approverId",
        vaultCode: RequestError.Code.unknownApprover.name)
    }
    let approvers = try approvers(of: request, wallet: wallet)
    do throws(RequestError) {
      _ = try ApprovalCheck.verify(envelope: request.envelope, approvals: [approval], approvers: approvers, required: 1)
    } catch {
      throw APIError(.approvalRefused, error.reason, vaultCode: error.code.name)
    }
    let encoding: [UInt8]
    do {
      encoding = try approval.encoded()
    } catch {
      throw APIError(.invalidValue, error.reason, field: error.field)
    }
    let stored: StoredRequest
    do {
      stored = try await repository.addApproval(
        StoredApproval(approverID: approval.approverID, encoded: encoding, receivedAt: now()), to: requestID,
        now: now())
    } catch let error as LedgerError {
      switch error.code {
      case .duplicate: throw APIError(.alreadyApproved, error.reason, field: "approverId")
      case .notFound: throw APIError(.requestNotFound, error.reason)
      default: throw APIError(.requestClosed, error.reason)
      }
    } catch {
      throw internalError("storing an approval", error)
    }
    logger.info(
      "approval stored",
      metadata: [
        "request.id": "\(requestID)", "approver.id": "\(approval.approverID)",
        "request.approvals": "\(stored.approvals.count)/\(stored.threshold)",
      ])
    guard stored.status == .approved else { return stored }
    await execute(stored)
    return try await existingRequest(requestID)
  }

  /// The request and the wallet it names (nil for a creation or an unknown wallet), read in one
  /// snapshot; 404 when there is no such request.
  public func existingRequestAndWallet(
    _ requestID: String
  ) async throws(APIError) -> (request: StoredRequest, wallet: StoredWallet?) {
    try await existing(requestID) { try await repository.requestAndWallet(requestID) }
  }

  /// The request, or 404.
  public func existingRequest(_ requestID: String) async throws(APIError) -> StoredRequest {
    try await existing(requestID) { try await repository.request(requestID) }
  }

  /// What `read` found of request `requestID`: 404 when nothing, an internal error when the
  /// read failed.
  private func existing<Found>(
    _ requestID: String, _ read: () async throws -> Found?
  ) async throws(APIError) -> Found {
    let found: Found?
    do {
      found = try await read()
    } catch {
      throw internalError("reading request \(requestID)", error)
    }
    guard let found else { throw APIError(.requestNotFound, "there is no request \(requestID)") }
    return found
  }

  /// Withdraws a request still awaiting approvals (or approved and waiting for the device).
  public func cancel(_ requestID: String) async throws(APIError) -> StoredRequest {
    let request = try await existingRequest(requestID)
    let moved: Bool
    do {
      moved = try await repository.transition(
        requestID, from: [.awaitingApprovals, .approved], to: .cancelled,
        failure: RequestFailure(code: "cancelled", message: "cancelled by the customer"), at: now())
    } catch {
      throw internalError("cancelling request \(requestID)", error)
    }
    guard moved else {
      throw APIError(
        .requestClosed, "request \(requestID) is \(request.status.rawValue): it can no longer be cancelled")
    }
    return try await existingRequest(requestID)
  }

  // MARK: Sending to the vault

  /// Sends every approved request that waits for the device (after an unseal, a reconnection,
  /// a reconciliation).
  public func sendApproved() async {
    let waiting: [StoredRequest]
    do {
      waiting = try await repository.requests(inStatus: .approved, limit: 256)
    } catch {
      logger.error("cannot list approved requests", metadata: ["error": "\(error)"])
      return
    }
    // A request whose last approval just arrived is being sent by that approval's own call;
    // leave it to it (the approver's answer then carries the result).
    let settled = now().addingTimeInterval(-2)
    let stale = waiting.filter { ($0.approvals.map(\.receivedAt).max() ?? .distantPast) < settled }
    await withTaskGroup(of: Void.self) { group in
      for request in stale { group.addTask { await self.execute(request) } }
    }
  }

  /// Sends an approved request: reserve (one call per wallet, one add at a time, only while
  /// the ledger agrees with the device), write the intent, call the vault, hand the result to
  /// the ledger. A request that cannot go now stays `approved` and is sent later.
  func execute(_ request: StoredRequest) async {
    let isAdd = request.kind == .createWallet
    guard request.status == .approved else { return }
    guard request.expiresAt > now() else {
      _ = try? await repository.transition(
        request.id, from: [.approved], to: .expired,
        failure: RequestFailure(code: "expired", message: "the request expired before the vault was asked"), at: now())
      return
    }
    // While a reconciliation settles (a device that came back, an unknown outcome), wait for it
    // a little rather than leave the request to the keeper's next round.
    var reserved = await ledger.reserve(walletID: request.walletID, isAdd: isAdd)
    var waited = 0
    while !reserved, waited < 100, await ledger.settling, deviceSnapshot.isReady {
      try? await Task.sleep(for: .milliseconds(20))
      waited += 1
      reserved = await ledger.reserve(walletID: request.walletID, isAdd: isAdd)
    }
    guard reserved else { return }
    var attempt = 0
    while true {
      attempt += 1
      switch await send(request, isAdd: isAdd, attempt: attempt) {
      case .done: return
      case .retry where attempt < 4:
        // Another change moved the tree under the proof: let its result land, then again.
        try? await Task.sleep(for: .milliseconds(attempt * 5))
        continue
      case .retry:
        await ledger.release(walletID: request.walletID, isAdd: isAdd, outcomeKnown: true)
        return
      }
    }
  }

  enum SendOutcome {
    /// Finished one way or another (the reservation is given back).
    case done
    /// The proof was stale: try again with a new one (the reservation is kept).
    case retry
  }

  private func send(_ request: StoredRequest, isAdd: Bool, attempt: Int) async -> SendOutcome {
    let call: String
    let intent: Intent
    var walletData: [UInt8] = []
    var sealedSeed: [UInt8] = []
    var walletProof: WalletProof? = nil
    var leafProof: CurrentLeafProof? = nil
    do {
      if isAdd {
        call = "CreateWallet"
        let proof = try await repository.currentLeafProof()
        leafProof = proof
        guard
          let begun = try await repository.beginIntent(
            requestID: request.id, call: call, walletID: nil, envelopeHash: request.envelopeHash, oldLeaf: proof.leaf,
            anchor: proof.anchor, at: now())
        else {
          await ledger.release(walletID: nil, isAdd: true, outcomeKnown: true)
          return .done
        }
        intent = begun
      } else {
        guard let walletID = request.walletID else { throw LedgerError(.notFound, "no wallet") }
        call = Self.walletCall(request.kind).rawValue
        let (wallet, proof, _) = try await repository.walletProof(walletID)
        guard wallet.status == .active, wallet.walletHash == request.baseWalletHash, let data = wallet.walletData,
          let seed = wallet.sealedSeed
        else {
          _ = try await repository.transition(
            request.id, from: [.approved], to: .superseded,
            failure: RequestFailure(
              code: "superseded", message: "wallet \(walletID) changed after this request was made"), at: now())
          await ledger.release(walletID: walletID, isAdd: false, outcomeKnown: true)
          return .done
        }
        walletData = data
        sealedSeed = seed
        walletProof = proof
        guard
          let begun = try await repository.beginIntent(
            requestID: request.id, call: call, walletID: walletID, envelopeHash: request.envelopeHash,
            oldLeaf: wallet.walletHash, anchor: proof.anchor, at: now())
        else {
          await ledger.release(walletID: walletID, isAdd: false, outcomeKnown: true)
          return .done
        }
        intent = begun
      }
    } catch {
      logger.error("cannot prepare a vault call", metadata: ["request.id": "\(request.id)", "error": "\(error)"])
      await ledger.release(walletID: request.walletID, isAdd: isAdd, outcomeKnown: true)
      return .done
    }

    await FaultInjection.reach("after-intent")
    let approvals = request.approvals.map(\.encoded)
    let result: RequestResult
    do {
      if let leafProof {
        result = try await device.createWallet(envelope: request.envelope, approvals: approvals, proof: leafProof)
      } else {
        result = try await device.walletCall(
          Self.walletCall(request.kind), envelope: request.envelope, approvals: approvals, walletData: walletData,
          sealedSeed: sealedSeed, proof: walletProof!)
      }
    } catch {
      return await settleRefusal(error, request: request, intent: intent, call: call, isAdd: isAdd, attempt: attempt)
    }
    await FaultInjection.reach("after-result")
    do {
      try await ledger.deliver(result, intent: intent, walletID: request.walletID, isAdd: isAdd)
      await FaultInjection.reach("after-apply")
      logger.info(
        "vault call completed",
        metadata: [
          "request.id": "\(request.id)", "vault.call": "\(call)", "wallet.id": "\(result.change.walletID)",
          "hsm.epoch": "\(result.change.root.epoch)",
        ])
    } catch {
      logger.warning(
        "a vault result was not applied in order; reconciliation settles it",
        metadata: ["request.id": "\(request.id)", "error": "\(error)"])
    }
    return .done
  }

  /// What a refused or failed call means for its intent and request.
  private func settleRefusal(
    _ error: VaultWireError, request: StoredRequest, intent: Intent, call: String, isAdd: Bool, attempt: Int
  ) async -> SendOutcome {
    let reason = error.reason
    var status: RequestStatus? = nil
    var failure: RequestFailure? = nil
    var retry = false
    switch error.code {
    case _ where reason == RequestError.Code.commitFailed.name:
      // The token write failed and the vault fell back: not applied; sent again later.
      status = .approved
    case .vaultRefused, .invalidArgument:
      switch reason {
      case RequestError.Code.staleProof.name:
        status = .approved
        retry = true
      case RequestError.Code.staleWalletHash.name, RequestError.Code.replayedNonce.name:
        status = .superseded
        failure = RequestFailure(code: "superseded", message: error.message, vaultCode: reason)
      case RequestError.Code.expired.name:
        status = .expired
        failure = RequestFailure(code: "expired", message: error.message, vaultCode: reason)
      default:
        status = .refused
        failure = RequestFailure(
          code: APIError.Code.vaultRefused.name, message: error.message, vaultCode: reason ?? error.code.name)
      }
    case .sealed, .stopping, .sessionRequired, .tooManySessions, .lockedOut, .wrongCredential,
      .unknownMethod:
      // Refused before the vault looked at it: not applied; sent again when the device is ready.
      status = .approved
    default:
      // unreachable, unexpected, deviceFailure: the call may have reached the vault.
      status = nil
    }
    try? await repository.audit(
      VaultAuditRecord(
        at: now(), call: call, requestID: request.id, walletID: request.walletID,
        outcome: status == nil ? "unknown" : (status == .approved ? "not-applied" : "refused"),
        code: reason ?? error.code.name, detail: error.message))
    guard let status else {
      logger.warning(
        "vault call outcome unknown", metadata: ["request.id": "\(request.id)", "error": "\(error)"])
      await ledger.release(walletID: request.walletID, isAdd: isAdd, outcomeKnown: false)
      return .done
    }
    do {
      try await repository.settle(
        intent: intent, requestStatus: status, failure: failure, note: "\(error.code): \(error.message)", at: now())
    } catch {
      logger.error("cannot settle an intent", metadata: ["intent.id": "\(intent.id)", "error": "\(error)"])
    }
    logger.info(
      "vault call refused",
      metadata: [
        "request.id": "\(request.id)", "vault.call": "\(call)", "vault.code": "\(error.code)",
        "vault.reason": "\(reason ?? "-")", "request.status": "\(status.rawValue)",
      ])
    if retry { return .retry }
    await ledger.release(walletID: request.walletID, isAdd: isAdd, outcomeKnown: true)
    return .done
  }

  static func walletCall(_ kind: RequestKind) -> DeviceConnection.WalletCall {
    switch kind {
    case .updateWallet: .update
    case .removeWallet: .remove
    default: .sign
    }
  }

  func internalError(_ what: String, _ error: (any Error)?) -> APIError {
    logger.error("internal error", metadata: ["during": "\(what)", "error": "\(error.map { "\($0)" } ?? "-")"])
    return APIError(.internal, "the server failed while \(what); see its log")
  }
}
