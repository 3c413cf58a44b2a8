import Custody
import Foundation
import TestSupport
import Testing

@testable import Vault

/// The "Bad input" list, each through `CustodyVault` on a real partition: every
/// refusal has its own error, and afterwards the root is as it was (the vault's durable and
/// running root, and the token's files), so the wallet's nonce and sealed seed did not move
/// either; the same wallet data, sealed seed and nonce then still sign.
@Suite(.serialized) struct CustodyVaultRefusalTests {
  enum BadInput: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case missingApprover, duplicateApprover, unenrolledKey, unknownApproverName, forgedAssertion, wrongOrigin, wrongRPID
    case userPresenceMissing, userVerificationMissing, signCounterGoingBack, expiredEnvelope, replayedNonce
    case replayedRequest, fieldChangedAfterApproval, fieldChangedAfterBotApproval, oldWalletHash
    case nonCanonicalEnvelope, perTransactionLimit, rollingWindowLimit, destinationNotOnAllowlist
    case outsideTimeOfDay, otherWallet, wrongOperation, proofNotForThisRoot, sealedSeedOfAnotherWallet
    case malformedApproval

    var testDescription: String { rawValue }

    var expected: RequestError.Code {
      switch self {
      case .missingApprover: return .thresholdNotMet
      case .duplicateApprover: return .duplicateApprover
      case .unenrolledKey, .unknownApproverName: return .unknownApprover
      case .forgedAssertion: return .badSignature
      case .wrongOrigin: return .wrongOrigin
      case .wrongRPID: return .wrongRPID
      case .userPresenceMissing: return .userPresenceMissing
      case .userVerificationMissing: return .userVerificationMissing
      case .signCounterGoingBack: return .signCounterNotIncreasing
      case .expiredEnvelope: return .expired
      case .replayedNonce: return .replayedNonce
      case .replayedRequest: return .signCounterNotIncreasing
      case .fieldChangedAfterApproval: return .challengeMismatch
      case .fieldChangedAfterBotApproval: return .badSignature
      case .oldWalletHash: return .staleWalletHash
      case .nonCanonicalEnvelope: return .nonCanonicalEnvelope
      case .perTransactionLimit: return .perTransactionLimitExceeded
      case .rollingWindowLimit: return .rollingLimitExceeded
      case .destinationNotOnAllowlist: return .destinationNotAllowed
      case .outsideTimeOfDay: return .outsideTimeWindow
      case .otherWallet: return .walletMismatch
      case .wrongOperation: return .wrongOperation
      case .proofNotForThisRoot: return .proofInvalid
      case .sealedSeedOfAnotherWallet: return .sealedSeedMismatch
      case .malformedApproval: return .malformedApproval
      }
    }
  }

  static let destination = EthereumAddress.parse("0x52908400098527886E0F7030069857D2E4169EE7")!
  static let ether = Amount(decimal: "1000000000000000000")!
  static let policy = Policy(
    perTransactionLimit: ether,
    rollingWindow: RollingLimit(seconds: 86_400, limit: Amount(decimal: "1500000000000000000")!),
    destinationAllowlist: ["0x52908400098527886E0F7030069857D2E4169EE7"],
    timeOfDay: TimeOfDayWindow(fromMinute: 8 * 60, toMinute: 20 * 60))

  @Test(arguments: BadInput.allCases)
  func refusedAndNothingMoved(_ input: BadInput) async throws {
    let clock = TestClock(noon)
    let harness = try CustodyHarness(clock: clock)
    let approvers = try TestApprovers()
    let id = try await harness.createWallet(approvers, policy: Self.policy)
    // One signature first, so counters, nonce and the rolling window hold something.
    let first = try harness.envelope(id, .signEIP1559(transfer(to: Self.destination, value: Self.ether))).encoded()
    let firstApprovals = [approvers.alice.approve(first, as: "alice"), approvers.bob.approve(first, as: "bob")]
    let firstWallet = try harness.wallet(id)
    _ = try await harness.sign(id, first, firstApprovals)
    let strangers = try TestApprovers(seed: "another wallet")
    let other = try await harness.createWallet(strangers)

    let wallet = try harness.wallet(id)
    let rootBefore = harness.vault.rootState
    let tokenBefore = try harness.tokenRoot()
    #expect(tokenBefore == rootBefore.durable)

    let small = transfer(to: Self.destination, value: Amount(decimal: "100000000000000000")!)
    var envelope = try harness.envelope(id, .signEIP1559(small))
    var encoded = try envelope.encoded()
    var approvals = [approvers.alice.approve(encoded, as: "alice"), approvers.bob.approve(encoded, as: "bob")]
    var walletData = wallet.encoding
    var sealedSeed = wallet.sealedSeed
    var proof = try harness.mirror.proof(ofWallet: id)
    var options = SoftwareAuthenticator.Options()
    var call = "sign"

    switch input {
    case .missingApprover:
      approvals = [approvers.alice.approve(encoded, as: "alice")]
    case .duplicateApprover:
      approvals = [approvers.alice.approve(encoded, as: "alice"), approvers.alice.approve(encoded, as: "alice")]
    case .unenrolledKey:
      approvals[1] = try SoftwareAuthenticator(.es256).approve(encoded, as: "bob")
    case .forgedAssertion:
      // Another key claiming bob's credential id: its signature is not bob's.
      approvals[1] = try SoftwareAuthenticator(.edDSA, credentialID: approvers.bob.credentialID).approve(
        encoded, as: "bob")
    case .unknownApproverName:
      approvals[1] = try SoftwareAuthenticator(.es256).approve(encoded, as: "mallory")
    case .wrongOrigin:
      options.origin = "https://custody.example.evil"
    case .wrongRPID:
      options.rpID = "evil.example"
    case .userPresenceMissing:
      options.userPresent = false
    case .userVerificationMissing:
      options.userVerified = false
    case .signCounterGoingBack:
      options.signCount = 1
    case .expiredEnvelope:
      envelope.expiry = noon
      encoded = try envelope.encoded()
      approvals = [approvers.alice.approve(encoded, as: "alice"), approvers.bob.approve(encoded, as: "bob")]
    case .replayedNonce:
      envelope.nonce = wallet.data.requestNonce
      encoded = try envelope.encoded()
      approvals = [approvers.alice.approve(encoded, as: "alice"), approvers.bob.approve(encoded, as: "bob")]
    case .replayedRequest:
      // The first request resent exactly, approvals and all, with the wallet data the proof
      // shows (the data it was made against no longer passes the proof).
      encoded = first
      approvals = firstApprovals
    case .fieldChangedAfterApproval:
      envelope.operation = .signEIP1559(transfer(to: Self.destination, value: Amount(decimal: "900000000000000000")!))
      encoded = try envelope.encoded()
    case .fieldChangedAfterBotApproval:
      approvals = [approvers.bot.approve(encoded, as: "ops-bot"), approvers.bob.approve(encoded, as: "bob")]
      envelope.expiry += 1
      let changed = try envelope.encoded()
      approvals[1] = approvers.bob.approve(changed, as: "bob")
      encoded = changed
    case .oldWalletHash:
      envelope.walletHash = Hash256.sha256(firstWallet.encoding)
      encoded = try envelope.encoded()
      approvals = [approvers.alice.approve(encoded, as: "alice"), approvers.bob.approve(encoded, as: "bob")]
    case .nonCanonicalEnvelope:
      // The nonce (3) in two bytes, 0x18 0x03, where deterministic CBOR takes one, 0x03; the
      // approvers signed these very bytes.
      let nonceHead: [UInt8] = [0x03, UInt8(envelope.nonce), 0x04, 0x1A]
      let index = try #require(lastIndex(of: nonceHead, in: encoded))
      encoded.replaceSubrange((index + 1)...(index + 1), with: [0x18, UInt8(envelope.nonce)])
      approvals = [approvers.alice.approve(encoded, as: "alice"), approvers.bob.approve(encoded, as: "bob")]
    case .perTransactionLimit:
      envelope.operation = .signEIP1559(transfer(to: Self.destination, value: Amount(decimal: "1000000000000000001")!))
      encoded = try envelope.encoded()
      approvals = [approvers.alice.approve(encoded, as: "alice"), approvers.bob.approve(encoded, as: "bob")]
    case .rollingWindowLimit:
      envelope.operation = .signEIP1559(transfer(to: Self.destination, value: Amount(decimal: "500000000000000001")!))
      encoded = try envelope.encoded()
      approvals = [approvers.alice.approve(encoded, as: "alice"), approvers.bob.approve(encoded, as: "bob")]
    case .destinationNotOnAllowlist:
      envelope.operation = .signEIP1559(transfer(to: [UInt8](repeating: 0x33, count: 20), value: Amount(1)))
      encoded = try envelope.encoded()
      approvals = [approvers.alice.approve(encoded, as: "alice"), approvers.bob.approve(encoded, as: "bob")]
    case .outsideTimeOfDay:
      clock.set(noon + 9 * 3600)  // 21:00 UTC
      envelope.expiry = noon + 10 * 3600
      encoded = try envelope.encoded()
      approvals = [approvers.alice.approve(encoded, as: "alice"), approvers.bob.approve(encoded, as: "bob")]
    case .otherWallet:
      let theirs = try harness.wallet(other)
      walletData = theirs.encoding
      sealedSeed = theirs.sealedSeed
      proof = try harness.mirror.proof(ofWallet: other)
      approvals = [strangers.alice.approve(encoded, as: "alice"), strangers.bob.approve(encoded, as: "bob")]
    case .wrongOperation:
      call = "remove"
    case .proofNotForThisRoot:
      proof.siblings[0] = Hash256.sha256([1, 2, 3])
    case .sealedSeedOfAnotherWallet:
      sealedSeed = try harness.wallet(other).sealedSeed
    case .malformedApproval:
      var bytes = try approvals[1].encoded()
      bytes.append(0x00)
      let encodedApprovals = [try approvals[0].encoded(), bytes]
      #expect(
        await refusal {
          _ = try await harness.vault.sign(
            envelope: encoded, approvals: encodedApprovals, walletData: walletData, sealedSeed: sealedSeed, proof: proof
          )
        } == input.expected)
    }
    if options != SoftwareAuthenticator.Options() {
      approvals[1] = approvers.alice.approve(encoded, as: "alice", options: options)
      approvals[0] = approvers.bob.approve(encoded, as: "bob")
    }
    if input != .malformedApproval {
      let sent = try approvals.map { try $0.encoded() }
      let code = await refusal {
        if call == "remove" {
          _ = try await harness.vault.removeWallet(
            envelope: encoded, approvals: sent, walletData: walletData, proof: proof)
        } else {
          _ = try await harness.vault.sign(
            envelope: encoded, approvals: sent, walletData: walletData, sealedSeed: sealedSeed, proof: proof)
        }
      }
      #expect(code == input.expected)
    }

    // Nothing moved: the roots, hence the wallet's data (nonce, counters, policy state).
    #expect(harness.vault.rootState == rootBefore)
    #expect(try harness.tokenRoot() == tokenBefore)
    #expect(try harness.wallet(id).encoding == wallet.encoding)
    #expect(try harness.wallet(id).sealedSeed == wallet.sealedSeed)

    // And the wallet still signs with that data, that sealed seed and that nonce.
    clock.set(noon + 60)
    let retry = try harness.envelope(id, .signEIP1559(small)).encoded()
    #expect(try RequestEnvelope.decode(retry).nonce == wallet.data.requestNonce + 1)
    let result = try await harness.sign(
      id, retry, [approvers.alice.approve(retry, as: "alice"), approvers.bob.approve(retry, as: "bob")])
    #expect(try WalletData.decode(result.walletData).requestNonce == wallet.data.requestNonce + 1)
  }

  func lastIndex(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
    guard haystack.count >= needle.count else { return nil }
    return (0...(haystack.count - needle.count)).last { Array(haystack[$0..<$0 + needle.count]) == needle }
  }
}
