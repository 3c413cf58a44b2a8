import Custody
import DeviceServer
import Foundation
import GRPCCore
import TestSupport
import Testing
import Vault
import VaultWire

/// `VaultRequestAPI` on both targets: one scenario of requests, written once, run on
/// `CustodyVault` in this process and on the real device over its socket (`RemoteVault`),
/// gives the same results and the same refusals; and every `RequestError` code survives the
/// wire.
@Suite(.serialized) struct RemoteVaultTests {
  /// Every code the vault refuses with travels as the device answers it (a gRPC status with
  /// `custos-error` and `custos-reason` trailers) and comes back as the same `RequestError`.
  @Test func everyRequestErrorCodeSurvivesTheWire() throws {
    #expect(Set(RequestError.Code.all.map(\.name)).count == RequestError.Code.all.count)
    for code in RequestError.Code.all {
      let refusal = RequestError(code, "the vault's sentence for \(code)")
      let sent = VaultWireError(vault: refusal).rpcError
      let received = VaultWireError(RPCError(code: sent.code, message: sent.message, metadata: sent.metadata))
      #expect(received.reason == code.name)
      let rebuilt = try #require(RequestError(wire: received), "\(code) did not come back as a RequestError")
      #expect(rebuilt.code == code)
      if code != .commitFailed {
        #expect(rebuilt.reason == refusal.reason)
      }
    }
    // A code this version does not know (a newer device) is kept by name.
    let newer = VaultWireError(.vaultRefused, "refused for a newer reason", reason: "quotaExceeded")
    #expect(RequestError(wire: newer)?.code == RequestError.Code("quotaExceeded"))
    // Refusals of the wire itself are not the vault's.
    #expect(RequestError(wire: VaultWireError(.sessionRequired, "log in")) == nil)
    #expect(RequestError(wire: VaultWireError(.sealed, "unseal first")) == nil)
  }

  @Test(arguments: VaultClient.SessionCalls.allCases)
  func theSameRequestsGiveTheSameResultsInProcessAndOverTheSocket(
    _ sessionCalls: VaultClient.SessionCalls
  )
    async throws
  {
    let scratch = try TemporaryDirectory("custos-remote-vault")
    let bench = try BenchmarkDevice(in: scratch.path, logger: testLogger)
    defer { bench.remove() }
    _ = try SeedSealer.generateMasterKey(in: bench.session)
    _ = try RootStateStore.initialize(session: bench.session, syncDirectory: bench.tokenDirectory, logger: testLogger)
    let inProcess = try await Scenario().run(
      try CustodyVault(session: bench.session, syncDirectory: bench.tokenDirectory, sessions: 2, logger: testLogger))

    let rehearsed = try RehearsedDevice.get()
    let copy = try rehearsed.copy()
    let hsm = try HSMProcess(device: copy.device, socket: socketPath(copy.directory))
    let client = try hsm.client(sessionCalls)
    try await unseal(client, rehearsed)
    let session = try await client.login(credential: try rehearsed.cryptoUserCredential())
    let overSocket = try await Scenario().run(RemoteVault(client: client, session: session))
    await client.close()
    #expect(hsm.stop().status == 0)

    let expected = [
      "add 1", "staleProof", "add 2", "add 3, add 4", "staleProof", "proofInvalid", "thresholdNotMet",
      "update 1 signed 0x02", "staleProof", "update 1",
      "remove 2", "root matches",
    ]
    #expect(inProcess == expected)
    #expect(overSocket == expected)
  }
}

/// Requests a server makes, against any `VaultRequestAPI`: each step's result (the change's
/// kind and wallet) or refusal (the `RequestError` code).
private final class Scenario: @unchecked Sendable {
  var mirror = try! VaultTreeMirror(store: InMemoryMerkleNodeStore())
  let approvers: SocketApprovers
  var passkey: SoftwareAuthenticator { approvers.passkey }
  var botA: SoftwareBot { approvers.botA }
  var botB: SoftwareBot { approvers.botB }

  init() throws {
    approvers = try SocketApprovers(seed: "remote vault")
  }

  static var now: UInt64 { UInt64(Date().timeIntervalSince1970) }

  func run(_ vault: some VaultRequestAPI) async throws -> [String] {
    var steps = [String]()
    func outcome(_ body: () async throws -> RequestResult) async throws -> String {
      do {
        let result = try await body()
        try mirror.receive(result)
        var text = "\(result.change.kind) \(result.change.walletID)"
        if let first = result.output.first { text += String(format: " signed 0x%02x", first) }
        return text
      } catch let refusal as RequestError {
        return refusal.code.name
      }
    }

    let genesis = try mirror.currentLeafProof()
    let creation = try createRequest()
    steps.append(
      try await outcome { try await vault.createWallet(envelope: creation.0, approvals: creation.1, proof: genesis) })
    // A second add against the genesis root: a wallet was added since, so the proof is stale.
    let second = try createRequest()
    steps.append(
      try await outcome { try await vault.createWallet(envelope: second.0, approvals: second.1, proof: genesis) })
    let fresh = try mirror.currentLeafProof()
    steps.append(
      try await outcome { try await vault.createWallet(envelope: second.0, approvals: second.1, proof: fresh) })

    // Two creations in flight, each naming its wallet id (3 and 4, both against the tree of 3
    // leaves); 4 is sent first and waits for 3. Then 4's proof again: the id is taken.
    let (third, fourth) = (try createRequest(), try createRequest())
    let proofs = (
      try #require(try mirror.leafProof(forNewWallet: 3)), try #require(try mirror.leafProof(forNewWallet: 4))
    )
    async let later = vault.createWallet(envelope: fourth.0, approvals: fourth.1, proof: proofs.1)
    let earlier = try await vault.createWallet(envelope: third.0, approvals: third.1, proof: proofs.0)
    let both = [earlier, try await later]
    for result in both { try mirror.receive(result) }
    steps.append(both.map { "\($0.change.kind) \($0.change.walletID)" }.joined(separator: ", "))
    steps.append(
      try await outcome { try await vault.createWallet(envelope: fourth.0, approvals: fourth.1, proof: proofs.1) })
    // A leaf outside the anchor's tree is no proof of an add.
    let next = try mirror.currentLeafProof()
    let outside = CurrentLeafProof(
      leaf: next.leaf, siblings: next.siblings, anchor: next.anchor, node: 2 * next.anchor.leafCount)
    steps.append(
      try await outcome { try await vault.createWallet(envelope: fourth.0, approvals: fourth.1, proof: outside) })

    // A transfer from wallet 1: one approval is short of the threshold; two sign.
    let transfer = try envelope(1, .signEIP1559(transaction(1)))
    let (data, sealed) = try #require(mirror.wallets[1])
    let proof = try mirror.proof(ofWallet: 1)
    let one = [try botA.approve(transfer, as: "ops-bot-a").encoded()]
    steps.append(
      try await outcome {
        try await vault.sign(envelope: transfer, approvals: one, walletData: data, sealedSeed: sealed, proof: proof)
      })
    let two = [
      try passkey.approve(transfer, as: "carol-passkey").encoded(),
      try botA.approve(transfer, as: "ops-bot-a").encoded(),
    ]
    steps.append(
      try await outcome {
        try await vault.sign(envelope: transfer, approvals: two, walletData: data, sealedSeed: sealed, proof: proof)
      })
    // The same request again, with the wallet data and proof it was sent with: the wallet's
    // leaf changed since that proof's root.
    steps.append(
      try await outcome {
        try await vault.sign(envelope: transfer, approvals: two, walletData: data, sealedSeed: sealed, proof: proof)
      })

    // Wallet 1 drops bot B and takes a limit; wallet 2 is removed.
    let change = WalletConfigurationChange(
      threshold: 2, approvers: [passkey.approver("carol-passkey"), botA.approver("ops-bot-a")],
      policy: Policy(perTransactionLimit: Amount(5)))
    let update = try envelope(1, .updateWallet(change))
    let (current, currentSealed) = try #require(mirror.wallets[1])
    let updateProof = try mirror.proof(ofWallet: 1)
    let updateApprovals = [
      try botA.approve(update, as: "ops-bot-a").encoded(), try botB.approve(update, as: "ops-bot-b").encoded(),
    ]
    steps.append(
      try await outcome {
        try await vault.updateWallet(
          envelope: update, approvals: updateApprovals, walletData: current, sealedSeed: currentSealed,
          proof: updateProof)
      })
    let remove = try envelope(2, .removeWallet)
    let (removed, _) = try #require(mirror.wallets[2])
    let removeProof = try mirror.proof(ofWallet: 2)
    let removeApprovals = [
      try passkey.approve(remove, as: "carol-passkey").encoded(), try botB.approve(remove, as: "ops-bot-b").encoded(),
    ]
    steps.append(
      try await outcome {
        try await vault.removeWallet(
          envelope: remove, approvals: removeApprovals, walletData: removed, proof: removeProof)
      })
    let durable = try await vault.durableRoot()
    steps.append(RootAnchor(durable) == (try mirror.anchor()) ? "root matches" : "root differs: \(durable)")
    return steps
  }

  /// A 2-of-3 wallet of the passkey and both bots, approved by all three.
  func createRequest() throws -> ([UInt8], [[UInt8]]) {
    try approvers.creation(expiry: Self.now + 300)
  }

  /// The envelope of `operation` on wallet `id`, made against the mirror's data for it.
  func envelope(_ id: UInt64, _ operation: RequestEnvelope.Operation) throws -> [UInt8] {
    let (data, _) = try #require(mirror.wallets[id])
    let wallet = try WalletData.decode(data)
    var chain: ChainData? = nil
    if case .signEIP1559 = operation { chain = .ethereum(chainID: 1) }
    return try RequestEnvelope(
      walletID: id, walletHash: Hash256.sha256(data), operation: operation, nonce: wallet.requestNonce + 1,
      expiry: Self.now + 300, chain: chain
    ).encoded()
  }

  /// A transfer of 1,000,000 wei from wallet `id`.
  func transaction(_ id: UInt64) throws -> EIP1559Transaction {
    let (data, _) = try #require(mirror.wallets[id])
    return EIP1559Transaction(
      chainID: 1, nonce: try WalletData.decode(data).requestNonce, maxPriorityFeePerGas: Amount(2_000_000_000),
      maxFeePerGas: Amount(30_000_000_000), gasLimit: 21_000, to: [UInt8](repeating: 0x42, count: 20),
      value: Amount(1_000_000))
  }
}
