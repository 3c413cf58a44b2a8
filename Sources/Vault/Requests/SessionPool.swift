import Custody
import Foundation
import HSMBridge
import Logging

/// A few user sessions of the custody partition, each with its own `WalletVault` (sealer,
/// derivation, signer), lent out one task at a time: PKCS #11 runs one operation at a time per
/// session, so parallel requests need one session each. A task that finds every session lent
/// out waits for one to come back.
final class SessionPool: @unchecked Sendable {
  private let vaults: [WalletVault]
  // Guarded by `lock`.
  private let lock = NSLock()
  private var free: [Int]
  private var waiting: [CheckedContinuation<Int, Never>] = []

  /// `count` sessions opened beside `session` (same module and slot, so they share its login).
  init(beside session: Session, count: Int, logger: Logger) throws {
    var vaults = [WalletVault]()
    for _ in 0..<max(count, 1) {
      vaults.append(
        try WalletVault(session: try session.module.openSession(session.slot, readWrite: true), logger: logger))
    }
    self.vaults = vaults
    free = Array(vaults.indices)
  }

  var count: Int { vaults.count }

  /// Derivation and signing need no session: the first vault's (their secp256k1 context is
  /// only read after creation, which libsecp256k1 allows from several threads).
  var derivation: KeyDerivation { vaults[0].derivation }
  var signer: Signer { vaults[0].signer }

  /// Runs `body` with a session of its own. `body` runs synchronously: it holds the session
  /// for no longer than its own PKCS #11 calls and computation.
  func withVault<R>(_ body: (WalletVault) throws -> R) async throws -> R {
    let index = await checkOut()
    defer { checkIn(index) }
    return try body(vaults[index])
  }

  private func checkOut() async -> Int {
    if let index = lock.withLock({ free.popLast() }) { return index }
    return await withCheckedContinuation { continuation in
      let index: Int? = lock.withLock {
        if let index = free.popLast() { return index }
        waiting.append(continuation)
        return nil
      }
      if let index { continuation.resume(returning: index) }
    }
  }

  private func checkIn(_ index: Int) {
    let next: CheckedContinuation<Int, Never>? = lock.withLock {
      if waiting.isEmpty {
        free.append(index)
        return nil
      }
      return waiting.removeFirst()
    }
    next?.resume(returning: index)
  }
}

/// Where the vault's time comes from: expiries and the policy's windows are judged by it.
public protocol VaultClock: Sendable {
  /// Seconds since 1970-01-01 00:00:00 UTC.
  func now() -> UInt64
}

/// The system's real-time clock: what the vault uses in production.
public struct SystemVaultClock: VaultClock {
  public init() {}

  public func now() -> UInt64 {
    UInt64(max(0, Date().timeIntervalSince1970))
  }
}
