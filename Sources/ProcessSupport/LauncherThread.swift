import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The one thread that starts every `ChildProcess`, for two Linux facts measured on this
/// toolchain:
/// - a parent-death signal is sent when the *thread* that started the child ends, not the
///   process; Dispatch's worker threads (where Swift's async code runs) end after a few idle
///   seconds, and a child started from one would be sent SIGTERM then. This thread never ends,
///   so its children are signalled only when the process dies;
/// - a child inherits the signal mask of the thread that started it, and Dispatch's worker
///   threads block SIGTERM and SIGINT (a `sleep` started from a Task ignores SIGTERM until it
///   unblocks it, which it never does). This thread blocks nothing.
final class LauncherThread: @unchecked Sendable {
  static let shared = LauncherThread()

  private let condition = NSCondition()
  private var jobs = [Job]()

  private final class Job: @unchecked Sendable {
    let process: Process
    let done = DispatchSemaphore(value: 0)
    var failure: (any Error)?
    init(_ process: Process) { self.process = process }
  }

  private init() {
    let thread = Thread { [self] in serve() }
    thread.name = "ProcessSupport.launcher"
    thread.start()
  }

  /// Runs `process.run()` on this thread and waits for it; rethrows what `run()` threw.
  func run(_ process: Process) throws {
    let job = Job(process)
    condition.lock()
    jobs.append(job)
    condition.signal()
    condition.unlock()
    job.done.wait()
    if let failure = job.failure { throw failure }
  }

  private func serve() {
    var nothing = sigset_t()
    sigemptyset(&nothing)
    pthread_sigmask(SIG_SETMASK, &nothing, nil)
    while true {
      condition.lock()
      while jobs.isEmpty { condition.wait() }
      let job = jobs.removeFirst()
      condition.unlock()
      do {
        try job.process.run()
      } catch {
        job.failure = error
      }
      job.done.signal()
    }
  }
}
