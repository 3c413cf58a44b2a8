import Crypto
import Custody
import Foundation
import HSMBridge
import TestSupport
import Testing
import Vault
import VaultWire

#if canImport(Glibc)
import Glibc
#endif

/// The real `custos-hsm` process on devices from the init-device rehearsal: its socket, the
/// sealed start, the quorum unseal, the lockouts, Crypto User sessions, the lock, shutdown.
@Suite(.serialized) struct DeviceProcessTests {
  @Test func aFreshProcessIsSealedRefusesVaultCallsAndListensOnA0600Socket() async throws {
    let rehearsed = try RehearsedDevice.get()
    let copy = try rehearsed.copy()
    let run = copy.directory
    let hsm = try HSMProcess(device: copy.device, socket: socketPath(run))
    #expect(hsm.address == "unix:\(socketPath(run))")

    // The socket: 0600, a socket, ours.
    var status = stat()
    #expect(lstat(socketPath(run), &status) == 0)
    #expect(status.st_mode & S_IFMT == S_IFSOCK)
    #expect(status.st_mode & 0o777 == 0o600)
    #expect(status.st_uid == getuid())

    let client = try hsm.client()
    let device = try await client.status()
    #expect(device.state == .sealed)
    #expect(device.serial == rehearsed.serial)
    #expect(device.root == nil)
    #expect(device.unseal.threshold == 2 && device.unseal.shares == 3 && device.unseal.progress == 0)
    // The measurement is the SHA-256 of the custos-hsm executable.
    let binary = try Data(contentsOf: URL(fileURLWithPath: builtExecutable("custos-hsm")))
    #expect(device.measurement == Array(SHA256.hash(data: binary)))

    // Without a session every vault call is refused; with one, SEALED refuses them.
    let none = VaultSession(token: SecretBytes(utf8: ""), expiresAt: Date(), idleTimeout: .seconds(0))
    #expect(await refusal { try await client.rootState(none) }?.code == .sessionRequired)
    let session = try await client.login(credential: try rehearsed.cryptoUserCredential())
    #expect(abs(session.expiresAt.timeIntervalSinceNow - 900) < 60)
    let sealed = await refusal { try await client.rootState(session) }
    #expect(sealed?.code == .sealed)
    #expect(sealed?.status == .failedPrecondition)
    let query = PublicKeyQuery(walletData: SampleWallet.encoding(id: 1), sealedSeed: [], path: "m/0")
    #expect(await refusal { try await client.publicKey(query, session: session) }?.code == .sealed)
    let call = VaultCall(envelope: [1], approvals: [], proof: nil)
    #expect(await refusal { try await client.sign(call, session: session) }?.code == .sealed)
    #expect(await refusal { try await client.createWallet(call, session: session) }?.code == .sealed)
    await client.close()
    #expect(hsm.stop().status == 0)
    #expect(!FileManager.default.fileExists(atPath: socketPath(run)), "a graceful stop removes the socket")
  }

  @Test func twoOfThreeSharesUnsealAndOneIsNotEnoughAndAWrongPasswordIsCounted() async throws {
    let rehearsed = try RehearsedDevice.get()
    let copy = try rehearsed.copy()
    let hsm = try HSMProcess(device: copy.device, socket: socketPath(copy.directory))
    let client = try hsm.client()

    // A wrong password: refused and counted.
    let frank = try rehearsed.unsealShare("frank")
    let wrong = await refusal {
      try await client.unseal(shareFile: frank.file, password: SecretBytes(utf8: "not frank's password"))
    }
    #expect(wrong?.code == .wrongPassword)
    #expect(wrong?.attemptsBeforeLockout == 4)
    #expect(try await client.status().unseal.lockout.failures == 1)

    // One share: progress 1 of 2, still SEALED.
    let first = try await client.unseal(shareFile: frank.file, password: frank.password)
    #expect(first.state == .sealed)
    #expect(first.progress.progress == 1 && first.progress.threshold == 2 && first.progress.holders == ["frank"])
    let session = try await client.login(credential: try rehearsed.cryptoUserCredential())
    #expect(await refusal { try await client.rootState(session) }?.code == .sealed)

    // The same share again, and a file that is no share: refused, not counted.
    let twice = await refusal { try await client.unseal(shareFile: frank.file, password: frank.password) }
    #expect(twice?.code == .shareRefused)
    #expect(twice?.message.contains("given twice") == true)
    let garbage = await refusal { try await client.unseal(shareFile: Array("{}".utf8), password: frank.password) }
    #expect(garbage?.code == .invalidArgument)
    #expect(try await client.status().unseal.lockout.failures == 1)

    // The second holder: READY, the failures cleared, the root is the ceremony's genesis.
    let grace = try rehearsed.unsealShare("grace")
    let second = try await client.unseal(shareFile: grace.file, password: grace.password)
    #expect(second.state == .ready)
    let ready = try await client.status()
    #expect(ready.state == .ready)
    #expect(ready.unseal.lockout.failures == 0)
    #expect(ready.root == .genesis)
    #expect(try await client.rootState(session) == .genesis)
    #expect(
      await refusal { try await client.unseal(shareFile: grace.file, password: grace.password) }?.code
        == .alreadyUnsealed)
    await client.close()

    // A restart comes up SEALED again.
    #expect(hsm.stop().status == 0)
    let again = try HSMProcess(device: copy.device, socket: socketPath(copy.directory))
    let restarted = try again.client()
    let status = try await restarted.status()
    #expect(status.state == .sealed && status.unseal.progress == 0 && status.root == nil)
    // The session of the previous process is gone.
    #expect(await refusal { try await restarted.rootState(session) }?.code == .sessionRequired)
    await restarted.close()
    again.stop()
  }

  @Test func fiveWrongPasswordsStartALockoutThatSurvivesARestart() async throws {
    let rehearsed = try RehearsedDevice.get()
    let copy = try rehearsed.copy()
    let hsm = try HSMProcess(device: copy.device, socket: socketPath(copy.directory))
    let client = try hsm.client()
    let heidi = try rehearsed.unsealShare("heidi")
    var left = [Int?]()
    for attempt in 1...5 {
      let error = await refusal {
        try await client.unseal(shareFile: heidi.file, password: SecretBytes(utf8: "guess \(attempt)"))
      }
      #expect(error?.code == .wrongPassword)
      left.append(error?.attemptsBeforeLockout)
      if attempt == 5 {
        #expect(error?.retryAfter.map { $0 > .seconds(59) && $0 <= .seconds(60) } == true)
      }
    }
    #expect(left == [4, 3, 2, 1, 0])
    // Locked: even the right password is refused unread.
    let locked = await refusal { try await client.unseal(shareFile: heidi.file, password: heidi.password) }
    #expect(locked?.code == .lockedOut)
    #expect(locked?.status == .resourceExhausted)
    let before = try await client.status().unseal.lockout
    #expect(before.failures == 5)
    let until = try #require(before.lockedUntil)
    #expect(until.timeIntervalSinceNow > 50 && until.timeIntervalSinceNow <= 60)
    await client.close()
    #expect(hsm.stop().status == 0)

    // The lockout is in the device directory (0600) and outlives the process.
    var status = stat()
    #expect(lstat(copy.device + "/lockout.json", &status) == 0 && status.st_mode & 0o777 == 0o600)
    let again = try HSMProcess(device: copy.device, socket: socketPath(copy.directory))
    let restarted = try again.client()
    let after = try await restarted.status()
    #expect(after.state == .sealed)
    #expect(after.unseal.lockout.failures == 5)
    #expect(after.unseal.lockout.lockedUntil.map { abs($0.timeIntervalSince(until)) < 0.01 } == true)
    let stillLocked = await refusal { try await restarted.unseal(shareFile: heidi.file, password: heidi.password) }
    #expect(stillLocked?.code == .lockedOut)
    #expect(stillLocked?.retryAfter.map { $0 > .seconds(30) } == true)
    // The Crypto User's backoff is a separate one.
    #expect(after.loginLockout.failures == 0)
    await restarted.close()
    again.stop()
  }

  @Test func aWrongCredentialIsRefusedAndBackedOffAcrossARestart() async throws {
    let rehearsed = try RehearsedDevice.get()
    let copy = try rehearsed.copy()
    let hsm = try HSMProcess(device: copy.device, socket: socketPath(copy.directory))
    let client = try hsm.client()
    let right = try rehearsed.cryptoUserCredential()
    #expect(right.count == 75)

    var left = [Int?]()
    for attempt in 1...5 {
      let error = await refusal { try await client.login(credential: SecretBytes(utf8: "custos-cu1-guess-\(attempt)")) }
      #expect(error?.code == .wrongCredential)
      #expect(error?.status == .unauthenticated)
      left.append(error?.attemptsBeforeLockout)
    }
    #expect(left == [4, 3, 2, 1, 0])
    let locked = await refusal { try await client.login(credential: right) }
    #expect(locked?.code == .lockedOut)
    #expect(locked?.retryAfter.map { $0 > .seconds(50) && $0 <= .seconds(60) } == true)
    // Unseal is not affected by the Crypto User's lockout.
    #expect(try await client.status().unseal.lockout.failures == 0)
    await client.close()
    hsm.stop()

    let again = try HSMProcess(device: copy.device, socket: socketPath(copy.directory))
    let restarted = try again.client()
    #expect(try await restarted.status().loginLockout.failures == 5)
    #expect(await refusal { try await restarted.login(credential: right) }?.code == .lockedOut)
    await restarted.close()
    again.stop()
  }

  @Test func sessionsAreClosedByLogoutAndForgedTokensAreRefused() async throws {
    let rehearsed = try RehearsedDevice.get()
    let copy = try rehearsed.copy()
    let hsm = try HSMProcess(device: copy.device, socket: socketPath(copy.directory))
    let client = try hsm.client()
    try await unseal(client, rehearsed)
    let credential = try rehearsed.cryptoUserCredential()
    let first = try await client.login(credential: credential)
    let second = try await client.login(credential: credential)
    let firstToken = first.token.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
    let secondToken = second.token.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
    #expect(firstToken.hasPrefix("custos-s1-") && firstToken.count == 74 && firstToken != secondToken)
    #expect(!"\(first)".contains(firstToken), "a session never prints its token")
    #expect(try await client.rootState(first) == .genesis)

    try await client.logout(first)
    #expect(await refusal { try await client.rootState(first) }?.code == .sessionRequired)
    #expect(await refusal { try await client.logout(first) }?.code == .sessionRequired)
    #expect(try await client.rootState(second) == .genesis)
    let forged = VaultSession(
      token: SecretBytes(utf8: String(secondToken.dropLast()) + (secondToken.hasSuffix("0") ? "1" : "0")),
      expiresAt: second.expiresAt, idleTimeout: second.idleTimeout)
    #expect(await refusal { try await client.rootState(forged) }?.code == .sessionRequired)
    await client.close()
    hsm.stop()
  }

  @Test func aDeviceLockedByAnotherProcessOrASocketInUseIsRefused() async throws {
    let rehearsed = try RehearsedDevice.get()
    let first = try rehearsed.copy()
    let run = first.directory
    let hsm = try HSMProcess(device: first.device, socket: socketPath(run, "a.sock"))

    // Same device, another socket: the lock is held.
    let second = try runProcess(
      builtExecutable("custos-hsm"), ["--device", first.device, "--socket", socketPath(run, "b.sock")])
    #expect(second.status != 0)
    #expect(second.error.contains("is in use by another process"))
    #expect(!FileManager.default.fileExists(atPath: socketPath(run, "b.sock")))

    // Another device, the same socket: a live server answers there.
    let copy = try rehearsed.copy()
    let third = try runProcess(
      builtExecutable("custos-hsm"), ["--device", copy.device, "--socket", socketPath(run, "a.sock")])
    #expect(third.status != 0)
    #expect(third.error.contains("another process is serving"))
    // A path that is not a socket is never replaced.
    let file = run.appending("not-a-socket")
    try Data("keep me".utf8).write(to: URL(fileURLWithPath: file))
    let fourth = try runProcess(builtExecutable("custos-hsm"), ["--device", copy.device, "--socket", file])
    #expect(fourth.error.contains("is not a socket"))
    #expect(try String(contentsOfFile: file, encoding: .utf8) == "keep me")

    // The first one still serves.
    let client = try hsm.client()
    #expect(try await client.status().serial == rehearsed.serial)
    await client.close()
    hsm.stop()
  }

  @Test func requestsThatDoNotDecodeAreRefusedAndChangeNothing() async throws {
    let rehearsed = try RehearsedDevice.get()
    let copy = try rehearsed.copy()
    let hsm = try HSMProcess(device: copy.device, socket: socketPath(copy.directory))
    let client = try hsm.client()
    try await unseal(client, rehearsed)
    let session = try await client.login(credential: try rehearsed.cryptoUserCredential())
    let call = VaultCall(envelope: [0xA0], approvals: [[1, 2, 3]], proof: nil)
    // Without a proof, or with an envelope that is not one: refused before the vault does
    // anything.
    for error in [
      await refusal { try await client.createWallet(call, session: session) },
      await refusal { try await client.updateWallet(call, session: session) },
      await refusal { try await client.removeWallet(call, session: session) },
      await refusal { try await client.sign(call, session: session) },
    ] {
      #expect(error?.code == .invalidArgument)
      #expect(error?.status == .invalidArgument)
    }
    let proven = VaultCall(
      envelope: [0xA0], approvals: [[1, 2, 3]],
      proof: ChangeProof(proof: MerkleProof(leaf: .zero, siblings: []), leafCount: 1, root: .zero))
    let undecodable = await refusal { try await client.sign(proven, session: session) }
    #expect(undecodable?.code == .invalidArgument)
    #expect(undecodable?.reason != nil)
    // A proof field that is not 32 bytes is refused before anything else.
    let bad = VaultCall(
      envelope: [0xA0], approvals: [],
      proof: ChangeProof(proof: MerkleProof(leaf: .zero, siblings: []), leafCount: 1, root: .zero))
    var message = bad.createMessage
    message.proof.root = Data([1, 2, 3])
    #expect(
      await client.probe(
        service: "custos.vault.v1.Vault", method: "CreateWallet", body: try message.serializedBytes() as [UInt8],
        session: session)?.code == .invalidArgument)
    #expect(try await client.rootState(session) == .genesis)
    await client.close()
    hsm.stop()
  }
}
