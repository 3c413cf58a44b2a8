import Custody
import Foundation
import HSMBridge
import Logging

/// How the vault renews its request sessions: after `operations` token operations it opens a
/// fresh PKCS #11 instance of the custody partition (`open`: a logged-in user session of it),
/// moves new requests there, and lets the old instance go once the requests using it are done.
///
/// Why: SoftHSM 2.6.1 frees a destroyed session object's attributes but keeps the object itself
/// until `C_Finalize` (closing the session does not free it either), and every seal and unseal
/// derives and destroys one sealing key: about 190 bytes for each, for as long as the instance
/// lives (measured: 60,000 derive + destroy grew a process by 12 MB; `C_Finalize` and
/// `C_Initialize` gave it back). Renewing the instance bounds that memory.
public struct SessionRecycling: Sendable {
  /// Token operations (seal, unseal, public key) an instance serves before it is renewed.
  public let operations: Int
  let open: @Sendable () throws -> Session

  /// Renew after `operations` operations with sessions of the instance `open` makes (it loads
  /// the module again and logs in: the closure holds what that needs).
  /// Token operations between two renewals in `custos-hsm` unless told otherwise (each leaves
  /// about 190 bytes behind in SoftHSM until the renewal frees them: 1.5 MiB at most).
  public static let deviceDefault = 8_192

  public init(operations: Int = deviceDefault, open: @escaping @Sendable () throws -> Session) {
    self.operations = max(1, operations)
    self.open = open
  }
}

/// A few user sessions of the custody partition, each with its own `WalletVault` (sealer,
/// derivation, signer), lent out one task at a time: PKCS #11 runs one operation at a time per
/// session, so parallel requests need one session each. A task that finds every session lent
/// out waits for one to come back. With a `SessionRecycling`, the sessions move to a fresh
/// PKCS #11 instance every so many operations (see there why).
final class SessionPool: @unchecked Sendable {
  /// A duration in whole milliseconds, seconds included (for log metadata).
  static func milliseconds(_ duration: Duration) -> Int64 {
    let (seconds, attoseconds) = duration.components
    return seconds * 1000 + attoseconds / 1_000_000_000_000_000
  }

  /// One PKCS #11 instance's sessions. Freed (sessions closed, instance finalised) when the
  /// pool has moved on and the last request using it has returned its session.
  private final class Generation: @unchecked Sendable {
    let vaults: [WalletVault]
    // Guarded by the pool's lock.
    var free: [Int]
    init(_ vaults: [WalletVault]) {
      self.vaults = vaults
      free = Array(vaults.indices)
    }
  }

  let count: Int
  private let recycling: SessionRecycling?
  private let logger: Logger
  /// Derivation and signing need no session: the first vault's (their secp256k1 context is
  /// only read after creation, which libsecp256k1 allows from several threads).
  let derivation: KeyDerivation
  let signer: Signer
  // Guarded by `lock`.
  private let lock = NSLock()
  private var current: Generation
  private var operations = 0
  private var renewing = false
  private var renewals = 0
  private var waiting: [CheckedContinuation<(Generation, Int), Never>] = []

  /// `count` sessions opened beside `session` (same module and slot, so they share its login),
  /// or, with `recycling`, in an instance of their own from the start (so that `session`'s
  /// instance never holds a sealing key), renewed as it says.
  init(beside session: Session, count: Int, recycling: SessionRecycling? = nil, logger: Logger) throws {
    self.count = max(count, 1)
    self.recycling = recycling
    self.logger = logger
    let first = try recycling?.open()
    let vaults = try SessionPool.vaults(count: self.count, beside: first ?? session, first: first, logger: logger)
    current = Generation(vaults)
    derivation = vaults[0].derivation
    signer = vaults[0].signer
  }

  private static func vaults(
    count: Int, beside session: Session, first: Session?, logger: Logger
  ) throws
    -> [WalletVault]
  {
    var vaults = [WalletVault]()
    if let first { vaults.append(try WalletVault(session: first, logger: logger)) }
    while vaults.count < count {
      vaults.append(
        try WalletVault(session: try session.module.openSession(session.slot, readWrite: true), logger: logger))
    }
    return vaults
  }

  /// How many times the sessions moved to a fresh instance.
  var renewalCount: Int { lock.withLock { renewals } }

  /// Runs `body` with a session of its own. `body` runs synchronously: it holds the session
  /// for no longer than its own PKCS #11 calls and computation.
  func withVault<R>(_ body: (WalletVault) throws -> R) async throws -> R {
    let (generation, index) = await checkOut()
    let result: R
    do {
      result = try body(generation.vaults[index])
    } catch {
      if checkIn(generation, index) { renew() }
      throw error
    }
    if checkIn(generation, index) { renew() }
    return result
  }

  private func checkOut() async -> (Generation, Int) {
    let taken: (Generation, Int)? = lock.withLock { take() }
    if let taken { return taken }
    return await withCheckedContinuation { continuation in
      let taken: (Generation, Int)? = lock.withLock {
        if let taken = take() { return taken }
        waiting.append(continuation)
        return nil
      }
      if let taken { continuation.resume(returning: taken) }
    }
  }

  /// A free session of the current instance, counted as one operation. Under the lock.
  private func take() -> (Generation, Int)? {
    guard let index = current.free.popLast() else { return nil }
    operations += 1
    return (current, index)
  }

  /// Returns a session; true when the caller must renew the instance now (it is the one that
  /// reached the count).
  private func checkIn(_ generation: Generation, _ index: Int) -> Bool {
    let (next, renew): ((CheckedContinuation<(Generation, Int), Never>, (Generation, Int))?, Bool) = lock.withLock {
      var handed: (CheckedContinuation<(Generation, Int), Never>, (Generation, Int))? = nil
      // A session of an instance the pool has left is not lent again: it closes with it.
      if generation === current {
        if waiting.isEmpty {
          current.free.append(index)
        } else {
          operations += 1
          handed = (waiting.removeFirst(), (generation, index))
        }
      }
      guard let recycling, !renewing, operations >= recycling.operations else { return (handed, false) }
      renewing = true
      return (handed, true)
    }
    if let (continuation, session) = next { continuation.resume(returning: session) }
    return renew
  }

  /// Opens the fresh instance and moves the pool there; requests still holding sessions of the
  /// old one finish on it, and it is finalised when the last of them returns.
  private func renew() {
    guard let recycling else { return }
    let started = ContinuousClock.now
    do {
      let first = try recycling.open()
      let next = Generation(try SessionPool.vaults(count: count, beside: first, first: first, logger: logger))
      let handed: [(CheckedContinuation<(Generation, Int), Never>, (Generation, Int))] = lock.withLock {
        current = next
        operations = 0
        renewing = false
        renewals += 1
        var handed = [(CheckedContinuation<(Generation, Int), Never>, (Generation, Int))]()
        while !waiting.isEmpty, let index = next.free.popLast() {
          operations += 1
          handed.append((waiting.removeFirst(), (next, index)))
        }
        return handed
      }
      for (continuation, session) in handed { continuation.resume(returning: session) }
      logger.info(
        "request sessions moved to a fresh PKCS #11 instance",
        metadata: [
          "vault.renewal.ms": "\(Self.milliseconds(ContinuousClock.now - started))"
        ])
    } catch {
      // Keep serving on the current instance; try again after as many operations.
      lock.withLock {
        operations = 0
        renewing = false
      }
      logger.error("renewing the request sessions failed", metadata: ["vault.error": "\(error)"])
    }
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
