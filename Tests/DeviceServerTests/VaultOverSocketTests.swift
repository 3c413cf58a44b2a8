import Custody
import Foundation
import Synchronization
import TestSupport
import Testing
import Vault
import VaultWire

#if canImport(Glibc)
import Glibc
#endif

/// A custody server's side of the socket, in miniature: a tree mirror fed with the device's
/// results (in its sequence order), the proofs it makes, and the approvers of test wallets.
final class SocketCustody: @unchecked Sendable {
  let client: VaultClient
  let session: VaultSession
  private let mirrorState: Mutex<VaultTreeMirror<InMemoryMerkleNodeStore>>
  /// Two bots and one software passkey; any two of them approve.
  let passkey: SoftwareAuthenticator
  let botA: SoftwareBot
  let botB: SoftwareBot

  init(client: VaultClient, session: VaultSession) throws {
    self.client = client
    self.session = session
    mirrorState = Mutex(try VaultTreeMirror(store: InMemoryMerkleNodeStore()))
    func key(_ name: String) -> [UInt8] { Array(Hash256.sha256(Array("socket custody \(name)".utf8)).bytes) }
    passkey = try SoftwareAuthenticator(.es256, credentialID: key("passkey id"), privateKey: key("passkey"))
    botA = try SoftwareBot(.p256, privateKey: key("bot a"))
    botB = try SoftwareBot(.ed25519, privateKey: key("bot b"))
  }

  static var now: UInt64 { UInt64(Date().timeIntervalSince1970) }

  var mirror: VaultTreeMirror<InMemoryMerkleNodeStore> { mirrorState.withLock { $0 } }

  func receive(_ outcome: VaultOutcome) throws {
    let change = try #require(outcome.change)
    let result = RequestResult(
      output: outcome.result, walletData: outcome.walletData, sealedSeed: outcome.sealedSeed, change: change)
    try mirrorState.withLock { _ = try $0.receive(result) }
  }

  /// Creates a 2-of-3 custodial secp256k1 wallet; returns its id.
  func createWallet() async throws -> UInt64 {
    let configuration = WalletConfiguration(
      threshold: 2,
      approvers: [passkey.approver("carol-passkey"), botA.approver("ops-bot-a"), botB.approver("ops-bot-b")])
    let envelope = try RequestEnvelope(
      walletID: 0, walletHash: .zero, operation: .createWallet(configuration), nonce: 1, expiry: Self.now + 300
    ).encoded()
    let approvals = [
      passkey.approve(envelope, as: "carol-passkey"), botA.approve(envelope, as: "ops-bot-a"),
      botB.approve(envelope, as: "ops-bot-b"),
    ]
    let proof = try mirror.currentLeafProof()
    let outcome = try await client.createWallet(
      VaultCall(
        envelope: envelope, approvals: try approvals.map { try $0.encoded() },
        proof: ChangeProof(
          proof: MerkleProof(leaf: proof.leaf, siblings: proof.siblings), leafCount: proof.anchor.leafCount,
          root: proof.anchor.root)),
      session: session)
    try receive(outcome)
    return try #require(outcome.change).walletID
  }

  /// The envelope of a transfer from wallet `id`, as the server would prepare it now.
  func transferEnvelope(
    _ id: UInt64, value: UInt64 = 1_000_000, nonceOffset: UInt64 = 1
  ) throws -> (
    envelope: [UInt8], transaction: EIP1559Transaction
  ) {
    let entry = try #require(mirror.wallets[id])
    let wallet = try WalletData.decode(entry.walletData)
    let transaction = EIP1559Transaction(
      chainID: 1, nonce: wallet.requestNonce, maxPriorityFeePerGas: Amount(2_000_000_000),
      maxFeePerGas: Amount(30_000_000_000), gasLimit: 21_000, to: [UInt8](repeating: 0x42, count: 20),
      value: Amount(value))
    let envelope = try RequestEnvelope(
      walletID: id, walletHash: Hash256.sha256(entry.walletData), operation: .signEIP1559(transaction),
      nonce: wallet.requestNonce + nonceOffset, expiry: Self.now + 300, chain: .ethereum(chainID: 1)
    ).encoded()
    return (envelope, transaction)
  }

  /// A signing call for wallet `id` with the given approvals, its proof from the mirror.
  func signCall(_ id: UInt64, _ envelope: [UInt8], _ approvals: [Approval]) throws -> VaultCall {
    let entry = try #require(mirror.wallets[id])
    let proof = try mirror.proof(ofWallet: id)
    return VaultCall(
      envelope: envelope, approvals: try approvals.map { try $0.encoded() }, walletData: entry.walletData,
      sealedSeed: entry.sealedSeed,
      proof: ChangeProof(
        proof: MerkleProof(leaf: Hash256.sha256(entry.walletData), siblings: proof.siblings),
        leafCount: proof.anchor.leafCount, root: proof.anchor.root))
  }

  /// Signs a transfer from wallet `id` approved by the passkey and bot A; mirrors the result.
  /// While the mirror still waits for another request's earlier change, the wallet's data it
  /// holds is stale: the vault says so, and the request is prepared again (as a server would).
  func approvedTransfer(_ id: UInt64) async throws -> (call: VaultCall, outcome: VaultOutcome) {
    var attempt = 0
    while true {
      let (envelope, _) = try transferEnvelope(id)
      let call = try signCall(
        id, envelope, [passkey.approve(envelope, as: "carol-passkey"), botA.approve(envelope, as: "ops-bot-a")])
      do {
        let outcome = try await client.sign(call, session: session)
        try receive(outcome)
        return (call, outcome)
      } catch let error as VaultWireError
        where attempt < 50 && ["staleProof", "staleWalletHash"].contains(error.reason ?? "")
      {
        attempt += 1
        try await Task.sleep(for: .milliseconds(2))
      }
    }
  }
}

/// Values collected by concurrent tasks.
final class Collected<Value: Sendable>: Sendable {
  private let values = Mutex([Value]())
  func append(_ value: Value) { values.withLock { $0.append(value) } }
  var all: [Value] { values.withLock { $0 } }
}

/// The vault API over the real process's socket: wallets, approved signatures, refusals, and
/// stops in the middle of a batch.
@Suite(.serialized) struct VaultOverSocketTests {
  @Test func aWalletIsCreatedAndAnApprovedTransferIsSignedThatChainsAccept() async throws {
    let rehearsed = try RehearsedDevice.get()
    let copy = try rehearsed.copy()
    let hsm = try HSMProcess(device: copy.device, socket: socketPath(copy.directory))
    let client = try hsm.client()
    try await unseal(client, rehearsed)
    let custody = try SocketCustody(
      client: client, session: try await client.login(credential: try rehearsed.cryptoUserCredential()))

    let id = try await custody.createWallet()
    #expect(id == 1)
    let entry = try #require(custody.mirror.wallets[id])
    let info = try await client.publicKey(
      PublicKeyQuery(
        walletData: entry.walletData, sealedSeed: entry.sealedSeed, path: "m/44'/60'/0'/0/0", address: .ethereum),
      session: custody.session)
    let address = try #require(info.address)
    #expect(address.hasPrefix("0x") && address.count == 42)

    // An EIP-1559 transfer approved by two of the three: the raw signed transaction's sender,
    // recovered as a chain does, is the wallet's address.
    let (envelope, transaction) = try custody.transferEnvelope(id)
    let call = try custody.signCall(
      id, envelope,
      [custody.passkey.approve(envelope, as: "carol-passkey"), custody.botA.approve(envelope, as: "ops-bot-a")])
    let signed = try await client.sign(call, session: custody.session)
    try custody.receive(signed)
    #expect(signed.result.first == 0x02)
    let sender = try EthereumSigning.sender(ofSignedTransaction: signed.result, secp: try Secp256k1())
    #expect(EthereumAddress.checksummed(sender) == address)
    // Its first nine fields are exactly the transaction the approvers approved.
    guard case .list(let fields) = try RLP.decode(Array(signed.result.dropFirst())),
      case .list(let approved) = try RLP.decode(Array(EthereumSigning.signingPayload(transaction).dropFirst()))
    else {
      Issue.record("not RLP lists")
      return
    }
    #expect(fields.count == 12)
    #expect(Array(fields.prefix(9)) == approved)
    let afterSigning = try await client.rootState(custody.session)
    #expect(try afterSigning.root == custody.mirror.tree.root())

    // Refusals, each leaving the device's root where it was.
    let (next, _) = try custody.transferEnvelope(id)
    let oneShort = await refusal {
      try await client.sign(
        try custody.signCall(id, next, [custody.botA.approve(next, as: "ops-bot-a")]), session: custody.session)
    }
    #expect(oneShort?.code == .vaultRefused)
    #expect(oneShort?.reason == "thresholdNotMet")
    var tampered = try custody.signCall(
      id, next, [custody.botA.approve(next, as: "ops-bot-a"), custody.botB.approve(next, as: "ops-bot-b")])
    let (bigger, _) = try custody.transferEnvelope(id, value: 9_000_000)
    tampered.envelope = bigger  // changed after approval
    let altered = await refusal { try await client.sign(tampered, session: custody.session) }
    #expect(altered?.code == .vaultRefused)
    #expect(altered?.reason == "badSignature")
    let replay = await refusal { try await client.sign(call, session: custody.session) }
    #expect(replay?.code == .vaultRefused)
    #expect(try await client.rootState(custody.session) == afterSigning)
    await client.close()
    #expect(hsm.stop().status == 0)
  }

  /// SIGKILL while signatures are being batched: the restarted device is SEALED, opens with a
  /// root at or after the last one it acknowledged, and every acknowledged signature's nonce is
  /// durable (the same request is refused as a replay).
  @Test func aKillMidBatchKeepsEveryAcknowledgedSignatureDurable() async throws {
    let rehearsed = try RehearsedDevice.get()
    let copy = try rehearsed.copy()
    let socket = socketPath(copy.directory)
    var hsm = try HSMProcess(device: copy.device, socket: socket)
    var client = try hsm.client()
    try await unseal(client, rehearsed)
    let custody = try SocketCustody(
      client: client, session: try await client.login(credential: try rehearsed.cryptoUserCredential()))
    var wallets = [UInt64]()
    for _ in 0..<6 { wallets.append(try await custody.createWallet()) }

    let acknowledged = Collected<VaultCall>()
    let running = hsm
    let killer = Task.detached {
      try await Task.sleep(for: .milliseconds(400))
      running.stop(SIGKILL)
    }
    await withTaskGroup(of: Void.self) { group in
      for id in wallets {
        group.addTask {
          while true {
            do {
              let (call, _) = try await custody.approvedTransfer(id)
              acknowledged.append(call)
            } catch {
              return  // the kill (or a stale proof as others commit): this wallet stops here
            }
          }
        }
      }
    }
    _ = try await killer.value
    let calls = acknowledged.all
    #expect(calls.count > 0, "some signatures were acknowledged before the kill")
    let lastAcknowledged = try custody.mirror.tree.root()
    await client.close()

    hsm = try HSMProcess(device: copy.device, socket: socket)
    client = try hsm.client()
    #expect(try await client.status().state == .sealed)
    try await unseal(client, rehearsed)
    let session = try await client.login(credential: try rehearsed.cryptoUserCredential())
    let root = try await client.rootState(session)
    #expect(root.leafCount == custody.mirror.tree.leafCount)
    // Durable: every acknowledged request, sent again, is refused (its nonce is recorded).
    for call in calls.suffix(12) {
      let again = await refusal { try await client.sign(call, session: session) }
      #expect(again?.code == .vaultRefused, "an acknowledged signature was lost: \(String(describing: again))")
    }
    // The device's root is the mirror's, or later by changes whose answers the kill swallowed.
    if root.root != lastAcknowledged {
      #expect(root.epoch > 0)
    }
    await client.close()
    hsm.stop()
  }

  /// SIGTERM while signatures are being batched: calls in flight finish or are refused as
  /// `stopping`; the restarted device's root is exactly the one of every answered call.
  @Test func aGracefulStopMidBatchAnswersEveryCallItCommitted() async throws {
    let rehearsed = try RehearsedDevice.get()
    let copy = try rehearsed.copy()
    let socket = socketPath(copy.directory)
    var hsm = try HSMProcess(device: copy.device, socket: socket)
    var client = try hsm.client()
    try await unseal(client, rehearsed)
    let custody = try SocketCustody(
      client: client, session: try await client.login(credential: try rehearsed.cryptoUserCredential()))
    var wallets = [UInt64]()
    for _ in 0..<6 { wallets.append(try await custody.createWallet()) }
    let running = hsm
    let stopper = Task.detached {
      try await Task.sleep(for: .milliseconds(400))
      return running.stop(SIGTERM)
    }
    let refusals = Collected<VaultWireError.Code>()
    await withTaskGroup(of: Void.self) { group in
      for id in wallets {
        group.addTask {
          while true {
            do {
              _ = try await custody.approvedTransfer(id)
            } catch {
              refusals.append(VaultWireError.from(error).code)
              return
            }
          }
        }
      }
    }
    let stopped = try await stopper.value
    #expect(stopped.status == 0)
    #expect(refusals.all.allSatisfy { [.stopping, .unreachable, .vaultRefused].contains($0) })
    await client.close()

    hsm = try HSMProcess(device: copy.device, socket: socket)
    client = try hsm.client()
    #expect(try await client.status().state == .sealed)
    try await unseal(client, rehearsed)
    let session = try await client.login(credential: try rehearsed.cryptoUserCredential())
    let root = try await client.rootState(session)
    #expect(try root.root == custody.mirror.tree.root())
    #expect(root.leafCount == custody.mirror.tree.leafCount)
    await client.close()
    hsm.stop()
  }
}
