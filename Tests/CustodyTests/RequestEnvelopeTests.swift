import Crypto
import Custody
import Foundation
import TestSupport
import Testing

/// Request envelopes and approvals: one encoding per request, the documented layout, every
/// refusal of the decoder, the renderer, and the software authenticator's assertions.
@Suite struct RequestEnvelopeTests {
  static let hash = Hash256.sha256(Array("wallet data".utf8))
  static let destination = EthereumAddress.parse("0x52908400098527886E0F7030069857D2E4169EE7")!

  static func transaction() -> EIP1559Transaction {
    EIP1559Transaction(
      chainID: 1, nonce: 7, maxPriorityFeePerGas: Amount(2_000_000_000), maxFeePerGas: Amount(30_000_000_000),
      gasLimit: 21_000, to: destination, value: Amount(decimal: "1500000000000000000")!, data: [0xA9, 0x05],
      accessList: [.init(address: destination, storageKeys: [[UInt8](repeating: 3, count: 32)])])
  }

  static func envelopes() throws -> [RequestEnvelope] {
    let approvers = [
      try SoftwareAuthenticator(.es256).approver("alice"), try SoftwareAuthenticator(.edDSA).approver("bob"),
      try SoftwareBot(.p256).approver("ops-bot"),
    ]
    let policy = Policy(
      perTransactionLimit: Amount(5), rollingWindow: RollingLimit(seconds: 60, limit: Amount(9)),
      destinationAllowlist: ["0x52908400098527886E0F7030069857D2E4169EE7"],
      timeOfDay: TimeOfDayWindow(fromMinute: 60, toMinute: 120))
    return [
      RequestEnvelope(
        walletID: 0, walletHash: .zero,
        operation: .createWallet(WalletConfiguration(threshold: 2, approvers: approvers, policy: policy)), nonce: 1,
        expiry: 1_700_000_000),
      RequestEnvelope(
        walletID: 3, walletHash: hash,
        operation: .updateWallet(
          WalletConfigurationChange(threshold: 1, approvers: Array(approvers.prefix(1)), policy: Policy())),
        nonce: 9, expiry: 1_700_000_000),
      RequestEnvelope(walletID: 3, walletHash: hash, operation: .removeWallet, nonce: 10, expiry: 1_700_000_000),
      RequestEnvelope(
        walletID: 3, walletHash: hash, operation: .signEIP1559(transaction()), nonce: 11, expiry: 1_700_000_000,
        chain: .ethereum(chainID: 1)),
      RequestEnvelope(
        walletID: 3, walletHash: hash, operation: .signPersonalMessage(Array("hello".utf8)), nonce: 12,
        expiry: 1_700_000_000,
        chain: .ethereum(
          chainID: 137, path: [44 | ChainData.hardened, 60 | ChainData.hardened, ChainData.hardened, 0, 4])),
    ]
  }

  @Test func everyOperationRoundTrips() throws {
    for envelope in try Self.envelopes() {
      let encoded = try envelope.encoded()
      let decoded = try RequestEnvelope.decode(encoded)
      #expect(decoded == envelope, "\(envelope.operation.name)")
      #expect(try decoded.encoded() == encoded)
      // The strict CBOR decoder agrees it is deterministic CBOR.
      #expect(try CBORDecoder().decode(encoded).encoded() == encoded)
    }
  }

  /// The layout the documentation gives, byte for byte, for a remove-wallet request.
  @Test func documentedLayout() throws {
    let encoded = try RequestEnvelope(
      walletID: 3, walletHash: Self.hash, operation: .removeWallet, nonce: 10, expiry: 1_700_000_000
    ).encoded()
    var expected: [UInt8] = [0x83, 0x6E] + Array("custos/request".utf8) + [0x01, 0xA5]
    expected += [0x00, 0x03]  // 0: wallet id 3
    expected += [0x01, 0x58, 0x20] + Self.hash.bytes  // 1: wallet hash
    expected += [0x02, 0x82, 0x6D] + Array("remove-wallet".utf8) + [0xA0]  // 2: ["remove-wallet", {}]
    expected += [0x03, 0x0A]  // 3: nonce 10
    expected += [0x04, 0x1A, 0x65, 0x53, 0xF1, 0x00]  // 4: expiry 1700000000
    #expect(encoded == expected)
    #expect(RequestEnvelope.challenge(of: encoded) == Hash256.sha256(expected))
  }

  /// Anything but the one encoding of a valid request is refused, with what was wrong.
  @Test func refusals() throws {
    let sign = try Self.envelopes()[3]
    let good = try sign.encoded()
    func code(_ bytes: [UInt8]) -> RequestEnvelopeError.Code? {
      do {
        _ = try RequestEnvelope.decode(bytes)
        return nil
      } catch { return error.code }
    }
    func cbor(_ value: CBOR) throws -> [UInt8] { try value.encoded() }
    #expect(code(good) == nil)
    #expect(code(good + [0x00]) == .cbor, "trailing byte")
    var longNonce = good
    let nonceAt = try #require(lastIndex(of: [0x03, 0x0B, 0x04, 0x1A], in: good))
    longNonce.replaceSubrange(nonceAt + 1...nonceAt + 1, with: [0x18, 0x0B])
    #expect(code(longNonce) == .cbor, "a nonce not in its shortest form")
    // The same content with map keys out of order.
    guard case .array(let items) = sign.cbor, case .map(let entries) = items[2] else {
      throw CBORError(.truncated, offset: 0, "")
    }
    var unsorted: [UInt8] = [0x83] + (try cbor(items[0])) + (try cbor(items[1])) + [0xA6]
    for entry in entries.sorted(by: { $0.key.unsignedValue! > $1.key.unsignedValue! }) {
      unsorted += try cbor(entry.key) + cbor(entry.value)
    }
    #expect(code(unsorted) == .cbor, "map keys out of order")
    var indefinite = good
    indefinite[0] = 0x9F
    #expect(code(indefinite + [0xFF]) == .cbor, "indefinite-length array")

    func edited(
      _ change: (inout [(UInt64, CBOR)]) -> Void, version: UInt64 = 1, domain: String = RequestEnvelope.domain
    )
      throws -> [UInt8]
    {
      var fields = entries.map { ($0.key.unsignedValue!, $0.value) }
      change(&fields)
      return try CBOR.array([.text(domain), .unsigned(version), CBOR.map(fields)]).encoded()
    }
    #expect(code(try edited({ _ in }, domain: "custos/wallet")) == .wrongDomain)
    #expect(code(try edited({ _ in }, version: 2)) == .unsupportedVersion)
    #expect(code(try edited { $0.append((9, .null)) }) == .unknownField)
    #expect(code(try edited { $0.removeAll { $0.0 == 4 } }) == .missingField)
    #expect(code(try edited { $0[0].1 = .text("3") }) == .wrongType)
    #expect(
      code(try edited { $0[2].1 = .array([.text("transfer-everything"), .map([CBOR.Entry]())]) }) == .unknownOperation)
    #expect(code(try edited { $0.removeAll { $0.0 == 5 } }) == .missingField, "a signing request without chain data")
    #expect(code(try edited { $0[3].1 = .unsigned(0) }) == .invalidValue, "nonce 0")
    #expect(code(try edited { $0[1].1 = .bytes([1, 2, 3]) }) == .invalidValue, "a short wallet hash")

    // Inside the transaction and the chain data.
    func transaction(_ change: (inout EIP1559Transaction) -> Void) throws -> [UInt8] {
      var transaction = Self.transaction()
      change(&transaction)
      return try edited { $0[2].1 = .array([.text("sign-eip1559"), transaction.cbor]) }
    }
    #expect(code(try transaction { $0.to.removeLast() }) == .invalidValue, "a 19-byte address")
    #expect(
      code(try transaction { $0.maxPriorityFeePerGas = Amount(30_000_000_001) }) == .invalidValue, "tip above max fee")
    #expect(code(try transaction { $0.chainID = 5 }) == .invalidValue, "chain data for another chain")
    var leadingZero = try transaction { $0.value = Amount(0x80) }
    let valueAt = try #require(lastIndex(of: [0x06, 0x41, 0x80], in: leadingZero))
    leadingZero.replaceSubrange(valueAt + 1...valueAt + 2, with: [0x42, 0x00, 0x80])
    #expect(code(leadingZero) == .invalidValue, "an amount with a leading zero byte")
    #expect(
      code(try edited { $0[5].1 = .map([(0, .text("eip155:01")), (1, .array([]))]) }) == .invalidValue,
      "a chain id with a leading zero")
    #expect(
      code(try edited { $0[5].1 = .map([(0, .text("eip155:1")), (1, .array([.unsigned(1 << 32)]))]) }) == .invalidValue,
      "a child index beyond 32 bits")
    // A remove request carries no chain data; a create request names no wallet.
    let remove = try Self.envelopes()[2]
    var withChain = remove
    withChain.chain = .ethereum(chainID: 1)
    #expect(throws: RequestEnvelopeError.self) { try withChain.encoded() }
    var create = try Self.envelopes()[0]
    create.walletID = 1
    #expect(throws: RequestEnvelopeError.self) { try create.encoded() }
    // A proposal that is not valid wallet data (threshold above the approvers).
    if case .createWallet(var configuration) = create.operation {
      configuration.threshold = 4
      create.walletID = 0
      create.operation = .createWallet(configuration)
      #expect(throws: RequestEnvelopeError.self) { try create.encoded() }
    }
  }

  @Test func rendering() throws {
    let envelopes = try Self.envelopes()
    let sign = envelopes[3].rendered()
    #expect(sign.contains("sign an EIP-1559 transaction"))
    #expect(sign.contains("0x52908400098527886E0F7030069857D2E4169EE7"), "the destination with its EIP-55 checksum")
    #expect(sign.contains("1.5 ETH (1500000000000000000 wei)"))
    #expect(sign.contains("30 gwei (30000000000 wei) per gas"))
    #expect(sign.contains("m/44'/60'/0'/0/0"))
    #expect(sign.contains("eip155:1"))
    #expect(sign.contains("2023-11-14 22:13:20 UTC (Unix 1700000000)"))
    #expect(sign.contains("#3, as of wallet data \(Self.hash.hex)"))
    let create = envelopes[0].rendered()
    #expect(create.contains("2 of 3 approvers"))
    #expect(create.contains("approver alice: passkey ES256 for custody.example"))
    #expect(create.contains("approver bob: passkey EdDSA"))
    #expect(create.contains("approver ops-bot: bot p256"))
    #expect(create.contains("at most 0.000000000000000005 ETH (5 wei)"))
    #expect(create.contains("from 01:00 to 02:00"))
    let message = envelopes[4].rendered()
    #expect(message.contains("5 bytes of text \"hello\""))
    #expect(message.contains("m/44'/60'/0'/0/4"))
  }

  @Test func approvalsRoundTripAndRefuse() throws {
    let envelope = try Self.envelopes()[3].encoded()
    let approvals = [
      try SoftwareAuthenticator(.es256).approve(envelope, as: "alice"),
      try SoftwareBot(.ed25519).approve(envelope, as: "ops-bot"),
    ]
    for approval in approvals {
      let encoded = try approval.encoded()
      #expect(try Approval.decode(encoded) == approval)
      #expect(throws: RequestEnvelopeError.self) { try Approval.decode(encoded + [0]) }
      #expect(throws: RequestEnvelopeError.self) { try Approval.decode(Array(encoded.dropLast())) }
    }
    var nameless = approvals[0]
    nameless.approverID = ""
    #expect(throws: RequestEnvelopeError.self) { try nameless.encoded() }
    var huge = approvals[1]
    huge.proof = .bot(signature: [UInt8](repeating: 1, count: 200))
    #expect(throws: RequestEnvelopeError.self) { try huge.encoded() }
  }

  /// What the software authenticator produces is what WebAuthn describes, checked here with
  /// Foundation's JSON parser and swift-crypto's verifiers.
  @Test(arguments: SoftwareAuthenticator.Algorithm.allCases)
  func authenticatorAssertions(_ algorithm: SoftwareAuthenticator.Algorithm) throws {
    let authenticator = try SoftwareAuthenticator(
      algorithm, rpID: "bank.example", origin: "https://approve.bank.example")
    let envelope = try Self.envelopes()[2].encoded()
    for count in 1...2 {
      guard case .passkey(let assertion) = authenticator.approve(envelope, as: "alice").proof else {
        Issue.record("not a passkey approval")
        return
      }
      let data = assertion.authenticatorData
      #expect(data.count == 37)
      #expect(Array(data[0..<32]) == Array(SHA256.hash(data: Array("bank.example".utf8))))
      #expect(data[32] == 0x05, "UP and UV")
      #expect(Array(data[33..<37]) == [0, 0, 0, UInt8(count)])
      let json = try #require(try JSONSerialization.jsonObject(with: Data(assertion.clientDataJSON)) as? [String: Any])
      #expect(json["type"] as? String == "webauthn.get")
      #expect(json["origin"] as? String == "https://approve.bank.example")
      #expect(json["crossOrigin"] as? Bool == false)
      let challenge = try #require(json["challenge"] as? String)
      #expect(Base64URL.decode(challenge) == Array(SHA256.hash(data: envelope)))
      let signed = data + Array(SHA256.hash(data: assertion.clientDataJSON))
      switch algorithm {
      case .es256:
        let key = try P256.Signing.PublicKey(x963Representation: authenticator.rawPublicKey)
        #expect(
          key.isValidSignature(try P256.Signing.ECDSASignature(derRepresentation: assertion.signature), for: signed))
      case .edDSA:
        let key = try Curve25519.Signing.PublicKey(rawRepresentation: authenticator.rawPublicKey)
        #expect(key.isValidSignature(assertion.signature, for: signed))
      }
      #expect(try COSEPublicKey(authenticator.coseKey).rawPublicKey == authenticator.rawPublicKey)
    }
    let bot = try SoftwareBot(.p256)
    guard case .bot(let signature) = bot.approve(envelope, as: "b").proof else { return }
    let key = try P256.Signing.PublicKey(x963Representation: bot.botKey.publicKey)
    #expect(key.isValidSignature(try P256.Signing.ECDSASignature(derRepresentation: signature), for: envelope))
  }

  /// RFC 4648's vectors, and the two characters base64url changes.
  @Test func base64url() throws {
    let url = try #require(
      Bundle.module.url(forResource: "rfc4648-base64.txt", withExtension: nil, subdirectory: "Vectors"))
    let lines = try String(contentsOf: url, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("#") }
    #expect(lines.count == 7)
    for line in lines {
      let parts = line.split(separator: " ")
      let input = parts[0] == "-" ? [] : Array(parts[0].utf8)
      let text = parts[1] == "-" ? "" : parts[1].replacingOccurrences(of: "=", with: "")
      #expect(Base64URL.encode(input) == text)
      #expect(Base64URL.decode(text) == input)
    }
    #expect(Base64URL.encode([0xFB, 0xFF]) == "-_8")
    #expect(Base64URL.decode("-_8") == [0xFB, 0xFF])
    for bad in ["Zg==", "Z", "Zh", "Zm9v+", "Zm/v"] { #expect(Base64URL.decode(bad) == nil, "\(bad)") }
    var random = SplitMix64(seed: 7)
    for length in 0..<40 {
      let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }
      let standard = Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
        .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
      #expect(Base64URL.encode(bytes) == standard)
      #expect(Base64URL.encode(bytes.lazy.map { $0 }) == standard, "a collection without contiguous storage")
      #expect(Base64URL.decode(standard) == bytes)
    }
  }

  /// The mirror applies results in the vault's order, whatever order they arrive in.
  @Test func mirrorAppliesInSequenceOrder() throws {
    var vaultSide = MerkleTree()
    var results = [RequestResult]()
    for id in 1...4 {
      let leaf = Hash256.sha256([UInt8(id)])
      try vaultSide.add(walletHash: leaf)
      results.append(
        RequestResult(
          output: [], walletData: [UInt8(id)], sealedSeed: [],
          change: AppliedWalletChange(
            sequence: UInt64(id), kind: .add, walletID: UInt64(id), node: 0, leaf: leaf,
            root: RootState(epoch: 1, leafCount: vaultSide.leafCount, root: try vaultSide.root()))))
    }
    var mirror = try VaultTreeMirror(store: InMemoryMerkleNodeStore())
    #expect(try mirror.receive(results[2]) == 0)
    #expect(try mirror.receive(results[1]) == 0)
    #expect(try mirror.receive(results[0]) == 3)
    #expect(try mirror.receive(results[3]) == 1)
    #expect(try mirror.tree.root() == vaultSide.root())
    #expect(mirror.wallets[3]?.walletData == [3])
    #expect(throws: MerkleError.self) { try mirror.receive(results[3]) }
  }

  func lastIndex(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
    guard haystack.count >= needle.count else { return nil }
    return (0...(haystack.count - needle.count)).last { Array(haystack[$0..<$0 + needle.count]) == needle }
  }
}
