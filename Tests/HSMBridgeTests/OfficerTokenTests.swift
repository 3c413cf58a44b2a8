import Crypto
import Custody
import Foundation
import HSMBridge
import TestSupport
import Testing

@Suite(.serialized) struct OfficerTokenTests {
  @Test func aTokenSignsChallengesThatVerifyUnderItsPublicKey() throws {
    let directory = try TemporaryDirectory()
    let pin = SecretBytes(utf8: "alice-pin-0001")
    let token = try OfficerToken.create(at: directory.appending("alice"), name: "alice", pin: pin, logger: testLogger)
    #expect(token.name == "alice")
    #expect(token.publicKey.count == 65 && token.publicKey[0] == 0x04)
    let challenge = Array("step 4 after 00ff".utf8)
    let signature = try token.sign(challenge, pin: pin)
    #expect(signature.count == 64)
    #expect(OfficerSignature.isValid(signature, over: challenge, publicKey: token.publicKey))
    // swift-crypto agrees independently.
    let key = try P256.Signing.PublicKey(x963Representation: token.publicKey)
    #expect(key.isValidSignature(try P256.Signing.ECDSASignature(rawRepresentation: signature), for: Data(challenge)))
    // Another challenge, another key: no.
    #expect(!OfficerSignature.isValid(signature, over: Array("step 5".utf8), publicKey: token.publicKey))
    var flipped = signature
    flipped[10] ^= 1
    #expect(!OfficerSignature.isValid(flipped, over: challenge, publicKey: token.publicKey))
  }

  @Test func theTokenKeyIsLockedDownAsThePolicySays() throws {
    let directory = try TemporaryDirectory()
    let pin = SecretBytes(utf8: "bob-pin-0002")
    let path = directory.appending("bob")
    let publicKey = try OfficerToken.create(at: path, name: "bob", pin: pin, logger: testLogger).publicKey
    let reopened = try OfficerToken.open(at: path, logger: testLogger)
    #expect(reopened.publicKey == publicKey)
    let partition = try reopened.device.partition(OfficerToken.partitionName)
    #expect(Set(try partition.mechanisms()) == [.ecKeyPairGen, .ecdsa, .sha256])
    let session = try partition.openSession()
    // Without the PIN only the public key is visible.
    #expect(try session.findObjects().count == 1)
    try session.login(.user, pin: pin)
    let report = try AttributePolicy.audit(partition: OfficerToken.partitionName, session: session)
    #expect(report.findings.map(\.description) == [])
    #expect(report.objects.count == 2)
    let privateKey = try #require(report.objects.first { $0.objectClass == .privateKey })
    #expect(privateKey.readings[.sign] == .value(.sign(true)))
    #expect(privateKey.readings[.extractable] == .value(.extractable(false)))
    #expect(privateKey.readings[.sensitive] == .value(.sensitive(true)))
    #expect(privateKey.readings[.private] == .value(.private(true)))
    #expect(privateKey.readings[.value] == .sensitive)
  }

  @Test func aWrongPINIsRefusedByName() throws {
    let directory = try TemporaryDirectory()
    let token = try OfficerToken.create(
      at: directory.appending("carol"), name: "carol", pin: SecretBytes(utf8: "carol-pin-3"), logger: testLogger)
    do {
      _ = try token.sign([1, 2, 3], pin: SecretBytes(utf8: "not-carols-pin"))
      Issue.record("a wrong PIN signed")
    } catch let error as HSMBridgeError {
      #expect(error.code == .officerRefused)
      #expect(error.reason.contains("carol"))
      #expect(error.reason.contains("CKR_PIN_INCORRECT"))
      #expect(!error.reason.contains("not-carols-pin"))
    }
  }

  @Test func creationRefusesAnExistingDirectoryAShortPINAndABadName() throws {
    let directory = try TemporaryDirectory()
    let path = directory.appending("dave")
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    try Data("keep".utf8).write(to: URL(fileURLWithPath: path + "/mine"))
    #expect(throws: HSMBridgeError.self) {
      _ = try OfficerToken.create(at: path, name: "dave", pin: SecretBytes(utf8: "dave-pin"), logger: testLogger)
    }
    #expect(try FileManager.default.contentsOfDirectory(atPath: path) == ["mine"])
    #expect(throws: HSMBridgeError.self) {
      _ = try OfficerToken.create(
        at: directory.appending("erin"), name: "erin", pin: SecretBytes(utf8: "123"), logger: testLogger)
    }
    #expect(throws: HSMBridgeError.self) {
      _ = try OfficerToken.create(
        at: directory.appending("x"), name: "bad name/", pin: SecretBytes(utf8: "1234"), logger: testLogger)
    }
    #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() == ["dave"])
  }
}

@Suite struct ShareFileTests {
  @Test func aShareOpensOnlyWithItsPasswordAndItsBinding() throws {
    let directory = try TemporaryDirectory()
    let share = ShamirShare(index: 2, value: SecretBytes([UInt8](repeating: 0x5C, count: 32)))
    let password = SecretBytes(utf8: "correct horse battery staple")
    let file = try UnsealShareFile.seal(
      share, holder: "grace", device: "0011223344556677", threshold: 2, count: 3, password: password,
      salt: [UInt8](repeating: 7, count: 16), nonce: [UInt8](repeating: 9, count: 12))
    #expect(file.kdf.t == 3 && file.kdf.m == 65536 && file.kdf.p == 4 && file.kdf.algorithm == "argon2id")
    let path = directory.appending("grace.share")
    try file.write(to: path)
    let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
    #expect(mode == 0o600)
    // The share's bytes are not in the file.
    let text = try String(contentsOfFile: path, encoding: .utf8)
    #expect(!text.contains(String(repeating: "5c", count: 8)))
    let read = try UnsealShareFile.read(path)
    let opened = try read.open(password: password, path: path)
    #expect(opened.index == 2)
    #expect(opened.value.withUnsafeBytes { Array($0) } == [UInt8](repeating: 0x5C, count: 32))
    do {
      _ = try read.open(password: SecretBytes(utf8: "wrong"), path: path)
      Issue.record("a wrong password opened the share")
    } catch let error as HSMBridgeError {
      #expect(error.code == .wrongPassword)
      #expect(error.reason.contains("grace"))
    }
    // Relabelled for another holder, it no longer opens.
    var relabelled = read
    relabelled.holder = "heidi"
    #expect(throws: HSMBridgeError.self) { _ = try relabelled.open(password: password, path: path) }
    // Never overwritten.
    #expect(throws: HSMBridgeError.self) { try file.write(to: path) }
  }

  @Test func theCryptoUserVerifierAcceptsOnlyItsCredential() throws {
    let credential = try CryptoUserCredential.make(fromRandom: SecretBytes([UInt8](repeating: 0xAB, count: 32)))
    #expect(
      credential.withUnsafeBytes { String(decoding: $0, as: UTF8.self) } == "custos-cu1-"
        + String(repeating: "ab", count: 32))
    let verifier = try CredentialVerifier.make(for: credential, salt: [UInt8](repeating: 1, count: 16))
    #expect(verifier.kdf == Argon2.Record(salt: [UInt8](repeating: 1, count: 16), parameters: .custos))
    #expect(try verifier.verify(credential))
    #expect(try !verifier.verify(SecretBytes(utf8: "custos-cu1-" + String(repeating: "ab", count: 31) + "ac")))
    #expect(!verifier.hash.contains("abab"))
  }
}
