import DeviceServer
import Foundation
import GRPCCore
import HSMBridge
import Synchronization
import TestSupport
import Testing
import VaultWire

/// The backoff's arithmetic and the session table's timeouts with a clock the test moves (the
/// real clock is exercised by the process tests: lockouts of 60 s that survive a restart,
/// sessions that expire 900 s after their last use).
@Suite struct BackoffAndSessionTests {
  @Test func fiveFailuresThenOneMinuteDoublingToOneHour() {
    let policy = BackoffPolicy.custos
    #expect((0...4).map { policy.lockout(afterFailures: $0) } == [nil, nil, nil, nil, nil])
    let minutes = (5...13).map { policy.lockout(afterFailures: $0)!.components.seconds / 60 }
    #expect(minutes == [1, 2, 4, 8, 16, 32, 60, 60, 60])
    #expect(policy.lockout(afterFailures: 10_000) == .seconds(3600))
  }

  @Test func aLockoutRunsFromTheFailureThatStartedItAndASuccessClearsIt() {
    let policy = BackoffPolicy.custos
    let start = Date(timeIntervalSince1970: 1_700_000_000)
    var state = BackoffState()
    for attempt in 1...4 {
      state.recordFailure(at: start, policy: policy)
      #expect(state.remainingLockout(at: start) == nil)
      #expect(state.report(at: start, policy: policy).attemptsBeforeLockout == 5 - attempt)
    }
    state.recordFailure(at: start, policy: policy)
    #expect(state.remainingLockout(at: start) == .seconds(60))
    #expect(state.remainingLockout(at: start.addingTimeInterval(59.5)) == .milliseconds(500))
    #expect(state.remainingLockout(at: start.addingTimeInterval(60)) == nil)
    #expect(state.report(at: start, policy: policy).attemptsBeforeLockout == 0)
    #expect(state.report(at: start, policy: policy).lockedUntil == start.addingTimeInterval(60))
    // After the lockout, the next failure doubles it.
    let later = start.addingTimeInterval(61)
    #expect(state.report(at: later, policy: policy).lockedUntil == nil)
    state.recordFailure(at: later, policy: policy)
    #expect(state.remainingLockout(at: later) == .seconds(120))
    state.recordSuccess()
    #expect(state == BackoffState())
  }

  @Test func lockoutsPersistInTheDeviceDirectoryAndADamagedFileStopsTheDevice() throws {
    let test = try TestDevice()
    let store = try LockoutStore(device: test.device)
    #expect(store.state(.unseal) == BackoffState())
    let now = Date(timeIntervalSince1970: 1_700_000_000.25)
    for _ in 1...5 { try store.update(.unseal) { $0.recordFailure(at: now, policy: .custos) } }
    try store.update(.cryptoUser) { $0.recordFailure(at: now, policy: .custos) }
    let reread = try LockoutStore(device: test.device)
    #expect(reread.state(.unseal).failures == 5)
    #expect(reread.state(.unseal).lockedUntil == now.addingTimeInterval(60))
    #expect(reread.state(.cryptoUser) == BackoffState(failures: 1))

    let path = test.device.directory + "/" + LockoutStore.fileName
    #expect((try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) == 0o600)
    try Data("{\"format\": 1, \"unseal\": ".utf8).write(to: URL(fileURLWithPath: path))
    #expect {
      _ = try LockoutStore(device: test.device)
    } throws: { ($0 as? DeviceServerError)?.code == .lockoutFileInvalid }
  }

  @Test func sessionsExpireAfterTheirIdleTimeoutAndEachUseMovesItOn() throws {
    let now = Mutex(Date(timeIntervalSince1970: 1_700_000_000))
    let table = SessionTable(idleTimeout: .seconds(60), capacity: 2) { now.withLock { $0 } }
    let (token, expiresAt) = try table.open()
    #expect(expiresAt == Date(timeIntervalSince1970: 1_700_000_060))
    now.withLock { $0 += 59 }
    try table.use(token)
    now.withLock { $0 += 59 }
    try table.use(token)
    now.withLock { $0 += 61 }
    #expect(throws: VaultWireError.self) { try table.use(token) }
    #expect(table.openCount == 0)

    // Capacity: two at once; an expired one frees its place.
    _ = try table.open()
    let (second, _) = try table.open()
    #expect { _ = try table.open() } throws: { ($0 as? VaultWireError)?.code == .tooManySessions }
    try table.close(second)
    #expect(throws: VaultWireError.self) { try table.use(second) }
    _ = try table.open()
    now.withLock { $0 += 61 }
    _ = try table.open()
    #expect(table.openCount == 1)
    #expect(throws: VaultWireError.self) { try table.use(nil) }
  }

  @Test func wireErrorsTravelAsStatusAndTrailersAndComeBackTheSame() {
    let sent = VaultWireError(.lockedOut, "locked", retryAfter: .milliseconds(59_250), attemptsBeforeLockout: 0)
    let rpc = sent.rpcError
    #expect(rpc.code == .resourceExhausted)
    let received = VaultWireError(rpc)
    #expect(received.code == .lockedOut && received.retryAfter == .milliseconds(59_250))
    #expect(received.attemptsBeforeLockout == 0 && received.message == "locked")
    for code in VaultWireError.Code.deviceCodes {
      #expect(VaultWireError(VaultWireError(code, "x").rpcError).code == code)
    }
    // Statuses without the device's trailer get client-side codes a caller can act on.
    #expect(VaultWireError(RPCError(code: .deadlineExceeded, message: "late")).code == .timedOut)
    #expect(VaultWireError(RPCError(code: .unavailable, message: "gone")).code == .unreachable)
    #expect(VaultWireError(RPCError(code: .dataLoss, message: "?")).code == .unexpected)
  }
}
