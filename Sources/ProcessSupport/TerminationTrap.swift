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
  private let once = Once()
  private let handled = Once()

  /// Sets the trap: on the first of `signals`, `handler` runs (on a queue of its own) with the
  /// signal's number. The handler usually ends with `exit(128 + signal)`.
  public init(signals: [Int32] = [SIGINT, SIGTERM], handler: @escaping @Sendable (Int32) -> Void) {
    self.signals = signals
    let queue = DispatchQueue(label: "ProcessSupport.TerminationTrap")
    var sources = [any DispatchSourceSignal]()
    let (once, handled) = (self.once, self.handled)
    for number in signals {
      signal(number, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
      source.setEventHandler {
        guard once.first() else { return }
        handler(number)
        _ = handled.first()
      }
      source.resume()
      sources.append(source)
    }
    self.sources = sources
  }

  /// Whether a signal was caught (its handler runs or has run).
  public var hasFired: Bool { once.isDone }

  /// When a signal was caught, waits until its handler has finished; a handler that exits the
  /// process never lets this return. For the main path of a program whose work fails because
  /// the handler is stopping what it depends on: it must not exit first, with its own status,
  /// while the handler is still cleaning up.
  public func awaitHandlerIfFired() async {
    guard hasFired else { return }
    while !handled.isDone { try? await Task.sleep(for: .milliseconds(10)) }
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
    var isDone: Bool {
      lock.lock()
      defer { lock.unlock() }
      return done
    }

    func first() -> Bool {
      lock.lock()
      defer { lock.unlock() }
      if done { return false }
      done = true
      return true
    }
  }
}
