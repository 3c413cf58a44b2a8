import Custody
import Dispatch
import Foundation
import HSMBridge
import Logging
import Synchronization
import VaultWire

/// The device behind its socket: SEALED until a quorum of unseal key holders has submitted
/// their shares, then READY with the vault open; Crypto User sessions; the backoffs; the
/// accounting of calls in flight that a graceful shutdown waits for.
///
/// Every restart starts SEALED: nothing of an unseal is kept but the lockout file.
public final class DeviceCore: Sendable {
  public let device: Device
  /// SHA-256 of the running executable.
  public let measurement: [UInt8]
  public let sessions: SessionTable
  public let policy: BackoffPolicy
  private let record: ActivationRecord
  private let verifier: CredentialVerifier
  private let lockouts: LockoutStore
  private let openBackend: VaultBackendFactory
  private let logger: Logger
  private let clock: @Sendable () -> Date
  private let state: Mutex<State>
  /// Argon2id work (share passwords, the credential) and unseal transitions, one at a time:
  /// each call holds 64 MiB, and a quorum is reached by exactly one submission.
  private let credentials = DispatchQueue(label: "custos.device.credentials")

  private enum Phase {
    case sealed(accepted: [OpenedShare])
    case ready(any VaultBackend)
    /// New calls refused; the vault (if it was open) waits for `finish` to close it.
    case stopping((any VaultBackend)?)
    case stopped
  }

  private struct State {
    var phase: Phase = .sealed(accepted: [])
    var inFlight = 0
    var drained: [CheckedContinuation<Void, Never>] = []
    /// Tasks waiting in `untilStopping`, by a number of their own.
    var stoppingWaiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    var nextStoppingWaiter: UInt64 = 0

    var isStopping: Bool {
      switch phase {
      case .stopping, .stopped: true
      case .sealed, .ready: false
      }
    }
  }

  /// A device opened (and locked) by the caller, with its enrolment's activation record and
  /// Crypto User verifier; `openBackend` opens the vault once a quorum unseals.
  public init(
    device: Device, measurement: [UInt8], sessionIdleTimeout: Duration, maxSessions: Int,
    policy: BackoffPolicy = .custos, openBackend: @escaping VaultBackendFactory, logger: Logger,
    clock: @escaping @Sendable () -> Date = { Date() }
  ) throws {
    let enrolment = try device.enrolment()
    guard let record = enrolment.activation else {
      throw DeviceServerError(.deviceNotServable, "device \(device.manifest.serial) has no activation record")
    }
    guard let verifier = enrolment.cryptoUser else {
      throw DeviceServerError(
        .deviceNotServable, "device \(device.manifest.serial) has no Crypto User enrolled (init-device step 11)")
    }
    guard record.partitions.contains(PartitionVaultBackend.partitionName) else {
      throw DeviceServerError(
        .deviceNotServable, "device \(device.manifest.serial) has no \(PartitionVaultBackend.partitionName) partition")
    }
    self.device = device
    self.measurement = measurement
    self.record = record
    self.verifier = verifier
    self.lockouts = try LockoutStore(device: device)
    self.sessions = SessionTable(idleTimeout: sessionIdleTimeout, capacity: maxSessions, clock: clock)
    self.policy = policy
    self.openBackend = openBackend
    self.logger = logger
    self.clock = clock
    self.state = Mutex(State())
  }

  private var metadata: Logger.Metadata { ["hsm.device": "\(device.manifest.serial)"] }

  // MARK: Status

  /// The device's status; the root state only when READY.
  public func status() async -> DeviceStatus {
    let now = clock()
    let (state, holders, backend) = self.state.withLock { state -> (DeviceState, [String], (any VaultBackend)?) in
      switch state.phase {
      case .sealed(let accepted): return (.sealed, accepted.map(\.holder), nil)
      case .ready(let backend):
        state.inFlight += 1
        return (.ready, [], backend)
      case .stopping, .stopped: return (.stopping, [], nil)
      }
    }
    var root: RootState? = nil
    if let backend {
      root = try? await backend.rootState()
      callFinished()
    }
    return DeviceStatus(
      state: state, name: device.manifest.name, serial: device.manifest.serial, measurement: measurement,
      unseal: UnsealStatus(
        threshold: record.threshold, shares: record.shares, progress: holders.count, holders: holders,
        lockout: lockouts.state(.unseal).report(at: now, policy: policy)),
      root: root, loginLockout: lockouts.state(.cryptoUser).report(at: now, policy: policy))
  }

  // MARK: Unseal

  /// One holder's share file and password. Reports progress; at the threshold, combines the
  /// shares, opens the vault and becomes READY.
  ///
  /// Counted against the backoff: a password that does not open the share, and shares that
  /// do not combine. Not counted (no guess was made): a file that is not a share, a share of
  /// another device or holder, a share given twice. During a lockout nothing is read.
  public func unseal(
    shareFile: [UInt8], password: SecretBytes, reset: Bool
  ) async throws(VaultWireError) -> (DeviceState, UnsealStatus) {
    do {
      return try await onCredentialsQueue { try self.unsealNow(shareFile: shareFile, password: password, reset: reset) }
    } catch {
      throw wireError(error, during: "unseal")
    }
  }

  private func unsealNow(shareFile: [UInt8], password: SecretBytes, reset: Bool) throws -> (DeviceState, UnsealStatus) {
    var accepted: [OpenedShare] = try state.withLock { state in
      switch state.phase {
      case .sealed(let accepted):
        if reset { state.phase = .sealed(accepted: []) }
        return reset ? [] : accepted
      case .ready: throw VaultWireError(.alreadyUnsealed, "the device is already unsealed (READY)")
      case .stopping, .stopped: throw VaultWireError(.stopping, "the device is shutting down")
      }
    }
    if reset { logger.info("unseal progress reset", metadata: metadata) }
    guard !shareFile.isEmpty else { return (.sealed, progress(accepted)) }
    try refuseDuringLockout(.unseal, what: "unseal attempts")

    let source = "the submitted share file"
    let file: UnsealShareFile
    do {
      file = try UnsealShareFile.decode(shareFile, source: source)
      try device.checkShare(file, source: source, alreadyGiven: accepted.map(\.holder))
    } catch let error as HSMBridgeError {
      throw VaultWireError(error.code == .shareInvalid ? .invalidArgument : .shareRefused, error.reason)
    }
    do {
      accepted.append(try device.openShare(file, password: password, source: source))
    } catch let error as HSMBridgeError where error.code == .wrongPassword {
      throw try failure(
        .unseal, .wrongPassword, "the share of \(file.holder) does not open with the password given",
        holder: file.holder)
    }
    logger.info(
      "unseal share accepted",
      metadata: metadata.merging(
        ["hsm.holder": "\(file.holder)", "hsm.progress": "\(accepted.count)/\(record.threshold)"]) { $1 })
    guard accepted.count >= record.threshold else {
      try keepSealed(accepted)
      return (.sealed, progress(accepted))
    }

    let activation: DeviceActivation
    do {
      activation = try device.activate(opened: accepted)
    } catch let error as HSMBridgeError where error.code == .activationFailed {
      try keepSealed([])
      throw try failure(.unseal, .activationFailed, error.reason, holder: nil)
    }
    try lockouts.update(.unseal) { $0.recordSuccess() }
    let backend: any VaultBackend
    do {
      backend = try openBackend(device, activation, logger)
    } catch {
      try keepSealed([])
      logger.error(
        "the quorum is met but the vault does not open", metadata: metadata.merging(["vault.error": "\(error)"]) { $1 })
      throw VaultWireError(
        .deviceFailure, "the quorum is met but the vault does not open (\(VaultWireError(vault: error).message))")
    }
    let kept = state.withLock { state -> Bool in
      guard case .sealed = state.phase else { return false }
      state.phase = .ready(backend)
      return true
    }
    guard kept else {
      Task { try? await backend.close() }
      throw VaultWireError(.stopping, "the device is shutting down")
    }
    logger.notice(
      "device unsealed: READY",
      metadata: metadata.merging(["hsm.holders": "\(activation.holders.joined(separator: ","))"]) { $1 })
    return (.ready, progress([]))
  }

  /// Records the shares accepted so far, unless the device began stopping meanwhile.
  private func keepSealed(_ accepted: [OpenedShare]) throws(VaultWireError) {
    let sealed = state.withLock { state -> Bool in
      guard case .sealed = state.phase else { return false }
      state.phase = .sealed(accepted: accepted)
      return true
    }
    if !sealed { throw VaultWireError(.stopping, "the device is shutting down") }
  }

  private func progress(_ accepted: [OpenedShare]) -> UnsealStatus {
    UnsealStatus(
      threshold: record.threshold, shares: record.shares, progress: accepted.count, holders: accepted.map(\.holder),
      lockout: lockouts.state(.unseal).report(at: clock(), policy: policy))
  }

  // MARK: Crypto User sessions

  /// Opens a session when `credential` matches the enrolled verifier. A wrong credential is
  /// counted against the backoff; during a lockout nothing is checked.
  public func login(credential: SecretBytes) async throws(VaultWireError) -> (token: String, expiresAt: Date) {
    do {
      return try await onCredentialsQueue {
        try self.refuseStopping()
        try self.refuseDuringLockout(.cryptoUser, what: "logins")
        guard try self.verifier.verify(credential) else {
          throw try self.failure(
            .cryptoUser, .wrongCredential, "the credential is not the Crypto User credential enrolled on this device",
            holder: nil)
        }
        if self.lockouts.state(.cryptoUser).failures > 0 {
          try self.lockouts.update(.cryptoUser) { $0.recordSuccess() }
        }
        let opened = try self.sessions.open()
        self.logger.info("Crypto User session opened", metadata: self.metadata)
        return opened
      }
    } catch {
      throw wireError(error, during: "login")
    }
  }

  /// Closes the session of `token`.
  public func logout(token: String?) throws(VaultWireError) {
    try sessions.close(token)
    logger.info("Crypto User session closed", metadata: metadata)
  }

  // MARK: Vault calls

  /// Checks that `token` names a live session (and keeps it alive), and that the device is not
  /// stopping: what opening a Pipeline stream needs. Each call on it is checked again.
  public func checkSession(token: String?) throws(VaultWireError) {
    try refuseStopping()
    try sessions.use(token)
  }

  /// Runs a vault call for the session of `token`: refused while stopping, without a valid
  /// session, or while SEALED; counted in flight so that a shutdown waits for it.
  public func vaultCall<T: Sendable>(
    token: String?, _ name: String, _ body: (any VaultBackend) async throws -> T
  ) async throws(VaultWireError) -> T {
    try refuseStopping()
    try sessions.use(token)
    let backend: any VaultBackend = try state.withLock { state throws(VaultWireError) -> any VaultBackend in
      switch state.phase {
      case .ready(let backend):
        state.inFlight += 1
        return backend
      case .sealed:
        throw VaultWireError(.sealed, "the device is SEALED: a quorum of unseal key holders must unseal it first")
      case .stopping, .stopped:
        throw VaultWireError(.stopping, "the device is shutting down")
      }
    }
    defer { callFinished() }
    do {
      return try await body(backend)
    } catch {
      throw wireError(error, during: name)
    }
  }

  // MARK: Shutdown

  /// Refuses new calls from now on.
  public func beginStopping() {
    let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>]? in
      switch state.phase {
      case .sealed: state.phase = .stopping(nil)
      case .ready(let backend): state.phase = .stopping(backend)
      case .stopping, .stopped: return nil
      }
      defer { state.stoppingWaiters = [:] }
      return Array(state.stoppingWaiters.values)
    }
    guard let waiters else { return }
    logger.notice("stopping: new calls are refused", metadata: metadata)
    for waiter in waiters { waiter.resume() }
  }

  /// Returns once the device has begun stopping (at once if it has), or when the calling task
  /// is cancelled: what a long-lived stream waits for to end itself.
  public func untilStopping() async {
    let id = state.withLock { state -> UInt64 in
      state.nextStoppingWaiter += 1
      return state.nextStoppingWaiter
    }
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let now = state.withLock { state -> Bool in
          if state.isStopping || Task.isCancelled { return true }
          state.stoppingWaiters[id] = continuation
          return false
        }
        if now { continuation.resume() }
      }
    } onCancel: {
      state.withLock { $0.stoppingWaiters.removeValue(forKey: id) }?.resume()
    }
  }

  /// Refuses new calls and waits until every call in flight has its answer.
  public func drain() async {
    beginStopping()
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let drained = state.withLock { state -> Bool in
        if state.inFlight == 0 { return true }
        state.drained.append(continuation)
        return false
      }
      if drained { continuation.resume() }
    }
  }

  /// Waits for the calls in flight, commits and closes the vault, closes every session. After
  /// this the device can be released.
  public func finish() async {
    await drain()
    let backend = state.withLock { state -> (any VaultBackend)? in
      defer { state.phase = .stopped }
      if case .stopping(let backend) = state.phase { return backend }
      return nil
    }
    if let backend {
      do {
        try await backend.close()
      } catch {
        logger.error("closing the vault failed", metadata: metadata.merging(["vault.error": "\(error)"]) { $1 })
      }
    }
    sessions.closeAll()
    logger.notice("stopped: calls drained, vault closed, sessions closed", metadata: metadata)
  }

  // MARK: Helpers

  private func callFinished() {
    let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
      state.inFlight -= 1
      guard state.inFlight == 0 else { return [] }
      defer { state.drained = [] }
      return state.drained
    }
    for waiter in waiters { waiter.resume() }
  }

  private func refuseStopping() throws(VaultWireError) {
    if state.withLock({ $0.isStopping }) { throw VaultWireError(.stopping, "the device is shutting down") }
  }

  private func refuseDuringLockout(_ kind: BackoffKind, what: String) throws(VaultWireError) {
    let backoff = lockouts.state(kind)
    if let remaining = backoff.remainingLockout(at: clock()) {
      throw VaultWireError(
        .lockedOut,
        "\(what) are locked out after \(backoff.failures) failures; the next is read in \(Self.describe(remaining))",
        retryAfter: remaining, attemptsBeforeLockout: 0)
    }
  }

  /// Counts a failure, logs it, and returns the refusal to throw (with the lockout it started).
  private func failure(
    _ kind: BackoffKind, _ code: VaultWireError.Code, _ message: String, holder: String?
  ) throws -> VaultWireError {
    let now = clock()
    let after = try lockouts.update(kind) { $0.recordFailure(at: now, policy: policy) }
    let report = after.report(at: now, policy: policy)
    var fields = metadata
    fields["hsm.failures"] = "\(after.failures)"
    if let holder { fields["hsm.holder"] = "\(holder)" }
    logger.warning("\(kind == .unseal ? "unseal" : "login") attempt refused: \(code)", metadata: fields)
    if let remaining = after.remainingLockout(at: now) {
      return VaultWireError(
        code, "\(message); \(after.failures) failures: further attempts are refused for \(Self.describe(remaining))",
        retryAfter: remaining, attemptsBeforeLockout: 0)
    }
    return VaultWireError(
      code, "\(message) (\(report.attemptsBeforeLockout) more failures start a lockout)",
      attemptsBeforeLockout: report.attemptsBeforeLockout)
  }

  private func wireError(_ error: any Error, during call: String) -> VaultWireError {
    let wire = VaultWireError(vault: error)
    if wire.code == .deviceFailure {
      logger.error("\(call) failed inside the device", metadata: metadata.merging(["vault.error": "\(error)"]) { $1 })
    }
    return wire
  }

  private func onCredentialsQueue<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
      credentials.async { continuation.resume(with: Result { try body() }) }
    }
  }

  static func describe(_ duration: Duration) -> String {
    let seconds = Int(
      (Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18).rounded(.up))
    return seconds >= 120 ? "\(seconds / 60) min \(seconds % 60) s" : "\(seconds) s"
  }
}
