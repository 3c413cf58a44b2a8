// A child process for the crash-safety test (Tests/VaultTests/RootStateCrashTests.swift):
// opens the root state of DEVICE's custody partition and commits epoch after epoch, printing
// "committed N" after each commit returns, until it is killed. Epoch N always carries the
// state `expected(N)`, so the parent can tell an old, a new and a broken state apart.
// The user PIN comes on standard input, never in the arguments.
import Custody
import Foundation
import HSMBridge
import Logging
import Vault

func expected(_ epoch: UInt64) -> RootState {
  epoch == 0
    ? .genesis
    : RootState(epoch: epoch, leafCount: epoch + 1, root: Hash256.sha256(Array("crash-test/\(epoch)".utf8)))
}

/// One line on standard output, written at once (no buffering to lose when killed).
func say(_ line: String) {
  FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

var logger = Logger(label: "custos.root-state-writer")
logger.logLevel = .error
guard CommandLine.arguments.count == 2, let pin = readLine() else {
  FileHandle.standardError.write(Data("usage: root-state-writer DEVICE (user PIN on stdin)\n".utf8))
  exit(2)
}
do {
  let device = try Device.open(at: CommandLine.arguments[1], logger: logger)
  let session = try device.partition("custody").openSession(readWrite: true)
  try session.login(.user, pin: SecretBytes(utf8: pin))
  let store = try RootStateStore.open(session: session, logger: logger)
  guard store.state == expected(store.state.epoch) else {
    say("broken \(store.state)")
    exit(3)
  }
  say("opened \(store.state.epoch)")
  while true {
    let next = expected(store.state.epoch + 1)
    try store.commit(next)
    say("committed \(next.epoch)")
  }
} catch {
  say("error \(error)")
  exit(1)
}
