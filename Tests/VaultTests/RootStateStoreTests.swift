import Custody
import Foundation
import HSMBridge
import TestSupport
import Testing
import Vault

/// A state for epoch `epoch` that no other epoch has.
func sampleState(_ epoch: UInt64) -> RootState {
  epoch == 0
    ? .genesis : RootState(epoch: epoch, leafCount: epoch * 3 + 1, root: Hash256.sha256(Array("state \(epoch)".utf8)))
}

/// Runs `body` with a user session on the custody partition in a fresh SoftHSM instance: when
/// it returns, the instance is finalised, so the next call reads the token files anew, as a
/// restarted device would.
func withCustodySession<R>(_ test: TestDevice, _ body: (Session) throws -> R) throws -> R {
  let session = try test.userSession("custody")
  return try body(session)
}

/// The object files of the custody partition's token (but token.object) and their bytes.
func objectFiles(_ test: TestDevice) throws -> [String: Data] {
  let tokens = test.device.tokenDirectory(ofPartition: "custody")
  var files = [String: Data]()
  for token in try FileManager.default.contentsOfDirectory(atPath: tokens) {
    for name in try FileManager.default.contentsOfDirectory(atPath: tokens + "/" + token)
    where name.hasSuffix(".object") && name != "token.object" {
      let path = tokens + "/" + token + "/" + name
      files[path] = try Data(contentsOf: URL(fileURLWithPath: path))
    }
  }
  return files
}

@Suite(.serialized) struct RootStateStoreTests {
  @Test func initializeCreatesTwoMarkedPrivateSlotsHoldingGenesis() throws {
    let test = try TestDevice(partitions: ["custody"])
    try withCustodySession(test) { session throws in
      let store = try RootStateStore.initialize(session: session, logger: testLogger)
      #expect(store.state == .genesis)
      let objects = try session.findObjects([.class(.data), .application(RootStateStore.application)])
      #expect(objects.count == 2)
      var names = [String]()
      for object in objects {
        let readings = try session.attributes(
          [.token, .private, .application, .value, .label, .modifiable, .copyable], of: object)
        #expect(readings[0] == .value(.token(true)))
        #expect(readings[1] == .value(.private(true)))
        #expect(readings[2] == .value(.application("custos.root")))
        guard case .value(.value(let value)) = readings[3], case .value(.label(let label)) = readings[4] else {
          Issue.record("slot without value or label")
          continue
        }
        let name = String(decoding: value, as: UTF8.self)
        names.append(name)
        #expect(label.hasPrefix(name + "|1|0|1|" + Hash256.zero.hex + "|"))
        #expect(readings[5] == .value(.modifiable(true)))
        #expect(readings[6] == .value(.copyable(false)))
      }
      #expect(names.sorted() == ["custos.root.a", "custos.root.b"])
    }
    // Invisible without logging in: the objects are private.
    let anonymous = try test.device.partition("custody").openSession(readWrite: false)
    #expect(try anonymous.findObjects([.application(RootStateStore.application)]).isEmpty)
  }

  @Test func commitsAdvanceOneEpochAtATimeAndSurviveARestart() throws {
    let test = try TestDevice(partitions: ["custody"])
    _ = try withCustodySession(test) { try RootStateStore.initialize(session: $0, logger: testLogger) }
    for epoch in UInt64(1)...6 {
      try withCustodySession(test) { session throws in
        let store = try RootStateStore.open(session: session, logger: testLogger)
        #expect(store.state == sampleState(epoch - 1))
        try store.commit(sampleState(epoch))
        #expect(store.state == sampleState(epoch))
        // Each commit rewrote one slot: the other still holds the epoch before.
        let labels = try session.findObjects([.application(RootStateStore.application)]).compactMap {
          if case .label(let text) = try session.attribute(.label, of: $0) { return text }
          return nil
        }
        let epochs = labels.map { $0.split(separator: "|")[2] }.sorted()
        #expect(epochs == ["\(epoch - 1)", "\(epoch)"])
      }
    }
    try withCustodySession(test) { session throws in
      #expect(try RootStateStore.open(session: session, logger: testLogger).state == sampleState(6))
    }
  }

  @Test func refusesAnEpochOutOfOrderAndKeepsTheState() throws {
    let test = try TestDevice(partitions: ["custody"])
    try withCustodySession(test) { session throws in
      let store = try RootStateStore.initialize(session: session, logger: testLogger)
      try store.commit(sampleState(1))
      for wrong in [UInt64(1), 3, 0] {
        let error = #expect(throws: VaultError.self) { try store.commit(sampleState(wrong)) }
        #expect(error?.code == .epochOutOfOrder)
      }
      #expect(store.state == sampleState(1))
      #expect(try RootStateStore.open(session: session, logger: testLogger).state == sampleState(1))
    }
  }

  @Test func refusesToInitializeTwiceOrToOpenAFreshPartition() throws {
    let test = try TestDevice(partitions: ["custody"])
    try withCustodySession(test) { session throws in
      let missing = #expect(throws: VaultError.self) { try RootStateStore.open(session: session, logger: testLogger) }
      #expect(missing?.code == .rootStateMissing)
      let store = try RootStateStore.initialize(session: session, logger: testLogger)
      try store.commit(sampleState(1))
      let twice = #expect(throws: VaultError.self) {
        try RootStateStore.initialize(session: session, logger: testLogger)
      }
      #expect(twice?.code == .rootStateExists)
      #expect(try RootStateStore.open(session: session, logger: testLogger).state == sampleState(1))
    }
  }

  /// What a crash in the middle of SoftHSM's rewrite of an object file can leave (it truncates
  /// the file, then writes it whole), and worse.
  enum Damage: String, CaseIterable {
    case emptied, halved, missingLastByte, flippedByte, deleted
  }

  @Test(arguments: Damage.allCases)
  func aDamagedNewestSlotFallsBackToThePreviousEpochAndIsRewritten(damage: Damage) throws {
    let test = try TestDevice(partitions: ["custody"])
    // The newest slot is the file the last commit rewrote (found by its bytes: modification
    // times of two quick commits can be equal).
    var before = [String: Data]()
    try withCustodySession(test) { session throws in
      let store = try RootStateStore.initialize(session: session, logger: testLogger)
      for epoch in UInt64(1)...2 { try store.commit(sampleState(epoch)) }
      before = try objectFiles(test)
      try store.commit(sampleState(3))
    }
    let rewritten = try objectFiles(test).filter { before[$0.key] != $0.value }.map(\.key)
    try #require(rewritten.count == 1)
    let newest = rewritten[0]
    var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: newest)))
    switch damage {
    case .emptied: bytes = []
    case .halved: bytes = Array(bytes.prefix(bytes.count / 2))
    case .missingLastByte: bytes.removeLast()
    case .flippedByte: bytes[bytes.count - 20] ^= 0x01
    case .deleted: break
    }
    if damage == .deleted {
      try FileManager.default.removeItem(atPath: newest)
    } else {
      try Data(bytes).write(to: URL(fileURLWithPath: newest))
    }
    try withCustodySession(test) { session throws in
      let store = try RootStateStore.open(session: session, logger: testLogger)
      #expect(store.state == sampleState(2), "after \(damage) the previous epoch must be read")
      try store.commit(sampleState(3))
      try store.commit(sampleState(4))
    }
    try withCustodySession(test) { session throws in
      #expect(try RootStateStore.open(session: session, logger: testLogger).state == sampleState(4))
      #expect(try session.findObjects([.application(RootStateStore.application)]).count == 2)
    }
  }

  @Test func withBothSlotsDamagedItRefusesToOpenRatherThanStartAfresh() throws {
    let test = try TestDevice(partitions: ["custody"])
    try withCustodySession(test) { session throws in
      let store = try RootStateStore.initialize(session: session, logger: testLogger)
      try store.commit(sampleState(1))
      // A label rewritten without the right tag, as a bad write or a tamperer would leave it.
      for object in try session.findObjects([.application(RootStateStore.application)]) {
        guard case .label(let label) = try session.attribute(.label, of: object) else { continue }
        try session.setAttributes([.label(label.replacingOccurrences(of: "|1|", with: "|9|"))], of: object)
      }
    }
    try withCustodySession(test) { session throws in
      let error = #expect(throws: VaultError.self) { try RootStateStore.open(session: session, logger: testLogger) }
      #expect(error?.code == .rootStateCorrupt)
      #expect(error?.reason.contains("integrity tag") == true)
    }
  }

  /// The custody partition's real allow-list (softhsm/custody.mechanisms) is enough: the root
  /// state uses objects, not mechanisms.
  @Test func worksUnderTheCustodyPartitionsOwnAllowList() throws {
    let test = try TestDevice(partitions: ["custody"], profile: nil)
    let device = test.device
    #expect(device.manifest.partitions[0].profile == "custody")
    let session = try device.partition("custody").openSession(readWrite: true)
    try session.login(.user, pin: SecretBytes(utf8: TestPINs.user))
    let store = try RootStateStore.initialize(
      session: session, syncDirectory: device.tokenDirectory(ofPartition: "custody"), logger: testLogger)
    try store.commit(sampleState(1))
    #expect(try RootStateStore.open(session: session, logger: testLogger).state == sampleState(1))
  }

  /// The first flush syncs the whole token directory (what is on disk is unknown); after that
  /// a commit syncs the one object file its label rewrite changed, and no directory.
  @Test func aCommitSyncsExactlyTheFilesItChanged() throws {
    let test = try TestDevice(partitions: ["custody"])
    let directory = test.device.tokenDirectory(ofPartition: "custody")
    try withCustodySession(test) { session throws in
      let store = try RootStateStore.initialize(session: session, syncDirectory: directory, logger: testLogger)
      let first = try #require(store.lastSynced)
      let objects = try objectFiles(test).keys.map { String($0.dropFirst(directory.count + 1)) }
      #expect(objects.count == 2)
      #expect(Set(first.files).isSuperset(of: objects))
      #expect(first.files.contains { $0.hasSuffix("/token.object") })
      #expect(first.directories.count == 2)
      #expect(first.directories.contains("."))
      for epoch in UInt64(1)...4 {
        let before = try objectFiles(test)
        try store.commit(sampleState(epoch))
        let changed = try objectFiles(test).filter { before[$0.key] != $0.value }.keys
          .map { String($0.dropFirst(directory.count + 1)) }
        let synced = try #require(store.lastSynced)
        #expect(changed.count == 1)
        #expect(synced.files == changed)
        #expect(synced.directories.isEmpty)
      }
    }
    try withCustodySession(test) { session throws in
      #expect(try RootStateStore.open(session: session, logger: testLogger).state == sampleState(4))
    }
  }

  @Test func flushingToDiskKeepsTheSameState() throws {
    let test = try TestDevice(partitions: ["custody"])
    let directory = test.device.tokenDirectory(ofPartition: "custody")
    try withCustodySession(test) { session throws in
      let store = try RootStateStore.initialize(session: session, syncDirectory: directory, logger: testLogger)
      try store.commit(sampleState(1))
    }
    try withCustodySession(test) { session throws in
      #expect(try RootStateStore.open(session: session, logger: testLogger).state == sampleState(1))
    }
  }
}
