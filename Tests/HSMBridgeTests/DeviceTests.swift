import Custody
import Foundation
import HSMBridge
import TestSupport
import Testing

@Suite(.serialized) struct DeviceTests {
  @Test func twoDevicesInOneProcessSeeOnlyTheirOwnTokens() throws {
    let first = try TestDevice(partitions: ["alpha"], name: "first")
    let second = try TestDevice(partitions: ["beta", "gamma"], name: "second")
    let alpha = try first.device.partition("alpha")
    let beta = try second.device.partition("beta")
    let gamma = try second.device.partition("gamma")
    // Each partition is its own module instance (private copies of the library).
    #expect(
      [alpha.module.isPrivateCopy, beta.module.isPrivateCopy, gamma.module.isPrivateCopy].filter { $0 }.count >= 2)
    func labels(_ partition: Partition) throws -> [String] {
      try partition.module.slots().map { try partition.module.tokenInfo($0).label }.filter { !$0.isEmpty }
    }
    #expect(try labels(alpha) == ["alpha"])
    #expect(try labels(beta) == ["beta"])
    #expect(try labels(gamma) == ["gamma"])
    // An object made in one is not in the other.
    let alphaSession = try first.userSession("alpha")
    _ = try alphaSession.createObject([.class(.data), .token(true), .label("only-in-alpha")])
    let betaSession = try second.userSession("beta")
    #expect(try betaSession.findObjects([.label("only-in-alpha")]).isEmpty)
    #expect(try alphaSession.findObjects([.label("only-in-alpha")]).count == 1)
    // Both keep working side by side.
    let key = try betaSession.generateKey(
      .aesKeyGen, [.class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .encrypt(true), .decrypt(true)])
    let gcm = Mechanism.aesGCM(iv: [UInt8](repeating: 0, count: 12), aad: [])
    #expect(try betaSession.decrypt(gcm, key: key, try betaSession.encrypt(gcm, key: key, [1])) == [1])
  }

  @Test func tokenObjectsPersistAcrossReopen() throws {
    let directory = try TemporaryDirectory()
    let path = directory.appending("device")
    do {
      let device = try Device.create(
        at: path, name: "persist",
        partitions: [
          PartitionSetup(
            name: "scratch", soPIN: SecretBytes(utf8: TestPINs.so), userPIN: SecretBytes(utf8: TestPINs.user))
        ],
        logger: testLogger)
      let session = try device.partition("scratch").openSession()
      try session.login(.user, pin: SecretBytes(utf8: TestPINs.user))
      _ = try session.createObject([.class(.data), .token(true), .private(true), .label("kept")])
    }
    let reopened = try Device.open(at: path, logger: testLogger)
    #expect(reopened.manifest.name == "persist")
    #expect(try reopened.storedObjectCount(ofPartition: "scratch") == 1)
    let session = try reopened.partition("scratch").openSession()
    try session.login(.user, pin: SecretBytes(utf8: TestPINs.user))
    #expect(try session.findObjects([.label("kept")]).count == 1)
  }

  @Test func aSecondOpenOfALockedDeviceIsRefused() throws {
    let test = try TestDevice()
    let error = #expect(throws: HSMBridgeError.self) {
      _ = try Device.open(at: test.device.directory, logger: testLogger)
    }
    #expect(error?.code == .deviceLocked)
  }

  @Test func anotherProcessCannotTakeTheLock() throws {
    let test = try TestDevice()
    // flock(1) from util-linux, a process that is not us.
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/flock")
    process.arguments = ["--nonblock", "--exclusive", test.device.directory + "/device.lock", "true"]
    try process.run()
    process.waitUntilExit()
    #expect(process.terminationStatus != 0)
  }

  @Test func createRefusesAnExistingDirectoryAndLeavesItUntouched() throws {
    let directory = try TemporaryDirectory()
    let path = directory.appending("device")
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    try Data("keep me".utf8).write(to: URL(fileURLWithPath: path + "/note"))
    let error = #expect(throws: HSMBridgeError.self) {
      _ = try Device.create(
        at: path, name: "x",
        partitions: [
          PartitionSetup(
            name: "scratch", soPIN: SecretBytes(utf8: TestPINs.so), userPIN: SecretBytes(utf8: TestPINs.user))
        ],
        logger: testLogger)
    }
    #expect(error?.code == .deviceExists)
    #expect(try FileManager.default.contentsOfDirectory(atPath: path) == ["note"])
  }

  struct Refusal: Error {}

  @Test func aFailedCreationLeavesNothingBehind() throws {
    let directory = try TemporaryDirectory()
    let path = directory.appending("device")
    #expect(throws: Refusal.self) {
      _ = try Device.create(
        at: path, name: "doomed",
        partitions: [
          PartitionSetup(
            name: "scratch", soPIN: SecretBytes(utf8: TestPINs.so), userPIN: SecretBytes(utf8: TestPINs.user))
        ],
        logger: testLogger
      ) { device in
        let session = try device.partition("scratch").openSession()
        try session.login(.user, pin: SecretBytes(utf8: TestPINs.user))
        _ = try session.createObject([.class(.data), .token(true), .label("half-made")])
        throw Refusal()
      }
    }
    #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).isEmpty)
  }

  @Test func badPartitionNamesAndPINsAreRefusedBeforeAnythingIsWritten() throws {
    let directory = try TemporaryDirectory()
    for name in ["", "Upper", "with space", "-dash", String(repeating: "a", count: 33)] {
      let error = #expect(throws: HSMBridgeError.self) {
        _ = try Device.create(
          at: directory.appending("device"), name: "x",
          partitions: [
            PartitionSetup(name: name, soPIN: SecretBytes(utf8: TestPINs.so), userPIN: SecretBytes(utf8: TestPINs.user))
          ],
          logger: testLogger)
      }
      #expect(error?.code == .invalidArgument)
    }
    // A PIN SoftHSM refuses (too short) fails C_InitToken and leaves no device. SoftHSM 2.6.1
    // answers a short SO PIN at C_InitToken with CKR_PIN_INCORRECT (C_InitPIN says
    // CKR_PIN_LEN_RANGE).
    let error = #expect(throws: PKCS11Error.self) {
      _ = try Device.create(
        at: directory.appending("device"), name: "x",
        partitions: [
          PartitionSetup(name: "scratch", soPIN: SecretBytes(utf8: "12"), userPIN: SecretBytes(utf8: TestPINs.user))
        ],
        logger: testLogger)
    }
    #expect(error?.function == "C_InitToken")
    #expect(error?.code == .pinIncorrect)
    #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).isEmpty)
  }

  @Test func deviceDirectoryIsPrivate() throws {
    let test = try TestDevice()
    let path = test.device.directory
    let attributes = try FileManager.default.attributesOfItem(atPath: path)
    #expect((attributes[.posixPermissions] as? Int) == 0o700)
    let walker = FileManager.default.enumerator(atPath: path)!
    for case let relative as String in walker {
      let mode = try FileManager.default.attributesOfItem(atPath: path + "/" + relative)[.posixPermissions] as? Int
      #expect(mode.map { $0 & 0o077 } == 0, "\(relative) is readable by others")
    }
    let manifest = try JSONDecoder().decode(
      DeviceManifest.self, from: Data(contentsOf: URL(fileURLWithPath: path + "/device.json")))
    #expect(manifest.partitions.map(\.name) == ["scratch"])
    #expect(manifest.serial.count == 16)
  }

  @Test func allowListRestrictsThePartitionsMechanisms() throws {
    let directory = try TemporaryDirectory()
    let device = try Device.create(
      at: directory.appending("device"), name: "admin-only",
      partitions: [
        PartitionSetup(name: "admin", soPIN: SecretBytes(utf8: TestPINs.so), userPIN: SecretBytes(utf8: TestPINs.user))
      ],
      logger: testLogger)
    let partition = try device.partition("admin")
    let offered = try partition.mechanisms()
    #expect(Set(offered) == [.ecKeyPairGen, .ecdsa, .sha256])
    let session = try partition.openSession()
    try session.login(.user, pin: SecretBytes(utf8: TestPINs.user))
    // SoftHSM applies the allow-list to every operation that uses a key...
    let key = try session.generateKey(
      .aesKeyGen,
      [.class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .encrypt(true), .derive(true), .sign(true)])
    #expect(throws: PKCS11Error(code: .mechanismInvalid, function: "C_EncryptInit")) {
      _ = try session.encrypt(.aesGCM(iv: [UInt8](repeating: 0, count: 12), aad: []), key: key, [1])
    }
    #expect(throws: PKCS11Error(code: .mechanismInvalid, function: "C_DeriveKey")) {
      _ = try session.deriveKey(
        .aesECBEncryptData([UInt8](repeating: 0, count: 32)), baseKey: key,
        [.class(.secretKey), .keyType(.aes), .valueLength(32), .token(false)])
    }
    #expect(throws: PKCS11Error(code: .mechanismInvalid, function: "C_SignInit")) {
      _ = try session.sign(.sha256HMAC, key: key, [1])
    }
    // ...but not to key generation or digests (measured on 2.6.1; DESIGN.md section 3). If a
    // SoftHSM upgrade starts refusing these, this test says so.
    #expect(throws: Never.self) { _ = try session.digest(.sha512, [1]) }
    let configuration = try String(contentsOfFile: device.configurationPath(ofPartition: "admin"), encoding: .utf8)
    #expect(configuration.contains("slots.mechanisms = CKM_EC_KEY_PAIR_GEN,CKM_ECDSA,CKM_SHA256"))
    #expect(configuration.contains("directories.tokendir = \(device.tokenDirectory(ofPartition: "admin"))"))
  }

  @Test func everyProfileParses() throws {
    for name in MechanismAllowList.profileNames {
      let profile = try #require(MechanismAllowList.profile(name))
      #expect(!profile.mechanisms.isEmpty)
    }
    #expect(MechanismAllowList.forPartition("custody").profile == "custody")
    #expect(MechanismAllowList.forPartition("anything").profile == "default")
    let error = #expect(throws: HSMBridgeError.self) {
      _ = try MechanismAllowList(profile: "bad", text: "CKM_AES_GCM\nCKM_NOPE # typo\n")
    }
    #expect(error?.reason.contains("line 2") == true)
  }

  @Test func aMovedDeviceStillOpens() throws {
    let directory = try TemporaryDirectory()
    do {
      _ = try Device.create(
        at: directory.appending("here"), name: "mover",
        partitions: [
          PartitionSetup(
            name: "scratch", soPIN: SecretBytes(utf8: TestPINs.so), userPIN: SecretBytes(utf8: TestPINs.user))
        ],
        logger: testLogger)
    }
    try FileManager.default.moveItem(atPath: directory.appending("here"), toPath: directory.appending("there"))
    let device = try Device.open(at: directory.appending("there"), logger: testLogger)
    let session = try device.partition("scratch").openSession()
    try session.login(.user, pin: SecretBytes(utf8: TestPINs.user))
    #expect(try device.partition("scratch").tokenInfo().label == "scratch")
  }
}
