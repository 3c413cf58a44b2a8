import Custody
import Foundation
import HSMBridge
import TestSupport
import Testing

@testable import Vault

/// RLP against the Ethereum Foundation's RLP tests, and the vault's EIP-1559 transactions and
/// EIP-191 signatures against an independent signer (eth-account).
@Suite(.serialized) struct EthereumTests {
  /// ethereum/tests `RLPTests/rlptest.json`, every entry (see Vectors/README.md).
  @Test func rlpOfficialVectors() throws {
    let url = try #require(Bundle.module.url(forResource: "rlptest.json", withExtension: nil, subdirectory: "Vectors"))
    let tests = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: [String: Any]])
    #expect(tests.count == 28)
    for (name, test) in tests.sorted(by: { $0.key < $1.key }) {
      let expected = try VectorFile.hex(try #require(test["out"] as? String))
      #expect(try Self.encode(try #require(test["in"])) == expected, "\(name)")
      // The decoder reads every vector back to the same item.
      #expect(try RLP.decode(expected).encoded == expected, "\(name)")
    }
  }

  @Test(arguments: [
    ("8100", "a single byte below 0x80 must stand for itself"),
    ("b80100", "a long header for a payload of 1 bytes"),
    ("b900380102", "a length with a leading zero"),
    ("83616263ff", "1 bytes after the item"),
    ("836162", "the payload of 3 bytes is cut off"),
    ("c3616263c0", "1 bytes after the item"),
    ("c4836162", "the payload of 4 bytes is cut off"),
    ("", "an item is missing"),
  ])
  func rlpDecoderRefusesNonCanonicalInput(hex: String, reason: String) throws {
    let error = #expect(throws: RLPError.self) { _ = try RLP.decode(try VectorFile.hex(hex)) }
    #expect(error?.reason == reason, "\(hex)")
  }

  @Test func senderRecoveryRefusesWhatIsNotASignedEIP1559Transaction() throws {
    let secp = try Secp256k1()
    for raw: [UInt8] in [[0x01, 0xC0], [0x02, 0xC0], [0x02, 0x81, 0x00], []] {
      #expect(throws: VaultError.self) { _ = try EthereumSigning.sender(ofSignedTransaction: raw, secp: secp) }
    }
  }

  /// The test file's input notation: strings are their UTF-8 bytes, `#` strings and numbers
  /// are unsigned integers, arrays are lists.
  static func encode(_ value: Any) throws -> [UInt8] {
    if let list = value as? [Any] { return RLP.encode(list: try list.map(encode)) }
    if let text = value as? String {
      if text.hasPrefix("#") { return RLP.encode(bytes: try bigEndian(decimal: text.dropFirst())) }
      return RLP.encode(bytes: Array(text.utf8))
    }
    let number = try #require(value as? NSNumber)
    return RLP.encode(uint: number.uint64Value)
  }

  /// The big-endian magnitude of a decimal number of any size.
  static func bigEndian(decimal: Substring) throws -> [UInt8] {
    var bytes = [UInt8]()  // little-endian while building
    for character in decimal {
      var carry = try #require(character.wholeNumberValue)
      for index in bytes.indices {
        let value = Int(bytes[index]) * 10 + carry
        bytes[index] = UInt8(value & 0xFF)
        carry = value >> 8
      }
      while carry > 0 {
        bytes.append(UInt8(carry & 0xFF))
        carry >>= 8
      }
    }
    return bytes.reversed()
  }

  struct Vectors: Decodable {
    struct Transaction: Decodable {
      struct Entry: Decodable {
        var address: String
        var storageKeys: [String]
      }
      var path, address: String
      var chainId, nonce, gas: UInt64
      var maxPriorityFeePerGas, maxFeePerGas, value: String
      var to, data, hash, raw: String
      var accessList: [Entry]
    }
    struct Message: Decodable {
      var path, address, message, signature: String
    }
    var source, mnemonic, seed: String
    var transactions: [Transaction]
    var personalMessages: [Message]
  }

  static func vectors() throws -> Vectors {
    let url = try #require(
      Bundle.module.url(forResource: "eth-account-eip1559.json", withExtension: nil, subdirectory: "Vectors"))
    return try JSONDecoder().decode(Vectors.self, from: Data(contentsOf: url))
  }

  static func transaction(_ vector: Vectors.Transaction) throws -> EIP1559Transaction {
    EIP1559Transaction(
      chainID: vector.chainId, nonce: vector.nonce,
      maxPriorityFeePerGas: try #require(Amount(decimal: vector.maxPriorityFeePerGas)),
      maxFeePerGas: try #require(Amount(decimal: vector.maxFeePerGas)), gasLimit: vector.gas,
      to: try #require(EthereumAddress.parse(vector.to)), value: try #require(Amount(decimal: vector.value)),
      data: try VectorFile.hex(vector.data),
      accessList: try vector.accessList.map {
        .init(
          address: try #require(EthereumAddress.parse($0.address)),
          storageKeys: try $0.storageKeys.map { try VectorFile.hex($0) })
      })
  }

  static func path(_ text: String) throws -> [UInt32] {
    try DerivationPath(parsing: text).components.map(\.rawValue)
  }

  /// The known-answer test: eth-account (scripts/eip1559-vectors.py) derived keys from the
  /// BIP-39 test mnemonic itself and signed these transactions and messages. The test seals
  /// the same seed in a real token (the sealer's own `seal`: the vault itself only ever
  /// creates wallets with seeds from the token's generator, so this is the test-only import
  /// path), commits a root holding the wallet, and has `CustodyVault` sign each request with
  /// two approvals: the raw transactions and signatures must be the same bytes, their hashes
  /// eth-account's, and their senders the wallet's addresses.
  @Test func knownAnswersFromEthAccount() async throws {
    let vectors = try Self.vectors()
    let approvers = try TestApprovers(seed: "known answers")
    let device = try TestDevice(partitions: ["custody"], profile: "custody")
    let session = try device.userSession("custody")
    _ = try SeedSealer.generateMasterKey(in: session)
    let sealer = SeedSealer(session: session, masterKey: try SeedSealer.findMasterKey(in: session), logger: testLogger)

    var wallet = WalletData(
      id: 1, threshold: 2, custodial: true, approvers: approvers.approvers, curve: .secp256k1, derivation: .bip32,
      requestNonce: 1)
    var encoding = try wallet.encoded()
    var sealed = try sealer.seal(
      SecretBytes(try VectorFile.hex(vectors.seed)), walletHash: Hash256.sha256(encoding).bytes)
    var tree = MerkleTree()
    try tree.add(walletHash: Hash256.sha256(encoding))
    _ = try RootStateStore.initialize(
      session: session, state: RootState(epoch: 0, leafCount: tree.leafCount, root: try tree.root()), logger: testLogger
    )
    let vault = try CustodyVault(
      session: session, syncDirectory: nil, sessions: 2, clock: TestClock(noon), logger: testLogger)

    func request(_ operation: RequestEnvelope.Operation, path: [UInt32], chainID: UInt64) async throws -> [UInt8] {
      let envelope = try RequestEnvelope(
        walletID: 1, walletHash: Hash256.sha256(encoding), operation: operation, nonce: wallet.requestNonce + 1,
        expiry: noon + 60, chain: .ethereum(chainID: chainID, path: path)
      ).encoded()
      let result = try await vault.sign(
        envelope: envelope,
        approvals: [
          try approvers.alice.approve(envelope, as: "alice").encoded(),
          try approvers.bot.approve(envelope, as: "ops-bot").encoded(),
        ], walletData: encoding, sealedSeed: sealed.bytes,
        proof: WalletProof(
          siblings: try tree.proof(ofWallet: 1).siblings,
          anchor: RootAnchor(leafCount: tree.leafCount, root: try tree.root())))
      encoding = result.walletData
      wallet = try WalletData.decode(encoding)
      sealed = try SealedSeed(bytes: result.sealedSeed)
      try tree.update(walletID: 1, walletHash: result.change.leaf)
      return result.output
    }

    #expect(vectors.transactions.count == 3)
    for vector in vectors.transactions {
      let transaction = try Self.transaction(vector)
      let path = try Self.path(vector.path)
      let raw = try await request(.signEIP1559(transaction), path: path, chainID: transaction.chainID)
      #expect(Hex.encode(raw) == vector.raw, "\(vector.path) chain \(vector.chainId)")
      #expect(Hex.encode(Keccak256.hash(raw)) == vector.hash)
      #expect(EthereumAddress.checksummed(try recoverSender(raw, transaction: transaction)) == vector.address)
      let address = try await vault.address(walletData: encoding, sealedSeed: sealed.bytes, path: path)
      #expect(address == vector.address)
    }
    #expect(vectors.personalMessages.count == 2)
    for vector in vectors.personalMessages {
      let message = try VectorFile.hex(vector.message)
      let signature = try await request(.signPersonalMessage(message), path: try Self.path(vector.path), chainID: 1)
      #expect(Hex.encode(signature) == vector.signature, "\(vector.path)")
      let secp = try Secp256k1()
      let recovered = try #require(
        secp.recoverECDSA(
          signature: Array(signature[0..<64]), recoveryID: signature[64] - 27,
          digest: EthereumSigning.personalMessageHash(message)))
      #expect(
        EthereumAddress.checksummed(try EthereumSigning.address(ofPublicKey: recovered, secp: secp)) == vector.address)
    }
    // Every signature moved the wallet's nonce and is durable.
    #expect(wallet.requestNonce == 1 + 5)
    #expect(vault.rootState.durable.root == (try tree.root()))
  }

  /// The signing payload's layout for a small transaction, item by item.
  @Test func signingPayloadLayout() throws {
    let transaction = EIP1559Transaction(
      chainID: 1, nonce: 0, maxPriorityFeePerGas: Amount(1), maxFeePerGas: Amount(0x0100), gasLimit: 21_000,
      to: [UInt8](repeating: 0xAA, count: 20), value: .zero, data: [0x7F],
      accessList: [.init(address: [UInt8](repeating: 0xBB, count: 20), storageKeys: [[UInt8](repeating: 0, count: 32)])]
    )
    let items: [UInt8] =
      [0x01, 0x80, 0x01, 0x82, 0x01, 0x00, 0x82, 0x52, 0x08, 0x94] + [UInt8](repeating: 0xAA, count: 20)
      + [0x80, 0x7F] + [0xF8, 0x38, 0xF7, 0x94] + [UInt8](repeating: 0xBB, count: 20) + [0xE1, 0xA0]
      + [UInt8](repeating: 0, count: 32)
    #expect(EthereumSigning.signingPayload(transaction) == [0x02, 0xF8, UInt8(items.count)] + items)
  }
}
