import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Runs a handler when this process receives SIGINT or SIGTERM (or the signals given), instead
/// of dying at once: `custos bench api` stops its children and removes its directory, then
/// exits non-zero. Signals that arrive while the handler runs are ignored; `cancel()` restores
/// the default action. Children started while a trap is set are not affected by it (a handled
/// signal's action is reset by exec).
public final class TerminationTrap: @unchecked Sendable {
  private let sources: [any DispatchSourceSignal]
  private let signals: [Int32]

  /// Sets the trap: on the first of `signals`, `handler` runs (on a queue of its own) with the
  /// signal's number. The handler usually ends with `exit(128 + signal)`.
  public init(signals: [Int32] = [SIGINT, SIGTERM], handler: @escaping @Sendable (Int32) -> Void) {
    self.signals = signals
    let queue = DispatchQueue(label: "ProcessSupport.TerminationTrap")
    var sources = [any DispatchSourceSignal]()
    let once = Once()
    for number in signals {
      signal(number, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
      source.setEventHandler { if once.first() { handler(number) } }
      source.resume()
      sources.append(source)
    }
    self.sources = sources
  }

  /// Removes the trap: the signals take their default action again.
  public func cancel() {
    for source in sources { source.cancel() }
    for number in signals { signal(number, SIG_DFL) }
  }

  /// True at the first call only.
  private final class Once: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    func first() -> Bool {
      lock.lock()
      defer { lock.unlock() }
      if done { return false }
      done = true
      return true
    }
  }
}
