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

/// What a copy of the rehearsed device holds once this process has committed wallets into its
/// root and sealed a seed for the first of them (with the device locked here, before any
/// custos-hsm runs on it).
struct PreparedDevice {
  let copy: DeviceCopy
  /// The root state after the commits: what every later start must come back with.
  let durable: RootState
  let walletData: [UInt8]
  let sealedSeed: [UInt8]
  /// The key and Ethereum address at m/44'/60'/0'/0/7, as the vault computes them in process.
  let expected: (publicKey: [UInt8], xpub: String?, address: String)

  static let path = "m/44'/60'/0'/0/7"

  init(wallets: Int) throws {
    let rehearsed = try RehearsedDevice.get()
    copy = try rehearsed.copy()
    let device = try Device.open(at: copy.device, logger: testLogger)
    let activation = try rehearsed.activate(device)
    let session = try device.partition("custody").openSession(readWrite: true)
    defer { try? session.close() }
    try session.login(.user, pin: try activation.pins("custody").user)
    let root = WalletRoot(store: try RootStateStore.open(session: session, logger: testLogger), logger: testLogger)
    var tree = MerkleTree()
    for _ in 0..<wallets {
      let encoding = SampleWallet.encoding(id: tree.nextWalletID)
      let change = try tree.addChange(wallet: encoding)
      _ = try tree.add(walletHash: Hash256.sha256(encoding))
      #expect(try root.apply([change]).applied.count == 1)
    }
    durable = root.state
    let treeRoot = try tree.root()
    #expect(durable.epoch == UInt64(wallets) && durable.root == treeRoot)

    // Wallet 1 derives BIP-32 secp256k1 keys (SampleWallet: id % 4 != 0).
    walletData = SampleWallet.encoding(id: 1)
    let vault = try WalletVault(session: session, logger: testLogger)
    let walletHash = Hash256.sha256(walletData).bytes
    let sealed = try vault.createWallet(walletHash: walletHash)
    sealedSeed = sealed.bytes
    let location = WalletKeyLocation(
      sealedSeed: sealed, walletHash: walletHash, scheme: .bip32Secp256k1,
      path: try DerivationPath(parsing: PreparedDevice.path))
    let key = try vault.publicKey(at: location)
    expected = (key.publicKey, key.extendedPublicKey?.text, try vault.address(.ethereum, at: location))
  }
}

extension PreparedDevice {
  var socket: String { socketPath(copy.directory) }

  /// The public key and Ethereum address of wallet 1 at `path`.
  var query: PublicKeyQuery {
    PublicKeyQuery(walletData: walletData, sealedSeed: sealedSeed, path: PreparedDevice.path, address: .ethereum)
  }

  /// custos-hsm on the device, unsealed by frank and grace, and a Crypto User session.
  func startUnsealed() async throws -> (HSMProcess, VaultClient, VaultSession) {
    let hsm = try HSMProcess(device: copy.device, socket: socket)
    let client = try hsm.client()
    try await unseal(client, copy.source)
    return (hsm, client, try await client.login(credential: try copy.source.cryptoUserCredential()))
  }
}

@Suite(.serialized) struct ShutdownTests {
  @Test func theVaultAnswersPublicKeysOverTheSocketAsItDoesInProcess() async throws {
    let prepared = try PreparedDevice(wallets: 2)
    let (hsm, client, session) = try await prepared.startUnsealed()
    #expect(try await client.rootState(session) == prepared.durable)
    let query = prepared.query
    let info = try await client.publicKey(query, session: session)
    #expect(info.publicKey == prepared.expected.publicKey)
    #expect(info.extendedPublicKey == prepared.expected.xpub)
    #expect(info.address == prepared.expected.address)
    #expect(info.scheme == "bip32-secp256k1" && info.path == PreparedDevice.path)

    // Bad input is refused naming what was wrong; the seed of wallet 1 does not open for wallet 3.
    var badPath = query
    badPath.path = "m/44'/x"
    #expect(await refusal { try await client.publicKey(badPath, session: session) }?.code == .invalidArgument)
    var otherWallet = query
    otherWallet.walletData = SampleWallet.encoding(id: 3)
    let refused = await refusal { try await client.publicKey(otherWallet, session: session) }
    #expect(refused?.code == .invalidArgument)
    #expect(refused?.message.contains("does not open") == true)
    var notCBOR = query
    notCBOR.walletData = [0xFF]
    #expect(await refusal { try await client.publicKey(notCBOR, session: session) }?.code == .invalidArgument)
    await client.close()
    hsm.stop()
  }

  @Test func sigtermMidActivityFinishesOrRefusesEveryCallAndARestartComesUpSealedWithTheDurableRoot() async throws {
    let prepared = try PreparedDevice(wallets: 3)
    let rehearsed = prepared.copy.source
    let socket = prepared.socket
    let (hsm, client, session) = try await prepared.startUnsealed()
    let query = prepared.query

    // Many calls in flight; SIGTERM once the first has come back.
    let firstDone = AsyncStream<Void>.makeStream()
    let outcomes = try await withThrowingTaskGroup(of: Result<String, VaultWireError>.self) { group in
      for index in 0..<48 {
        group.addTask {
          do {
            let answer: String
            if index % 2 == 0 {
              answer = try await client.publicKey(query, session: session).address ?? ""
            } else {
              answer = "\(try await client.rootState(session))"
            }
            firstDone.continuation.yield()
            return .success(answer)
          } catch {
            return .failure(VaultWireError.from(error))
          }
        }
      }
      for await _ in firstDone.stream { break }
      kill(hsm.process.processIdentifier, SIGTERM)
      var outcomes = [Result<String, VaultWireError>]()
      for try await outcome in group { outcomes.append(outcome) }
      return outcomes
    }
    hsm.process.waitUntilExit()
    #expect(hsm.process.terminationReason == .exit && hsm.process.terminationStatus == 0)
    #expect(hsm.standardError.contains("stopped: calls drained, vault closed, sessions closed"))
    #expect(!FileManager.default.fileExists(atPath: socket))
    // Every call either finished with the right answer or was refused as the device stopped.
    var answered = 0
    for outcome in outcomes {
      switch outcome {
      case .success(let answer):
        #expect(answer == prepared.expected.address || answer == "\(prepared.durable)")
        answered += 1
      case .failure(let error):
        let expected: [VaultWireError.Code] = [.stopping, .unreachable]
        #expect(expected.contains(error.code), "\(error)")
      }
    }
    #expect(answered >= 1)
    await client.close()

    // The lock is free again; the restart is SEALED, then holds the last durable root.
    let again = try HSMProcess(device: prepared.copy.device, socket: socket)
    let restarted = try again.client()
    #expect(try await restarted.status().state == .sealed)
    try await unseal(restarted, rehearsed)
    #expect(try await restarted.status().root == prepared.durable)
    await restarted.close()
    again.stop()
  }

  @Test func sigkillLeavesAStaleSocketThatARestartReplacesAndTheRootIsTheDurableOne() async throws {
    let prepared = try PreparedDevice(wallets: 2)
    let rehearsed = prepared.copy.source
    let socket = prepared.socket
    let (hsm, client, session) = try await prepared.startUnsealed()
    let query = prepared.query
    let calls = Task {
      var refused = 0
      for _ in 0..<200 {
        if await refusal({ try await client.publicKey(query, session: session) }) != nil { refused += 1 }
      }
      return refused
    }
    _ = try await client.rootState(session)
    let ended = hsm.stop(SIGKILL)
    #expect(ended.reason == .uncaughtSignal && ended.status == SIGKILL)
    #expect(await calls.value > 0, "calls after the kill are refused, not hung")
    await client.close()
    var status = stat()
    #expect(lstat(socket, &status) == 0 && status.st_mode & S_IFMT == S_IFSOCK, "a killed process leaves its socket")

    let again = try HSMProcess(device: prepared.copy.device, socket: socket)
    let restarted = try again.client()
    let sealed = try await restarted.status()
    #expect(sealed.state == .sealed && sealed.unseal.progress == 0)
    try await unseal(restarted, rehearsed)
    #expect(try await restarted.status().root == prepared.durable)
    await restarted.close()
    again.stop()
  }
}
