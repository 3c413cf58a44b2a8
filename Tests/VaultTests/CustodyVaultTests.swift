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
}

/// The sender of a raw EIP-1559 transaction, recovered from its signature.
func recoverSender(_ raw: [UInt8], transaction: EIP1559Transaction) throws -> [UInt8] {
  let secp = try Secp256k1()
  let unsigned = EthereumSigning.signedTransaction(transaction, signature: [UInt8](repeating: 0, count: 64), yParity: 0)
  // The signature is the last three RLP items: y parity, r, s.
  let (yParity, r, s) = try lastThreeItems(raw)
  #expect(unsigned.count > 0)
  let signature = leftPad(r) + leftPad(s)
  let publicKey = try #require(
    secp.recoverECDSA(signature: signature, recoveryID: yParity, digest: EthereumSigning.signingHash(transaction)))
  return try EthereumSigning.address(ofPublicKey: publicKey, secp: secp)
}

func leftPad(_ bytes: [UInt8]) -> [UInt8] { [UInt8](repeating: 0, count: 32 - bytes.count) + bytes }

/// y parity, r and s of a raw type-2 transaction (a minimal RLP reader for the test).
func lastThreeItems(_ raw: [UInt8]) throws -> (UInt8, [UInt8], [UInt8]) {
  var items = [[UInt8]]()
  var index = 1
  func length(_ lengthOfLength: Int) -> Int {
    var value = 0
    for _ in 0..<lengthOfLength {
      value = value << 8 | Int(raw[index])
      index += 1
    }
    return value
  }
  let head = raw[index]
  index += 1
  if head > 0xF7 { _ = length(Int(head - 0xF7)) }
  while index < raw.count {
    let prefix = raw[index]
    index += 1
    switch prefix {
    case 0..<0x80: items.append([prefix])
    case 0x80...0xB7:
      items.append(Array(raw[index..<index + Int(prefix - 0x80)]))
      index += Int(prefix - 0x80)
    case 0xB8...0xBF:
      let count = length(Int(prefix - 0xB7))
      items.append(Array(raw[index..<index + count]))
      index += count
    case 0xC0...0xF7:
      items.append([])
      index += Int(prefix - 0xC0)
    default:
      let count = length(Int(prefix - 0xF7))
      items.append([])
      index += count
    }
  }
  try #require(items.count == 12)
  return (items[9].first ?? 0, items[10], items[11])
}

func passkeyCounters(_ wallet: WalletData) -> [String: UInt32] {
  var counters = [String: UInt32]()
  for approver in wallet.approvers {
    if case .passkey(let passkey) = approver.credential { counters[approver.id] = passkey.signCount }
  }
  return counters
}
