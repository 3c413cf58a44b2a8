import Approver
import Crypto
import Custody
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A transfer envelope on wallet 1 (0.001 ETH to 0x1111...) that expires in an hour.
func transferEnvelope(
  wallet: UInt64 = 1, to: String = "0x1111111111111111111111111111111111111111", valueWei: String = "1000000000000000",
  data: [UInt8] = [], chainID: UInt64 = 1, expiry: UInt64 = UInt64(Date().timeIntervalSince1970) + 3600
) -> RequestEnvelope {
  RequestEnvelope(
    walletID: wallet, walletHash: Hash256.sha256(Array("wallet".utf8)),
    operation: .signEIP1559(
      EIP1559Transaction(
        chainID: chainID, nonce: 0, maxPriorityFeePerGas: Amount(2_000_000_000), maxFeePerGas: Amount(30_000_000_000),
        gasLimit: 21_000, to: EthereumAddress.parse(to)!, value: Amount(decimal: valueWei)!, data: data)),
    nonce: 2, expiry: expiry, chain: .ethereum(chainID: chainID))
}

/// What the approval route would serve for `bytes` (as request rq_00...01).
func served(
  _ bytes: [UInt8], kind: String = "sign-eip1559", wallet: UInt64? = 1, status: String = "awaiting-approvals",
  approvers: [ServedRequest.ListedApprover] = [.init(id: "bot-a", isPasskey: false, approved: false)]
) -> ServedRequest {
  ServedRequest(
    id: requestID, kind: kind, walletID: wallet, status: status, envelope: Base64URL.encode(bytes),
    challenge: Base64URL.encode(RequestEnvelope.challenge(of: bytes).bytes), approvers: approvers)
}

let requestID = "rq_" + String(repeating: "0", count: 31) + "1"

func mode(_ path: String) -> mode_t {
  var info = stat()
  stat(path, &info)
  return info.st_mode & 0o777
}

@Suite struct ApproverKeyTests {
  @Test func keygenWritesA0600FileThatLoadsBackAsTheSameKey() throws {
    let directory = try TemporaryDirectory()
    for algorithm in BotKey.Algorithm.allCases {
      let path = directory.appending("bot-\(algorithm.rawValue).key")
      let made = try ApproverKey.createBot(algorithm, approverID: "bot-a", at: path)
      #expect(mode(path) == 0o600)
      let loaded = try ApproverKey.load(path)
      #expect(loaded.approverID == "bot-a")
      #expect(loaded.approver(id: "bot-a") == made.approver(id: "bot-a"))
      // The enrolment printed is the public key, never the private one.
      let enrolment = made.enrolmentJSON(id: "bot-a")
      let object = try JSONSerialization.jsonObject(with: Data(enrolment.utf8)) as? [String: Any]
      let bot = object?["bot"] as? [String: Any]
      guard case .bot(let key) = made.approver(id: "bot-a").credential else { Issue.record("not a bot"); return }
      #expect(bot?["publicKey"] as? String == Base64URL.encode(key.publicKey))
      #expect(bot?["algorithm"] as? String == algorithm.rawValue)
      // A signature by the loaded key verifies under the enrolled key.
      let envelope = try transferEnvelope().encoded()
      let approval = try loaded.approve(envelope, as: "bot-a")
      #expect(
        try ApprovalCheck.verify(
          envelope: envelope, approvals: [approval], approvers: [made.approver(id: "bot-a")], required: 1
        )
        .count == 1)
    }
  }

  @Test func keyFilesAreNeverOverwrittenAndRefusedWhenOpenOrAltered() throws {
    let directory = try TemporaryDirectory()
    let path = directory.appending("bot.key")
    _ = try ApproverKey.createBot(.p256, approverID: nil, at: path)
    let original = FileManager.default.contents(atPath: path)
    #expect(throws: ApproverError.self) { try ApproverKey.createBot(.ed25519, approverID: nil, at: path) }
    #expect(FileManager.default.contents(atPath: path) == original)

    chmod(path, 0o644)
    let open = #expect(throws: ApproverError.self) { try ApproverKey.load(path) }
    #expect(open?.message.contains("open to group or others") == true)
    chmod(path, 0o600)

    // Another public key than the private key's.
    var object = try JSONSerialization.jsonObject(with: original!) as! [String: Any]
    object["publicKey"] = Base64URL.encode(try SoftwareBot(.p256).botKey.publicKey)
    try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
    let altered = #expect(throws: ApproverError.self) { try ApproverKey.load(path) }
    #expect(altered?.message.contains("publicKey is not the private key's") == true)

    object = try JSONSerialization.jsonObject(with: original!) as! [String: Any]
    object["note"] = "x"
    try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
    let unknown = #expect(throws: ApproverError.self) { try ApproverKey.load(path) }
    #expect(unknown?.message.contains("unknown field 'note'") == true)
  }

  @Test func aSoftwarePasskeyRaisesAndRecordsItsCounterWithEachApproval() throws {
    let directory = try TemporaryDirectory()
    let path = directory.appending("carol.passkey")
    let made = try ApproverKey.createPasskey(
      .es256, rpID: "custody.example", origin: "https://custody.example", approverID: "carol", at: path)
    #expect(mode(path) == 0o600)
    var enrolled = made.approver(id: "carol")
    let envelope = try transferEnvelope().encoded()
    for expected in 1...2 {
      let key = try ApproverKey.load(path)
      let approval = try key.approve(envelope, as: "carol")
      // The vault's own check accepts it, and takes its counter.
      enrolled = try ApprovalCheck.verify(
        envelope: envelope, approvals: [approval], approvers: [enrolled], required: 1)[0]
      guard case .passkey(let passkey) = enrolled.credential else { Issue.record("not a passkey"); return }
      #expect(passkey.signCount == UInt32(expected))
      let file = try JSONSerialization.jsonObject(with: FileManager.default.contents(atPath: path)!) as? [String: Any]
      #expect(file?["signCount"] as? Int == expected)
      #expect(mode(path) == 0o600)
    }
  }
}

@Suite struct CheckedRequestTests {
  let directory: TemporaryDirectory
  let bot: ApproverKey

  init() throws {
    directory = try TemporaryDirectory()
    bot = try ApproverKey.createBot(.p256, approverID: "bot-a", at: directory.appending("bot.key"))
  }

  @Test func aServedEnvelopeThatIsCanonicalAndMatchesPasses() throws {
    let bytes = try transferEnvelope().encoded()
    let checked = try CheckedRequest.check(served(bytes), requestID: requestID, approverID: "bot-a", key: bot)
    #expect(checked.encoding == bytes)
    #expect(checked.rendering == transferEnvelope().rendered())
    #expect(checked.rendering.contains("0.001 ETH (1000000000000000 wei)"))
  }

  @Test func aNonCanonicalEnvelopeIsRefused() throws {
    let bytes = try transferEnvelope().encoded()
    // The version 1 written as a two-byte integer: the same value, not in deterministic form.
    let domain = Array(RequestEnvelope.domain.utf8)
    let versionAt = 1 + 1 + domain.count
    #expect(bytes[versionAt] == 0x01)
    var longer = bytes
    longer.replaceSubrange(versionAt...versionAt, with: [0x18, 0x01])
    let error = #expect(throws: ApproverError.self) {
      try CheckedRequest.check(served(longer), requestID: requestID, approverID: "bot-a", key: bot)
    }
    #expect(error?.code == .envelopeNotCanonical)
    // Trailing bytes, and text that is not base64url.
    #expect(throws: ApproverError.self) {
      try CheckedRequest.check(served(bytes + [0x00]), requestID: requestID, approverID: "bot-a", key: bot)
    }
    var garbled = served(bytes)
    garbled.envelope = "not base64url!"
    #expect(throws: ApproverError.self) {
      try CheckedRequest.check(garbled, requestID: requestID, approverID: "bot-a", key: bot)
    }
  }

  @Test func whatTheServerSaysMustBeTheEnvelopes() throws {
    let bytes = try transferEnvelope().encoded()
    func refusal(_ request: ServedRequest, id: String = requestID, wallet: UInt64? = nil) -> ApproverError? {
      do {
        _ = try CheckedRequest.check(request, requestID: id, approverID: "bot-a", key: bot, expectedWallet: wallet)
        return nil
      } catch {
        return error
      }
    }
    #expect(refusal(served(bytes, wallet: 2))?.code == .envelopeMismatch)
    #expect(refusal(served(bytes, kind: "sign-personal-message"))?.code == .envelopeMismatch)
    var wrongChallenge = served(bytes)
    wrongChallenge.challenge = Base64URL.encode(Hash256.sha256(Array("other".utf8)).bytes)
    #expect(refusal(wrongChallenge)?.code == .envelopeMismatch)
    #expect(refusal(served(bytes), id: "rq_" + String(repeating: "f", count: 32))?.code == .envelopeMismatch)
    #expect(refusal(served(bytes), wallet: 7)?.code == .envelopeMismatch)
    #expect(refusal(served(bytes, status: "completed"))?.code == .requestClosed)
    #expect(
      refusal(served(bytes, approvers: [.init(id: "bot-a", isPasskey: false, approved: true)]))?.code == .requestClosed)
    #expect(
      refusal(served(bytes, approvers: [.init(id: "carol", isPasskey: true, approved: false)]))?.code == .notAnApprover)
    #expect(
      refusal(served(bytes, approvers: [.init(id: "bot-a", isPasskey: true, approved: false)]))?.code == .notAnApprover)
    let expired = try transferEnvelope(expiry: UInt64(Date().timeIntervalSince1970) - 1).encoded()
    #expect(refusal(served(expired))?.code == .requestClosed)
  }

  @Test func aCreationMustEnrolThisVeryKeyUnderTheApproversID() throws {
    let other = try SoftwareBot(.p256)
    func creation(_ approver: Approver) throws -> [UInt8] {
      try RequestEnvelope(
        walletID: 0, walletHash: .zero,
        operation: .createWallet(WalletConfiguration(threshold: 1, approvers: [approver])),
        nonce: 1, expiry: UInt64(Date().timeIntervalSince1970) + 3600
      ).encoded()
    }
    let mine = try creation(bot.approver(id: "bot-a"))
    _ = try CheckedRequest.check(
      served(mine, kind: "create-wallet", wallet: nil), requestID: requestID, approverID: "bot-a", key: bot)
    let theirs = try creation(other.approver("bot-a"))
    let error = #expect(throws: ApproverError.self) {
      try CheckedRequest.check(
        served(theirs, kind: "create-wallet", wallet: nil), requestID: requestID, approverID: "bot-a", key: bot)
    }
    #expect(error?.code == .notAnApprover)
  }
}

@Suite struct AutoApprovalRuleTests {
  static let rule = """
    {"format": "custos-approval-rule", "version": 1, "wallets": [1], "operations": ["sign-eip1559"],
     "chainIds": [1], "destinations": ["0x1111111111111111111111111111111111111111"],
     "maxValueWei": "10000000000000000", "paths": ["m/44'/60'/0'/0/0"]}
    """

  @Test func theRuleAllowsOnlyWhatItSays() throws {
    let rule = try AutoApprovalRule.parse(Data(Self.rule.utf8))
    #expect(rule.refusals(of: transferEnvelope()).isEmpty)
    #expect(rule.refusals(of: transferEnvelope(valueWei: "10000000000000000")).isEmpty)
    #expect(
      rule.refusals(of: transferEnvelope(valueWei: "10000000000000001")) == [
        "value 10000000000000001 wei exceeds the rule's 10000000000000000 wei"
      ])
    #expect(
      rule.refusals(of: transferEnvelope(to: "0x2222222222222222222222222222222222222222")).first?.contains(
        "not on the allowlist") == true)
    #expect(rule.refusals(of: transferEnvelope(data: [0xa9, 0x05])) == ["call data or an access list is not allowed"])
    #expect(rule.refusals(of: transferEnvelope(chainID: 5)) == ["chain eip155:5 is not allowed"])
    #expect(rule.refusals(of: transferEnvelope(wallet: 2)) == ["wallet 2 is not one the rule watches"])
    var message = transferEnvelope()
    message.operation = .signPersonalMessage(Array("hello".utf8))
    #expect(rule.refusals(of: message) == ["operation sign-personal-message is not allowed"])
    var otherPath = transferEnvelope()
    otherPath.chain = .ethereum(
      chainID: 1, path: [44 | ChainData.hardened, 60 | ChainData.hardened, ChainData.hardened, 0, 1])
    #expect(rule.refusals(of: otherPath) == ["key path m/44'/60'/0'/0/1 is not allowed"])
  }

  @Test func aBadRuleFileIsRefusedNamingTheField() throws {
    func error(_ text: String) -> String {
      do {
        _ = try AutoApprovalRule.parse(Data(text.utf8))
        return "accepted"
      } catch {
        return error.message
      }
    }
    let base = #"{"format": "custos-approval-rule", "version": 1, "wallets": [1], "operations": ["sign-eip1559"]"#
    #expect(error(base + "}") == "accepted")
    #expect(error(base + #", "maxValue": "1"}"#).contains("maxValue: unknown field"))
    #expect(
      error(base.replacingOccurrences(of: "sign-eip1559", with: "update-wallet") + "}").contains(
        "wallet changes need a person"))
    #expect(error(base + #", "destinations": ["0x12"]}"#).contains("destinations: '0x12' is not an Ethereum address"))
    #expect(error(base + #", "allowCallData": 1}"#).contains("allowCallData"))
    #expect(error(base + #", "maxValueWei": "1.5"}"#).contains("maxValueWei"))
    #expect(error(base.replacingOccurrences(of: "[1]", with: "[]") + "}").contains("wallets"))
    #expect(error(base.replacingOccurrences(of: "[1]", with: "[-1]") + "}").contains("wallets"))
    #expect(
      error(#"{"format": "custos-approval-rule", "version": 1, "operations": ["sign-eip1559"]}"#).contains(
        "wallets: is required"))
    #expect(error("[1]").contains("not a JSON object"))
  }
}
