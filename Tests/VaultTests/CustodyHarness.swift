import Custody
import Foundation
import HSMBridge
import Synchronization
import TestSupport
import Testing

@testable import Vault

/// A clock a test sets: the only fake the vault tests use, for expiries and policy windows at
/// chosen times (the real clock is tested on its own in `CustodyVaultTests`).
final class TestClock: VaultClock {
  private let seconds: Mutex<UInt64>
  init(_ seconds: UInt64) { self.seconds = Mutex(seconds) }
  func now() -> UInt64 { seconds.withLock { $0 } }
  func set(_ value: UInt64) { seconds.withLock { $0 = value } }
  func advance(_ delta: UInt64) { seconds.withLock { $0 += delta } }
}

/// 2024-01-01 12:00:00 UTC: noon, inside the 08:00-20:00 windows the tests' policies use.
let noon: UInt64 = 1_704_110_400

/// The approvers of a test wallet: alice (ES256 passkey), bob (EdDSA passkey), and a P-256 bot.
struct TestApprovers {
  let alice: SoftwareAuthenticator
  let bob: SoftwareAuthenticator
  let bot: SoftwareBot

  init(seed: String = "approvers") throws {
    func key(_ name: String) -> [UInt8] { Hashes.sha256(Array("\(seed) \(name)".utf8)) }
    alice = try SoftwareAuthenticator(.es256, credentialID: key("alice credential"), privateKey: key("alice"))
    bob = try SoftwareAuthenticator(.edDSA, credentialID: key("bob credential"), privateKey: key("bob"))
    bot = try SoftwareBot(.p256, privateKey: key("bot"))
  }

  /// alice, bob and "ops-bot", sorted by id as wallet data keeps them.
  var approvers: [Approver] { [alice.approver("alice"), bob.approver("bob"), bot.approver("ops-bot")] }
}

/// One custody partition on a throw-away device (its real allow-list, `custos.master` from the
/// policy table, a genesis root state), a `CustodyVault` over it, and a `VaultTreeMirror`
/// playing the server: every result goes into the mirror, every proof comes from it.
final class CustodyHarness: @unchecked Sendable {
  let device: TestDevice
  let session: Session
  let vault: CustodyVault
  let clock: any VaultClock
  private let lock = NSLock()
  private var mirrorState: VaultTreeMirror<InMemoryMerkleNodeStore>

  /// With `renewAfter`, the vault's request sessions move to a fresh PKCS #11 instance of the
  /// partition after that many token operations; `addWait` is how long a creation waits for the
  /// creations of the wallet ids before its own.
  init(
    clock: any VaultClock = TestClock(noon), sessions: Int = 2, window: Int = 4096, renewAfter: Int? = nil,
    addWait: Duration = .seconds(2), linger: Duration = CustodyVault.defaultLinger
  ) throws {
    device = try TestDevice(partitions: ["custody"], profile: "custody")
    session = try device.userSession("custody")
    _ = try SeedSealer.generateMasterKey(in: session)
    _ = try RootStateStore.initialize(session: session, logger: testLogger)
    self.clock = clock
    let partition = try device.device.partition("custody")
    let recycling = renewAfter.map { operations in
      SessionRecycling(operations: operations) {
        try partition.openUserSessionInNewInstance(pin: SecretBytes(utf8: TestPINs.user))
      }
    }
    vault = try CustodyVault(
      session: session, syncDirectory: device.device.tokenDirectory(ofPartition: "custody"), sessions: sessions,
      window: window, linger: linger, addWait: addWait, clock: clock, recycling: recycling, logger: testLogger)
    mirrorState = try VaultTreeMirror(store: InMemoryMerkleNodeStore())
  }

  var mirror: VaultTreeMirror<InMemoryMerkleNodeStore> { lock.withLock { mirrorState } }

  /// Mirrors a result into the server's state.
  func receive(_ result: RequestResult) throws {
    try lock.withLock { _ = try mirrorState.receive(result) }
  }

  /// The root state as the token's files hold it, read by a SoftHSM instance of its own (not
  /// the vault's, whose memory could hold what the files do not).
  func tokenRoot() throws -> RootState {
    let module = try PKCS11Module(
      softHSMConfiguration: device.device.configurationPath(ofPartition: "custody"), logger: testLogger)
    let entry = try #require(device.device.manifest.partitions.first { $0.name == "custody" })
    let other = try module.openSession(try module.slot(withTokenLabel: entry.tokenLabel), readWrite: false)
    try other.login(.user, pin: SecretBytes(utf8: TestPINs.user))
    return try RootStateStore.open(session: other, logger: testLogger).state
  }

  var now: UInt64 { clock.now() }

  /// The wallet's data and sealed seed as the server holds them.
  func wallet(_ id: UInt64) throws -> (data: WalletData, encoding: [UInt8], sealedSeed: [UInt8]) {
    let entry = try #require(mirror.wallets[id], "the mirror holds no wallet \(id)")
    return (try WalletData.decode(entry.walletData), entry.walletData, entry.sealedSeed)
  }

  /// Creates a wallet approved by every proposed approver; returns its id.
  @discardableResult
  func createWallet(
    _ approvers: TestApprovers, threshold: UInt64 = 2, policy: Policy = Policy(), nonce: UInt64 = 1
  ) async throws -> UInt64 {
    let (envelope, approvals) = try creation(approvers, threshold: threshold, policy: policy, nonce: nonce)
    let result = try await vault.createWallet(
      envelope: envelope, approvals: approvals, proof: try mirror.currentLeafProof())
    try receive(result)
    return result.change.walletID
  }

  /// A `create-wallet` envelope and its approvals by every proposed approver (encodings).
  func creation(
    _ approvers: TestApprovers, threshold: UInt64 = 2, policy: Policy = Policy(), nonce: UInt64 = 1
  ) throws -> (envelope: [UInt8], approvals: [[UInt8]]) {
    let configuration = WalletConfiguration(threshold: threshold, approvers: approvers.approvers, policy: policy)
    let envelope = try RequestEnvelope(
      walletID: 0, walletHash: .zero, operation: .createWallet(configuration), nonce: nonce, expiry: now + 300
    ).encoded()
    let approvals = [
      approvers.alice.approve(envelope, as: "alice"), approvers.bob.approve(envelope, as: "bob"),
      approvers.bot.approve(envelope, as: "ops-bot"),
    ]
    return (envelope, try approvals.map { try $0.encoded() })
  }

  /// The envelope of `operation` on wallet `id` as the server would prepare it now.
  func envelope(
    _ id: UInt64, _ operation: RequestEnvelope.Operation, nonce: UInt64? = nil, expiry: UInt64? = nil,
    chain: ChainData? = nil
  ) throws -> RequestEnvelope {
    let wallet = try self.wallet(id)
    var chainData = chain
    if chainData == nil, case .signEIP1559(let transaction) = operation {
      chainData = .ethereum(chainID: transaction.chainID)
    } else if chainData == nil, case .signPersonalMessage = operation {
      chainData = .ethereum(chainID: 1)
    }
    return RequestEnvelope(
      walletID: id, walletHash: Hash256.sha256(wallet.encoding), operation: operation,
      nonce: nonce ?? wallet.data.requestNonce + 1, expiry: expiry ?? now + 300, chain: chainData)
  }

  /// Sends a signing request with the given approvals (encodings).
  func sign(
    _ id: UInt64, _ envelope: [UInt8], _ approvals: [Approval], proof: WalletProof? = nil
  ) async throws -> RequestResult {
    let wallet = try self.wallet(id)
    let result = try await vault.sign(
      envelope: envelope, approvals: try approvals.map { try $0.encoded() }, walletData: wallet.encoding,
      sealedSeed: wallet.sealedSeed, proof: try proof ?? mirror.proof(ofWallet: id))
    try receive(result)
    return result
  }
}

/// A transaction paying `to` `value` wei on chain 1.
func transfer(
  to: [UInt8] = Array(repeating: 0x11, count: 20), value: Amount = Amount(1_000_000), nonce: UInt64 = 0
)
  -> EIP1559Transaction
{
  EIP1559Transaction(
    chainID: 1, nonce: nonce, maxPriorityFeePerGas: Amount(2_000_000_000), maxFeePerGas: Amount(30_000_000_000),
    gasLimit: 21_000, to: to, value: value)
}
