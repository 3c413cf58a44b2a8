import Custody
import Foundation
import HSMBridge
import TestSupport
import Testing

@testable import Vault

/// End to end through `CustodyVault` on a real custody partition: creation, signing,
/// configuration changes and removal, each with real WebAuthn and bot approvals, the results
/// mirrored by a server stand-in.
@Suite(.serialized) struct CustodyVaultTests {
  @Test func createSignAndMirror() async throws {
    let harness = try CustodyHarness()
    let approvers = try TestApprovers()
    let id = try await harness.createWallet(approvers)
    #expect(id == 1)
    #expect(harness.vault.rootState.durable.leafCount == 2)
    #expect(try harness.tokenRoot() == harness.vault.rootState.durable)

    let transaction = transfer()
    let envelope = try harness.envelope(id, .signEIP1559(transaction)).encoded()
    let before = try harness.wallet(id)
    let result = try await harness.sign(
      id, envelope, [approvers.alice.approve(envelope, as: "alice"), approvers.bob.approve(envelope, as: "bob")])

    // The raw transaction is type 2 and its sender is the wallet's address.
    #expect(result.output.first == 0x02)
    let after = try harness.wallet(id)
    #expect(after.data.requestNonce == 2)
    #expect(after.sealedSeed != before.sealedSeed)
    let address = try await harness.vault.address(walletData: after.encoding, sealedSeed: after.sealedSeed)
    let sender = try recoverSender(result.output, transaction: transaction)
    #expect(EthereumAddress.checksummed(sender) == address)
    // Counters of the two passkeys moved into the wallet data.
    #expect(passkeyCounters(after.data) == ["alice": approvers.alice.signCount, "bob": approvers.bob.signCount])
    // Durable before release: the token holds the root that records the new nonce.
    #expect(try harness.tokenRoot().root == (try harness.mirror.tree.root()))
    #expect(result.change.root.epoch == harness.vault.rootState.durable.epoch)
  }

  /// The approvers a request shows are exactly what the vault enforces, and the rendering
  /// names them; the address for a path is the sender of what it signs.
  @Test func personalMessageAndPublicKeys() async throws {
    let harness = try CustodyHarness()
    let approvers = try TestApprovers()
    let id = try await harness.createWallet(approvers, threshold: 1)
    let message = Array("I approve the Q3 budget".utf8)
    let envelope = try harness.envelope(id, .signPersonalMessage(message)).encoded()
    let result = try await harness.sign(id, envelope, [approvers.bot.approve(envelope, as: "ops-bot")])
    #expect(result.output.count == 65 && (result.output[64] == 27 || result.output[64] == 28))
    let wallet = try harness.wallet(id)
    let secp = try Secp256k1()
    let recovered = try #require(
      secp.recoverECDSA(
        signature: Array(result.output[0..<64]), recoveryID: result.output[64] - 27,
        digest: EthereumSigning.personalMessageHash(message)))
    let key = try await harness.vault.publicKey(
      walletData: wallet.encoding, sealedSeed: wallet.sealedSeed, path: ChainData.defaultEthereumPath)
    #expect(key.publicKey == recovered)
    #expect(key.path.description == "m/44'/60'/0'/0/0")
    let address = try await harness.vault.address(walletData: wallet.encoding, sealedSeed: wallet.sealedSeed)
    #expect(address == EthereumAddress.checksummed(try EthereumSigning.address(ofPublicKey: recovered, secp: secp)))
    // Another path is another key.
    let other = try await harness.vault.address(
      walletData: wallet.encoding, sealedSeed: wallet.sealedSeed,
      path: [44 | ChainData.hardened, 60 | ChainData.hardened, ChainData.hardened, 0, 1])
    #expect(other != address)
  }

  /// Configuration changes need the current quorum; the new approvers take over, counters of
  /// kept passkeys carry on, and the old approvers alone can no longer sign. Removal needs
  /// the quorum too, and leaves a zero leaf.
  @Test func updateThenRemove() async throws {
    let harness = try CustodyHarness()
    let approvers = try TestApprovers()
    let id = try await harness.createWallet(approvers)
    let carol = try SoftwareAuthenticator(.es256)
    let change = WalletConfigurationChange(
      threshold: 2, approvers: [approvers.alice.approver("alice"), carol.approver("carol")],
      policy: Policy(perTransactionLimit: Amount(5)))
    let update = try harness.envelope(id, .updateWallet(change)).encoded()
    // bob and the bot are the quorum that approves it.
    let before = try harness.wallet(id)
    let updated = try await harness.vault.updateWallet(
      envelope: update,
      approvals: [
        try approvers.bob.approve(update, as: "bob").encoded(),
        try approvers.bot.approve(update, as: "ops-bot").encoded(),
      ],
      walletData: before.encoding, sealedSeed: before.sealedSeed, proof: try harness.mirror.proof(ofWallet: id))
    try harness.receive(updated)
    let wallet = try harness.wallet(id).data
    #expect(wallet.approvers.map(\.id) == ["alice", "carol"])
    #expect(wallet.policy.perTransactionLimit == Amount(5))
    #expect(wallet.requestNonce == 2)
    #expect(passkeyCounters(wallet)["alice"] == approvers.alice.signCount, "alice's counter carried over")
    // The key did not change: the same address before and after.
    let address = try await harness.vault.address(walletData: before.encoding, sealedSeed: before.sealedSeed)
    #expect(try await harness.vault.address(walletData: updated.walletData, sealedSeed: updated.sealedSeed) == address)
    // bob is no longer an approver.
    let sign = try harness.envelope(id, .signEIP1559(transfer(value: Amount(5)))).encoded()
    #expect(
      await refusal {
        _ = try await harness.sign(
          id, sign, [approvers.alice.approve(sign, as: "alice"), approvers.bob.approve(sign, as: "bob")])
      } == .unknownApprover)
    _ = try await harness.sign(
      id, sign, [approvers.alice.approve(sign, as: "alice"), carol.approve(sign, as: "carol")])

    let remove = try harness.envelope(id, .removeWallet).encoded()
    let current = try harness.wallet(id)
    #expect(
      await refusal {
        _ = try await harness.vault.removeWallet(
          envelope: remove, approvals: [try carol.approve(remove, as: "carol").encoded()], walletData: current.encoding,
          proof: try harness.mirror.proof(ofWallet: id))
      } == .thresholdNotMet)
    let removed = try await harness.vault.removeWallet(
      envelope: remove,
      approvals: [
        try carol.approve(remove, as: "carol").encoded(), try approvers.alice.approve(remove, as: "alice").encoded(),
      ],
      walletData: current.encoding, proof: try harness.mirror.proof(ofWallet: id))
    #expect(removed.change.kind == .remove && removed.change.leaf.isZero && removed.walletData.isEmpty)
    try harness.receive(removed)
    #expect(try harness.mirror.tree.leaf(ofWallet: id) == .zero)
    #expect(try harness.tokenRoot() == harness.vault.rootState.durable)
  }

  /// Creation needs every proposed approver: a threshold of them is not enough, and a key
  /// that is not among them does not help.
  @Test func creationNeedsEveryProposedApprover() async throws {
    let harness = try CustodyHarness()
    let approvers = try TestApprovers()
    let configuration = WalletConfiguration(threshold: 2, approvers: approvers.approvers)
    let envelope = try RequestEnvelope(
      walletID: 0, walletHash: .zero, operation: .createWallet(configuration), nonce: 1, expiry: noon + 60
    ).encoded()
    let two = [approvers.alice.approve(envelope, as: "alice"), approvers.bob.approve(envelope, as: "bob")]
    let before = harness.vault.rootState
    #expect(
      await refusal {
        _ = try await harness.vault.createWallet(
          envelope: envelope, approvals: try two.map { try $0.encoded() }, proof: try harness.mirror.currentLeafProof())
      } == .thresholdNotMet)
    let stranger = try SoftwareBot(.ed25519).approve(envelope, as: "ops-bot")
    #expect(
      await refusal {
        _ = try await harness.vault.createWallet(
          envelope: envelope, approvals: try (two + [stranger]).map { try $0.encoded() },
          proof: try harness.mirror.currentLeafProof())
      } == .badSignature)
    #expect(harness.vault.rootState == before)
    // A sign request cannot create, and a create request cannot sign.
    #expect(
      await refusal {
        _ = try await harness.vault.createWallet(
          envelope: try RequestEnvelope(
            walletID: 1, walletHash: .zero, operation: .removeWallet, nonce: 1, expiry: noon + 60
          ).encoded(), approvals: [], proof: try harness.mirror.currentLeafProof())
      } == .wrongOperation)
    // All three: created, with their counters recorded.
    let id = try await harness.createWallet(approvers)
    #expect(
      passkeyCounters(try harness.wallet(id).data) == [
        "alice": approvers.alice.signCount, "bob": approvers.bob.signCount,
      ])
  }

  /// The real clock: a request that expires in five minutes is signed, one that expired a
  /// second ago is refused.
  @Test func realClock() async throws {
    let harness = try CustodyHarness(clock: SystemVaultClock())
    let approvers = try TestApprovers()
    let id = try await harness.createWallet(approvers)
    let now = UInt64(Date().timeIntervalSince1970)
    let late = try harness.envelope(id, .signEIP1559(transfer()), expiry: now - 1).encoded()
    #expect(
      await refusal {
        _ = try await harness.sign(
          id, late, [approvers.alice.approve(late, as: "alice"), approvers.bob.approve(late, as: "bob")])
      } == .expired)
    let fresh = try harness.envelope(id, .signEIP1559(transfer()), expiry: now + 300).encoded()
    _ = try await harness.sign(
      id, fresh, [approvers.alice.approve(fresh, as: "alice"), approvers.bob.approve(fresh, as: "bob")])
  }

  /// Many requests in flight over many wallets, with proofs from trees that are already out
  /// of date when they arrive: every one is signed, batches hold several changes, every result
  /// comes after its root is durable, and the server's mirror ends at the vault's root.
  @Test func groupCommitWithRebasedProofs() async throws {
    // A linger far longer than any request: a token write then waits until no request is under
    // way (it stops waiting the moment the last one is applied), so batches form however slowly
    // a debug build on a busy machine checks and signs. With the 5 ms default a batch still
    // depends on two requests finishing within 5 ms of each other (seen failing once in CI).
    let harness = try CustodyHarness(sessions: 3, linger: .seconds(30))
    var wallets = [(id: UInt64, approvers: TestApprovers)]()
    for index in 0..<12 {
      let approvers = try TestApprovers(seed: "wallet \(index)")
      wallets.append((try await harness.createWallet(approvers), approvers))
    }
    harness.vault.resetCommitStatistics()
    // Every request is prepared now, against the same tree: by the time most of them arrive,
    // the root has moved on and their proofs must be rebased.
    var requests = [
      (id: UInt64, envelope: [UInt8], approvals: [[UInt8]], proof: WalletProof, data: [UInt8], sealed: [UInt8])
    ]()
    for (id, approvers) in wallets {
      let wallet = try harness.wallet(id)
      let envelope = try harness.envelope(id, .signEIP1559(transfer())).encoded()
      requests.append(
        (
          id, envelope,
          [
            try approvers.alice.approve(envelope, as: "alice").encoded(),
            try approvers.bob.approve(envelope, as: "bob").encoded(),
          ],
          try harness.mirror.proof(ofWallet: id), wallet.encoding, wallet.sealedSeed
        ))
    }
    let vault = harness.vault
    let results = try await withThrowingTaskGroup(of: RequestResult.self) { group in
      for request in requests {
        group.addTask {
          let result = try await vault.sign(
            envelope: request.envelope, approvals: request.approvals, walletData: request.data,
            sealedSeed: request.sealed, proof: request.proof)
          // Released only once durable: the vault's durable root already records it.
          #expect(vault.rootState.durable.epoch >= result.change.root.epoch)
          #expect(vault.rootState.durableSequence >= result.change.sequence)
          return result
        }
      }
      return try await group.reduce(into: [RequestResult]()) { $0.append($1) }
    }
    #expect(results.count == 12)
    // Sequences are dense, and mirrored in their order they give the vault's root.
    #expect(Set(results.map(\.change.sequence)).count == 12)
    for result in results.shuffled() { try harness.receive(result) }
    #expect(try harness.mirror.tree.root() == vault.rootState.durable.root)
    #expect(try harness.tokenRoot() == vault.rootState.durable)
    let statistics = vault.commitStatistics
    #expect(statistics.changes == 12)
    #expect(statistics.commits < 12, "some batches held more than one change: \(statistics.histogram)")
  }

  /// With renewals every 3 token operations, creations and concurrent signatures (each a
  /// seal or an unseal and a re-seal) run across several fresh PKCS #11 instances: every
  /// request succeeds, every sealed seed made in one instance opens in another, and the token
  /// holds the mirror's root.
  @Test func requestsCarryOnAcrossSessionRenewals() async throws {
    let harness = try CustodyHarness(sessions: 2, renewAfter: 3)
    var wallets = [(id: UInt64, approvers: TestApprovers)]()
    for index in 0..<4 {
      let approvers = try TestApprovers(seed: "renewal \(index)")
      wallets.append((try await harness.createWallet(approvers), approvers))
    }
    #expect(harness.vault.sessionRenewals >= 1)
    for _ in 0..<2 {
      try await withThrowingTaskGroup(of: Void.self) { group in
        for (id, approvers) in wallets {
          let envelope = try harness.envelope(id, .signEIP1559(transfer())).encoded()
          group.addTask {
            var attempts = 0
            while true {
              do {
                _ = try await harness.sign(
                  id, envelope,
                  [approvers.alice.approve(envelope, as: "alice"), approvers.bot.approve(envelope, as: "ops-bot")])
                return
              } catch let error as RequestError where error.code == .staleProof && attempts < 20 {
                attempts += 1  // the mirror was behind the vault: another proof
                await Task.yield()
              }
            }
          }
        }
        try await group.waitForAll()
      }
    }
    // 4 seals, then 8 signatures of an unseal and a re-seal each: 20 operations, counted per
    // instance (those still running on an instance being replaced go with it).
    #expect(harness.vault.sessionRenewals >= 3)
    for (id, _) in wallets { #expect(try harness.wallet(id).data.requestNonce == 3) }
    let sample = try harness.wallet(wallets[0].id)
    _ = try await harness.vault.address(walletData: sample.encoding, sealedSeed: sample.sealedSeed)
    #expect(try harness.mirror.tree.root() == harness.vault.rootState.durable.root)
    #expect(try harness.tokenRoot() == harness.vault.rootState.durable)
  }

  /// Renewing after every token operation, one at a time: a seal, a refused unseal (a sealed
  /// seed with a byte changed) and a good signature's unseal and re-seal renew the sessions
  /// four times: a failing operation renews like any other and does not stop later renewals.
  @Test func aFailingOperationRenewsLikeAnyOther() async throws {
    let harness = try CustodyHarness(sessions: 1, renewAfter: 1)
    let approvers = try TestApprovers()
    let id = try await harness.createWallet(approvers)
    #expect(harness.vault.sessionRenewals == 1)
    let envelope = try harness.envelope(id, .signEIP1559(transfer())).encoded()
    let approvals = try [
      approvers.alice.approve(envelope, as: "alice"), approvers.bot.approve(envelope, as: "ops-bot"),
    ]
    .map { try $0.encoded() }
    let wallet = try harness.wallet(id)
    var tampered = wallet.sealedSeed
    tampered[tampered.count - 1] ^= 0x01
    #expect(
      await refusal {
        _ = try await harness.vault.sign(
          envelope: envelope, approvals: approvals, walletData: wallet.encoding, sealedSeed: tampered,
          proof: try harness.mirror.proof(ofWallet: id))
      } == .sealedSeedMismatch)
    #expect(harness.vault.sessionRenewals == 2)
    let signed = try await harness.vault.sign(
      envelope: envelope, approvals: approvals, walletData: wallet.encoding, sealedSeed: wallet.sealedSeed,
      proof: try harness.mirror.proof(ofWallet: id))
    #expect(signed.output.first == 0x02)
    #expect(harness.vault.sessionRenewals == 4)
  }

  /// Two requests for the same wallet at once (each approved, each with the current nonce):
  /// one signs, the other is refused as stale, so one nonce never gives two signatures.
  @Test func sameWalletTwiceAtOnce() async throws {
    let harness = try CustodyHarness()
    let approvers = try TestApprovers()
    let id = try await harness.createWallet(approvers)
    let wallet = try harness.wallet(id)
    let proof = try harness.mirror.proof(ofWallet: id)
    let vault = harness.vault
    let envelopes = try [transfer(value: Amount(1)), transfer(value: Amount(2))].map {
      try harness.envelope(id, .signEIP1559($0)).encoded()
    }
    let approvals = try envelopes.map { envelope in
      [
        try approvers.alice.approve(envelope, as: "alice").encoded(),
        try approvers.bot.approve(envelope, as: "ops-bot").encoded(),
      ]
    }
    let outcomes = await withTaskGroup(of: Result<RequestResult, any Error>.self) { group in
      for index in 0..<2 {
        group.addTask {
          do {
            return .success(
              try await vault.sign(
                envelope: envelopes[index], approvals: approvals[index], walletData: wallet.encoding,
                sealedSeed: wallet.sealedSeed, proof: proof))
          } catch {
            return .failure(error)
          }
        }
      }
      return await group.reduce(into: [Result<RequestResult, any Error>]()) { $0.append($1) }
    }
    let signed = outcomes.compactMap { try? $0.get() }
    #expect(signed.count == 1)
    let refusals = outcomes.compactMap { outcome -> RequestError.Code? in
      if case .failure(let error) = outcome { return (error as? RequestError)?.code }
      return nil
    }
    // The loser's wallet leaf changed under it (the winner's new nonce): stale, not signed.
    #expect(refusals == [RequestError.Code.staleProof])
    try harness.receive(signed[0])
    #expect(try harness.tokenRoot() == vault.rootState.durable)
  }

  /// A token write that fails releases nothing: every request of the batch and every one
  /// built on it is refused, the running root falls back to the durable one, and the token
  /// still holds it.
  @Test func failedCommitReleasesNothing() async throws {
    let harness = try CustodyHarness(sessions: 2)
    var wallets = [(id: UInt64, approvers: TestApprovers)]()
    for index in 0..<6 {
      let approvers = try TestApprovers(seed: "failing \(index)")
      wallets.append((try await harness.createWallet(approvers), approvers))
    }
    let before = harness.vault.rootState
    let token = try harness.tokenRoot()
    // The store's session goes away: its next commit fails (the request sessions still work).
    try harness.session.close()
    let vault = harness.vault
    let requests = try wallets.map { id, approvers in
      let wallet = try harness.wallet(id)
      let envelope = try harness.envelope(id, .signEIP1559(transfer())).encoded()
      return (
        envelope,
        [
          try approvers.alice.approve(envelope, as: "alice").encoded(),
          try approvers.bob.approve(envelope, as: "bob").encoded(),
        ],
        wallet.encoding, wallet.sealedSeed, try harness.mirror.proof(ofWallet: id)
      )
    }
    let codes = await withTaskGroup(of: RequestError.Code?.self) { group in
      for request in requests {
        group.addTask {
          await refusal {
            _ = try await vault.sign(
              envelope: request.0, approvals: request.1, walletData: request.2, sealedSeed: request.3, proof: request.4)
          }
        }
      }
      return await group.reduce(into: [RequestError.Code?]()) { $0.append($1) }
    }
    #expect(codes == Array(repeating: .commitFailed, count: 6))
    #expect(vault.rootState == before)
    #expect(try harness.tokenRoot() == token)
    #expect(vault.commitStatistics.failedCommits >= 1)
  }
}

/// The sender of a raw EIP-1559 transaction, recovered from its signature.
/// The sender of a raw signed transaction, recovered as a chain does; the transaction it
/// carries must be `transaction`.
func recoverSender(_ raw: [UInt8], transaction: EIP1559Transaction) throws -> [UInt8] {
  let unsigned = EthereumSigning.signingPayload(transaction)
  // The raw transaction's first nine fields are exactly the fields the vault was asked to sign.
  guard case .list(let items) = try RLP.decode(Array(raw.dropFirst())),
    case .list(let fields) = try RLP.decode(Array(unsigned.dropFirst()))
  else {
    throw VaultError(.invalidEncoding, "not RLP lists")
  }
  #expect(Array(items.prefix(9)) == fields)
  return try EthereumSigning.sender(ofSignedTransaction: raw, secp: try Secp256k1())
}

func passkeyCounters(_ wallet: WalletData) -> [String: UInt32] {
  var counters = [String: UInt32]()
  for approver in wallet.approvers {
    if case .passkey(let passkey) = approver.credential { counters[approver.id] = passkey.signCount }
  }
  return counters
}
