import Custody
import Foundation
import HSMBridge
import TestSupport
import Testing
import Vault

extension RehearsalTests {
  /// The vault's request API on the device the init-device rehearsal made: its custody
  /// partition (opened with the PINs a quorum's activation derives), its custos.master and
  /// the genesis root state the ceremony wrote. Nested in the serialized `RehearsalTests`, so
  /// no other test holds the device meanwhile.
  @Suite struct Approvals {
    @Test func aWalletOnTheRehearsalDeviceSignsAnApprovedTransaction() async throws {
      let shared = try SharedRehearsal.get()
      let device = try Device.open(at: shared.outcome.device, logger: testLogger)
      let shares = try shared.rehearsal.participants().unsealShares(holders: [], threshold: 2, rehearsal: true)
      let activation = try device.activate(shares: shares)
      let session = try device.partition("custody").openSession(readWrite: true)
      try session.login(.user, pin: try activation.pins("custody").user)
      let vault = try CustodyVault(
        session: session, syncDirectory: device.tokenDirectory(ofPartition: "custody"), sessions: 2, logger: testLogger)
      #expect(vault.rootState.durable.leafCount == 1, "the ceremony's genesis root: one empty leaf")
      var mirror = try VaultTreeMirror(store: InMemoryMerkleNodeStore())
      #expect(RootAnchor(vault.rootState.durable) == (try mirror.anchor()))

      let alice = try SoftwareAuthenticator(.es256)
      let bob = try SoftwareAuthenticator(.edDSA)
      let configuration = WalletConfiguration(
        threshold: 2, approvers: [alice.approver("alice"), bob.approver("bob")],
        policy: Policy(perTransactionLimit: Amount(decimal: "1000000000000000000")!))
      let expiry = SystemVaultClock().now() + 300
      let create = try RequestEnvelope(
        walletID: 0, walletHash: .zero, operation: .createWallet(configuration), nonce: 1, expiry: expiry
      ).encoded()
      let created = try await vault.createWallet(
        envelope: create,
        approvals: [try alice.approve(create, as: "alice").encoded(), try bob.approve(create, as: "bob").encoded()],
        proof: try mirror.currentLeafProof())
      try mirror.receive(created)

      let transaction = EIP1559Transaction(
        chainID: 1, nonce: 0, maxPriorityFeePerGas: Amount(1_000_000_000), maxFeePerGas: Amount(20_000_000_000),
        gasLimit: 21_000, to: [UInt8](repeating: 0x42, count: 20), value: Amount(10_000))
      let sign = try RequestEnvelope(
        walletID: created.change.walletID, walletHash: Hash256.sha256(created.walletData),
        operation: .signEIP1559(transaction), nonce: 2, expiry: expiry, chain: .ethereum(chainID: 1)
      ).encoded()
      let signed = try await vault.sign(
        envelope: sign,
        approvals: [try alice.approve(sign, as: "alice").encoded(), try bob.approve(sign, as: "bob").encoded()],
        walletData: created.walletData, sealedSeed: created.sealedSeed,
        proof: try mirror.proof(ofWallet: created.change.walletID))
      try mirror.receive(signed)
      #expect(signed.output.first == 0x02)
      #expect(vault.rootState.durable.epoch == 2)
      #expect(RootAnchor(vault.rootState.durable) == (try mirror.anchor()))
      // The token's files say the same: read by a SoftHSM instance of its own.
      let reader = try PKCS11Module(
        softHSMConfiguration: device.configurationPath(ofPartition: "custody"), logger: testLogger)
      let entry = try #require(device.manifest.partitions.first { $0.name == "custody" })
      let other = try reader.openSession(try reader.slot(withTokenLabel: entry.tokenLabel), readWrite: false)
      try other.login(.user, pin: try activation.pins("custody").user)
      #expect(try RootStateStore.open(session: other, logger: testLogger).state == vault.rootState.durable)
    }
  }
}
