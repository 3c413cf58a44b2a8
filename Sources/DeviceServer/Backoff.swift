import Foundation
import VaultWire

/// The backoff against guessing (DESIGN.md section 5): a number of free failures, then a
/// lockout that starts at `firstLockout` and doubles with every further failure up to
/// `longestLockout`. A success clears it.
public struct BackoffPolicy: Sendable, Hashable {
  /// Failures allowed before the first lockout.
  public var freeFailures: Int
  public var firstLockout: Duration
  public var longestLockout: Duration

  public init(freeFailures: Int, firstLockout: Duration, longestLockout: Duration) {
    self.freeFailures = freeFailures
    self.firstLockout = firstLockout
    self.longestLockout = longestLockout
  }

  /// Five failures, then 1 minute doubling to 1 hour: for unseal shares and the Crypto User
  /// credential alike.
  public static let custos = BackoffPolicy(freeFailures: 5, firstLockout: .seconds(60), longestLockout: .seconds(3600))

  /// How long the lockout after failure number `failures` lasts (none before `freeFailures`).
  public func lockout(afterFailures failures: Int) -> Duration? {
    guard failures >= freeFailures else { return nil }
    let doublings = failures - freeFailures
    let first = firstLockout.components.seconds
    let longest = longestLockout.components.seconds
    // 2^doublings overflows long before it matters: stop doubling at the cap.
    var seconds = first
    for _ in 0..<doublings where seconds < longest { seconds *= 2 }
    return .seconds(min(seconds, longest))
  }
}

/// One backoff's state: failures since the last success and the lockout running, if any.
/// Kept in the device directory so that a restart does not clear it.
public struct BackoffState: Codable, Sendable, Hashable {
  public var failures: Int
  /// Attempts are refused unread before this instant.
  public var lockedUntil: Date?

  public init(failures: Int = 0, lockedUntil: Date? = nil) {
    self.failures = failures
    self.lockedUntil = lockedUntil
  }

  /// How long attempts are still refused at `now`; nil when one may be made.
  public func remainingLockout(at now: Date) -> Duration? {
    guard let lockedUntil, lockedUntil > now else { return nil }
    return .milliseconds(Int64((lockedUntil.timeIntervalSince(now) * 1000).rounded(.up)))
  }

  /// Counts a failure at `now`; from the policy's free failures on, starts a lockout.
  public mutating func recordFailure(at now: Date, policy: BackoffPolicy) {
    failures += 1
    if let lockout = policy.lockout(afterFailures: failures) {
      lockedUntil = now.addingTimeInterval(Double(lockout.components.seconds))
    }
  }

  /// Clears the failures after a success.
  public mutating func recordSuccess() {
    failures = 0
    lockedUntil = nil
  }

  /// The state as the wire reports it.
  public func report(at now: Date, policy: BackoffPolicy) -> Lockout {
    let running = remainingLockout(at: now) != nil
    return Lockout(
      failures: failures, attemptsBeforeLockout: running ? 0 : max(policy.freeFailures - failures, 0),
      lockedUntil: running ? lockedUntil : nil)
  }
}
