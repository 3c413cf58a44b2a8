import Foundation
import ProcessSupport

#if canImport(Glibc)
import Glibc
#endif

// A parent for ProcessSupportTests, shaped like `custos bench api`: it sets a SIGINT/SIGTERM
// trap, starts `sleep 600` as a ChildProcess from a detached task (a Dispatch worker thread,
// where async code runs), prints `child PID`, and waits to be killed. On SIGINT or SIGTERM the
// trap stops the child, prints `stopped child PID: HOW` and exits with 128 + the signal.

/// One line on standard output, unbuffered.
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

let child = ChildProcess(executable: "/bin/sleep", arguments: ["600"])
let trap = TerminationTrap { signal in
  let ended = child.signalAndAwaitExit(SIGTERM, limit: 10)
  say("stopped child \(child.pid): \(ended)")
  exit(128 + signal)
}
let pid = try await Task.detached {
  try child.start()
  return child.pid
}.value
say("child \(pid)")
while true { try await Task.sleep(for: .seconds(3600)) }
