import Custody
import Foundation
import TestSupport
import Testing
import Vault
import VaultWire

/// The whole workflow with real processes: custos-hsm on a copy of the rehearsed device,
/// unsealed by two holders; custos-server on a loopback port with a SQLite file; HTTP from the
/// test. Every answer is checked against openapi.yaml at the end of each test.
@Suite(.serialized) struct WorkflowTests {
  @Test func approvedTransferIsSignedByTheWalletsKey() async throws {
    let stack = try await Stack()
    defer { stack.stop() }
    let api = stack.api!
    let approvers = try Approvers()
    _ = try await stack.waitForAgreement()

    // A 2-of-3 custodial secp256k1 wallet: two bots and one passkey, each approving its creation.
    let (walletID, creation) = try await api.createWallet(approvers)
    #expect(walletID == 1)
    let created = try await api.send("GET", "/v1/requests/\(creation)", operation: "getRequest")
    #expect(created.json["status"] as? String == "completed")

    // Its Ethereum address, from the vault.
    let addresses = try await api.send("GET", "/v1/wallets/\(walletID)/addresses", operation: "getWalletAddresses")
    #expect(addresses.status == 200, "\(addresses)")
    let entry = try #require((addresses.json["addresses"] as? [[String: Any]])?.first)
    let address = try #require(entry["address"] as? String)
    #expect(entry["path"] as? String == "m/44'/60'/0'/0/0")
    #expect(
      EthereumAddress.parse(address) != nil && EthereumAddress.checksummed(EthereumAddress.parse(address)!) == address)

    // The wallet, with its proof against the device's root.
    let wallet = try await api.send("GET", "/v1/wallets/\(walletID)", operation: "getWallet")
    #expect(wallet.status == 200, "\(wallet)")
    let proof = try #require(wallet.json["proof"] as? [String: Any])
    #expect(proof["deviceRootMatches"] as? Bool == true)
    let siblings = (proof["siblings"] as? [String] ?? []).compactMap { Hash256(hex: $0) }
    let leafText = try #require(proof["leaf"] as? String)
    let leaf = try #require(Hash256(hex: leafText))
    let nodeNumber = try #require(proof["node"] as? Int)
    let node = UInt64(nodeNumber)
    #expect(Merkle.root(from: leaf, at: node, siblings: siblings).hex == proof["root"] as? String)
    #expect(try await stack.deviceRoot().root.hex == proof["root"] as? String)
    #expect((wallet.json["approvers"] as? [[String: Any]])?.map { $0["id"] as? String } == ["bot-a", "bot-b", "carol"])

    // An EIP-1559 transfer approved by two of the three.
    let requestID = try await api.transfer(walletID)
    let approval = try await api.send(
      "GET", "/v1/approvals/\(requestID)", key: .some(nil), operation: "getApprovalRequest")
    let rendering = try #require(approval.json["rendering"] as? String)
    #expect(rendering.contains("sign an EIP-1559 transaction"))
    #expect(rendering.contains("0.001 ETH (1000000000000000 wei)"))
    #expect(rendering.contains("m/44'/60'/0'/0/0"))
    let envelope = try await api.envelope(requestID)
    #expect(try RequestEnvelope.decode(envelope).walletID == UInt64(walletID))
    #expect(approval.json["challenge"] as? String == Base64URL.encode(RequestEnvelope.challenge(of: envelope).bytes))
    let first = try await api.approve(requestID, as: "bot-a", by: approvers)
    #expect(first.status == 200 && first.json["status"] as? String == "awaiting-approvals", "\(first)")
    let second = try await api.approve(requestID, as: "carol", by: approvers)
    #expect(second.status == 200 && second.json["status"] as? String == "completed", "\(second)")
    let result = try #require(second.json["result"] as? [String: Any])
    let signedText = try #require(result["signedTransaction"] as? String)
    let signed = try #require(Hex.decode(signedText))
    #expect(result["transactionHash"] as? String == "0x" + Hex.encode(Keccak256.hash(signed)))

    // The signed transaction's sender recovers to the wallet's address.
    let sender = try EthereumSigning.sender(ofSignedTransaction: signed, secp: try Secp256k1())
    #expect(EthereumAddress.checksummed(sender) == address)

    // The request, as its customer reads it.
    let request = try await api.send("GET", "/v1/requests/\(requestID)", operation: "getRequest")
    #expect(request.json["status"] as? String == "completed")
    #expect((request.json["approvals"] as? [[String: Any]])?.count == 2)

    // One approval short: held, never sent, no result.
    let short = try await api.transfer(walletID, nonce: 1)
    let only = try await api.approve(short, as: "bot-b", by: approvers)
    #expect(only.json["status"] as? String == "awaiting-approvals")
    let held = try await api.send("GET", "/v1/requests/\(short)", operation: "getRequest")
    #expect(held.json["result"] == nil && held.json["awaiting"] as? [String] == ["bot-a", "carol"])

    // A tampered request: a bot's signature over a changed envelope (more value) is refused
    // and not stored; the request still waits for its real approvals.
    var changed = try RequestEnvelope.decode(try await api.envelope(short))
    if case .signEIP1559(var transaction) = changed.operation {
      transaction.value = Amount(decimal: "99000000000000000000")!
      changed.operation = .signEIP1559(transaction)
    }
    let tampered = try changed.encoded()
    let refused = try await api.send(
      "POST", "/v1/approvals/\(short)", json: approvers.approval("bot-a", envelope: tampered), key: .some(nil),
      operation: "submitApproval")
    #expect(refused.status == 422 && refused.code == "approvalRefused", "\(refused)")
    #expect(refused.json["vaultCode"] as? String == "badSignature")
    let passkeyRefused = try await api.send(
      "POST", "/v1/approvals/\(short)", json: approvers.approval("carol", envelope: tampered), key: .some(nil),
      operation: "submitApproval")
    #expect(passkeyRefused.status == 422 && passkeyRefused.json["vaultCode"] as? String == "challengeMismatch")
    let still = try await api.send("GET", "/v1/requests/\(short)", operation: "getRequest")
    #expect((still.json["approvals"] as? [[String: Any]])?.count == 1)

    // The second approval completes it; the first transfer's request is untouched.
    let done = try await api.approve(short, as: "carol", by: approvers)
    #expect(done.json["status"] as? String == "completed", "\(done)")

    // Lists.
    let wallets = try await api.send("GET", "/v1/wallets", operation: "listWallets")
    #expect((wallets.json["wallets"] as? [[String: Any]])?.count == 1)
    let requests = try await api.send("GET", "/v1/wallets/\(walletID)/requests", operation: "listWalletRequests")
    #expect((requests.json["requests"] as? [[String: Any]])?.count == 3)

    // The database's tree is the device's.
    let snapshot = try stack.databaseSnapshot()
    let deviceRoot = try await stack.deviceRoot()
    #expect(snapshot.root == deviceRoot.root && snapshot.leafCount == deviceRoot.leafCount)
    #expect(snapshot.pendingIntents == 0)
    try api.checkRecordedAnswers()
  }

  @Test func walletChangeAndRemovalGoThroughApprovals() async throws {
    let stack = try await Stack()
    defer { stack.stop() }
    let api = stack.api!
    let approvers = try Approvers(seed: "change and removal")
    _ = try await stack.waitForAgreement()
    let (walletID, _) = try await api.createWallet(approvers)
    let first = try await api.transfer(walletID)

    // Change to 1-of-2 (bot-a and carol) with a per-transaction limit; approved by two.
    let proposal = approvers.proposal.filter { $0["id"] as? String != "bot-b" }
    let change = try await api.send(
      "POST", "/v1/wallets/\(walletID)/changes",
      json: ["threshold": 1, "approvers": proposal, "policy": ["perTransactionLimitWei": "5000000000000000"]],
      operation: "changeWallet")
    #expect(change.status == 202, "\(change)")
    let changeID = try #require(change.json["id"] as? String)
    try await api.approve(changeID, as: "bot-a", by: approvers)
    let changed = try await api.approve(changeID, as: "bot-b", by: approvers)
    #expect(changed.json["status"] as? String == "completed", "\(changed)")
    // The transfer made against the old wallet data can no longer pass: superseded.
    let old = try await api.send("GET", "/v1/requests/\(first)", operation: "getRequest")
    #expect(old.json["status"] as? String == "superseded")
    let wallet = try await api.send("GET", "/v1/wallets/\(walletID)", operation: "getWallet")
    #expect(wallet.json["threshold"] as? Int == 1)
    #expect((wallet.json["policy"] as? [String: Any])?["perTransactionLimitWei"] as? String == "5000000000000000")

    // Over the new limit: the vault refuses it, and says why.
    let big = try await api.transfer(walletID, valueWei: "6000000000000000")
    let refused = try await api.approve(big, as: "carol", by: approvers)
    #expect(refused.json["status"] as? String == "refused", "\(refused)")
    #expect((refused.json["failure"] as? [String: Any])?["vaultCode"] as? String == "perTransactionLimitExceeded")

    // Removal, approved by one (the new threshold).
    let removal = try await api.send("DELETE", "/v1/wallets/\(walletID)", operation: "removeWallet")
    #expect(removal.status == 202, "\(removal)")
    let removalID = try #require(removal.json["id"] as? String)
    let removed = try await api.approve(removalID, as: "bot-a", by: approvers)
    #expect(removed.json["status"] as? String == "completed", "\(removed)")
    let gone = try await api.send("GET", "/v1/wallets/\(walletID)", operation: "getWallet")
    #expect(gone.json["status"] as? String == "removed")
    #expect(gone.json["walletHash"] as? String == Hash256.zero.hex)
    let after = try await api.send(
      "POST", "/v1/wallets/\(walletID)/requests",
      json: ["personalMessage": ["text": "hello"]], operation: "createSigningRequest")
    #expect(after.status == 409 && after.code == "walletRemoved", "\(after)")

    let snapshot = try stack.databaseSnapshot()
    let deviceRoot = try await stack.deviceRoot()
    #expect(snapshot.root == deviceRoot.root && snapshot.leafCount == deviceRoot.leafCount)
    #expect(snapshot.sealedSeeds == 0)
    try api.checkRecordedAnswers()
  }
}
