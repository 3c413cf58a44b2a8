import Custody
import Foundation
import Synchronization
import VaultWire

/// The Crypto User sessions of a device: bearer tokens with an idle timeout. The table keeps the
/// SHA-256 of each token, never the token.
public final class SessionTable: Sendable {
  /// How long a session lives without a call.
  public let idleTimeout: Duration
  /// Sessions open at once, at most.
  public let capacity: Int
  private let entries = Mutex([Hash256: Date]())
  private let clock: @Sendable () -> Date

  /// The prefix of every token, so that one is recognisable in a secrets store or a leak scan.
  public static let tokenPrefix = "custos-s1-"

  public init(idleTimeout: Duration, capacity: Int, clock: @escaping @Sendable () -> Date = { Date() }) {
    self.idleTimeout = idleTimeout
    self.capacity = capacity
    self.clock = clock
  }

  private var idleSeconds: Double { Double(idleTimeout.components.seconds) }

  /// Opens a session: its token and when it lapses unless used.
  public func open() throws(VaultWireError) -> (token: String, expiresAt: Date) {
    let now = clock()
    var bytes = SystemRandom.bytes(32)
    defer { SecretBytes.zero(&bytes) }
    let token = SessionTable.tokenPrefix + Hex.encode(bytes)
    let idle = idleSeconds
    let opened = entries.withLock { entries -> Bool in
      entries = entries.filter { $0.value > now }
      guard entries.count < capacity else { return false }
      entries[Hash256.sha256(Array(token.utf8))] = now.addingTimeInterval(idle)
      return true
    }
    guard opened else {
      throw VaultWireError(
        .tooManySessions, "the device holds \(capacity) sessions, its most; log out of one or let one time out")
    }
    return (token, now.addingTimeInterval(idle))
  }

  /// Checks the token of a call and moves its expiry on; `sessionRequired` when there is none
  /// or it is unknown, expired or closed.
  public func use(_ token: String?) throws(VaultWireError) {
    guard let token, !token.isEmpty else {
      throw VaultWireError(
        .sessionRequired,
        "this call needs a Crypto User session (log in, then send its token as \(WireMetadata.session))")
    }
    let now = clock()
    let key = Hash256.sha256(Array(token.utf8))
    let idle = idleSeconds
    let found = entries.withLock { entries -> Bool in
      guard let expiry = entries[key] else { return false }
      guard expiry > now else {
        entries[key] = nil
        return false
      }
      entries[key] = now.addingTimeInterval(idle)
      return true
    }
    guard found else {
      throw VaultWireError(.sessionRequired, "the session is unknown, expired or closed; log in again")
    }
  }

  /// Closes the session of `token`.
  public func close(_ token: String?) throws(VaultWireError) {
    try use(token)
    let key = Hash256.sha256(Array(token!.utf8))
    entries.withLock { _ = $0.removeValue(forKey: key) }
  }

  /// Closes every session (shutdown).
  public func closeAll() {
    entries.withLock { $0.removeAll() }
  }

  /// Sessions open and not expired.
  public var openCount: Int {
    let now = clock()
    return entries.withLock { $0.values.filter { $0 > now }.count }
  }
}
