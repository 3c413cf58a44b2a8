import Custody
import Foundation
import HSMBridge
import ProcessSupport
import TestSupport
import Testing
import Vault

/// The state Tests/RootStateWriter commits at `epoch` (the same rule, written twice on purpose:
/// the test checks the writer, not itself).
private func writerState(_ epoch: UInt64) -> RootState {
  epoch == 0
    ? .genesis
    : RootState(epoch: epoch, leafCount: epoch + 1, root: Hash256.sha256(Array("crash-test/\(epoch)".utf8)))
}

@Suite(.serialized) struct RootStateCrashTests {
  /// The writer built beside this test binary.
  static var writer: String { builtExecutable("root-state-writer") }

  @Test func aWriterKilledAtRandomPointsAlwaysLeavesTheOldOrTheNewEpoch() throws {
    let (directory, path) = try TestDevice.createClosed(partitions: ["custody"]) { device in
      let session = try device.partition("custody").openSession(readWrite: true)
      try session.login(.user, pin: SecretBytes(utf8: TestPINs.user))
      _ = try RootStateStore.initialize(session: session, logger: testLogger)
    }
    defer { _ = directory }
    var random = SystemRandomNumberGenerator()
    var previous: UInt64 = 0
    var sawCommits = 0
    for round in 0..<40 {
      let child = ChildProcess(executable: Self.writer, arguments: [path])
      let input = Pipe()
      let output = Pipe()
      child.process.standardInput = input
      child.process.standardOutput = output
      child.process.standardError = FileHandle.nullDevice
      try child.start()
      input.fileHandleForWriting.write(Data((TestPINs.user + "\n").utf8))
      try input.fileHandleForWriting.close()
      // Wait until it has opened the store, then let it commit for a random while.
      var text = ""
      while !text.contains("\n") {
        let chunk = output.fileHandleForReading.availableData
        if chunk.isEmpty { break }
        text += String(decoding: chunk, as: UTF8.self)
      }
      #expect(text.hasPrefix("opened \(previous)\n"), "round \(round): the writer reopened at \(text.prefix(40))")
      usleep(UInt32.random(in: 0...25_000, using: &random))
      child.signalAndAwaitExit(SIGKILL)
      text += String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
      let lines = text.split(separator: "\n")
      #expect(
        !lines.contains { $0.hasPrefix("error") || $0.hasPrefix("broken") }, "round \(round): \(lines.last ?? "")")
      let reported = lines.compactMap { $0.hasPrefix("committed ") ? UInt64($0.dropFirst(10)) : nil }.last ?? previous
      sawCommits += lines.count - 1

      let device = try Device.open(at: path, logger: testLogger)
      let session = try device.partition("custody").openSession(readWrite: true)
      try session.login(.user, pin: SecretBytes(utf8: TestPINs.user))
      let state = try RootStateStore.open(session: session, logger: testLogger).state
      // The last commit it reported, or the one it was in the middle of: never anything else.
      #expect(
        state.epoch == reported || state.epoch == reported + 1,
        "round \(round): reported \(reported), found \(state.epoch)")
      #expect(state == writerState(state.epoch), "round \(round): epoch \(state.epoch) holds a state it never wrote")
      previous = state.epoch
    }
    #expect(sawCommits > 0, "the writer never got to commit before it was killed")
  }
}
