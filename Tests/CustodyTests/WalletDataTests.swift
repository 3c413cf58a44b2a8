import Crypto
import TestSupport
import Testing

@testable import Custody

/// The smallest valid wallet: one Ed25519 bot, no limits.
let minimalWallet = WalletData(
  id: 1, threshold: 1, custodial: true,
  approvers: [
    Approver(id: "b", credential: .bot(BotKey(algorithm: .ed25519, publicKey: [UInt8](repeating: 0x11, count: 32))))
  ],
  curve: .secp256k1, derivation: .bip32)

/// `item` with map field `key` set to `value` (removed when nil) at the map reached by `path`
/// (indices into arrays and map keys, from the top).
func edit(_ item: CBOR, at path: [UInt64] = [2], field key: UInt64, to value: CBOR?) -> CBOR {
  if path.isEmpty {
    guard case .map(var entries) = item else { return item }
    entries.removeAll { $0.key == .unsigned(key) }
    if let value { entries.append(.init(.unsigned(key), value)) }
    return .map(entries)
  }
  switch item {
  case .array(var items):
    items[Int(path[0])] = edit(items[Int(path[0])], at: Array(path.dropFirst()), field: key, to: value)
    return .array(items)
  case .map(var entries):
    let index = entries.firstIndex { $0.key == .unsigned(path[0]) }!
    entries[index].value = edit(entries[index].value, at: Array(path.dropFirst()), field: key, to: value)
    return .map(entries)
  default: return item
  }
}

@Suite struct WalletDataTests {
  @Test func theMinimalWalletHasTheDocumentedEncoding() throws {
    // Assembled by hand from the layout in WalletData's documentation.
    let expected =
      "83" + "6d" + "637573746f732f77616c6c6574" + "01" + "a9" + "0001" + "0101" + "02f5" + "0381"
      + "a4" + "006162" + "0163626f74" + "02676564323535313" + "9" + "035820" + String(repeating: "11", count: 32)
      + "0469736563703235366b31" + "05656269703332" + "0600" + "07a10280" + "08a10080"
    let encoding = try minimalWallet.encoded()
    #expect(Hex.encode(encoding) == expected)
    #expect(try minimalWallet.walletHash() == Hash256(Array(SHA256.hash(data: Hex.decode(expected)!)))!)
  }

  @Test(arguments: [(UInt64(1), UInt64(0)), (2, 0), (3, 7), (4, 1), (12, 3), (1_000_000, 9)])
  func walletsRoundTripExactly(id: UInt64, revision: UInt64) throws {
    let wallet = SampleWallet.make(id: id, revision: revision)
    let bytes = try wallet.encoded()
    let decoded = try WalletData.decode(bytes)
    #expect(decoded == wallet)
    #expect(try decoded.encoded() == bytes)
    #expect(try wallet.walletHash().bytes == Array(SHA256.hash(data: bytes)))
    // The parsed passkeys give back the raw keys they were built from.
    guard case .passkey(let passkey) = wallet.approvers[1].credential else {
      Issue.record("bob is a passkey")
      return
    }
    #expect(try passkey.coseKey().algorithm == .edDSA)
    #expect(try passkey.coseKey().rawPublicKey.count == 32)
  }

  @Test func walletsDifferingInAnyFieldHashDifferently() throws {
    var seen = Set<Hash256>()
    var variants = [minimalWallet]
    variants.append(with(minimalWallet) { $0.id = 2 })
    variants.append(with(minimalWallet) { $0.custodial = false })
    variants.append(with(minimalWallet) { $0.requestNonce = 1 })
    variants.append(
      with(minimalWallet) {
        $0.curve = .ed25519; $0.derivation = .slip10
      })
    variants.append(with(minimalWallet) { $0.policy.perTransactionLimit = .zero })
    variants.append(with(minimalWallet) { $0.policy.destinationAllowlist = ["x"] })
    variants.append(with(minimalWallet) { $0.policyState.spent = [.init(timestamp: 1, amount: Amount(1))] })
    for wallet in variants { seen.insert(try wallet.walletHash()) }
    #expect(seen.count == variants.count)
  }

  /// Cases the decoder (and the encoder) must refuse, each with the field it names.
  static let refusals: [(String, CBOR, WalletDataError.Code, String)] = {
    let base = minimalWallet.cbor
    let bot = CBOR.map([
      (0, .text("b")), (1, .text("bot")), (2, .text("ed25519")), (3, .bytes([UInt8](repeating: 0x11, count: 32))),
    ])
    let bot2 = CBOR.map([
      (0, .text("a")), (1, .text("bot")), (2, .text("ed25519")), (3, .bytes([UInt8](repeating: 0x22, count: 32))),
    ])
    let sameKey = edit(bot2, at: [], field: 3, to: .bytes([UInt8](repeating: 0x11, count: 32)))
    let passkey = SampleWallet.make(id: 1).approvers[0].cbor
    let rs256 = CBOR.map([
      CBOR.Entry(.integer(1), .integer(3)), CBOR.Entry(.integer(3), .integer(-257)),
      CBOR.Entry(.integer(-1), .bytes([1])),
    ])
    return [
      (
        "a request's domain", edit(base, at: [], field: 0, to: nil).replacingTop(0, .text("custos/request")),
        .wrongDomain, ""
      ),
      ("a map instead of the array", base.arrayItem(2), .wrongDomain, ""),
      ("version 2", base.replacingTop(1, .unsigned(2)), .unsupportedVersion, "version"),
      ("an unknown field", edit(base, field: 9, to: .unsigned(0)), .unknownField, ""),
      ("no request nonce", edit(base, field: 6, to: nil), .missingField, "requestNonce"),
      ("custodial as a number", edit(base, field: 2, to: .unsigned(1)), .wrongType, "custodial"),
      ("wallet id 0", edit(base, field: 0, to: .unsigned(0)), .invalidValue, "id"),
      ("threshold 0", edit(base, field: 1, to: .unsigned(0)), .invalidValue, "threshold"),
      ("threshold above the approvers", edit(base, field: 1, to: .unsigned(2)), .invalidValue, "threshold"),
      ("no approvers", edit(base, field: 3, to: .array([])), .invalidValue, "approvers"),
      ("an unknown curve", edit(base, field: 4, to: .text("p256")), .invalidValue, "curve"),
      ("ed25519 with BIP-32", edit(base, field: 4, to: .text("ed25519")), .invalidValue, "derivation"),
      ("approvers out of order", edit(base, field: 3, to: .array([bot, bot2])), .invalidValue, "approvers[1].id"),
      ("one key under two names", edit(base, field: 3, to: .array([sameKey, bot])), .invalidValue, "approvers[1]"),
      (
        "a compressed P-256 bot key",
        edit(base, field: 3, to: .array([edit(bot, at: [], field: 2, to: .text("p256"))])),
        .invalidValue, "approvers[0].publicKey"
      ),
      (
        "an approver of unknown kind",
        edit(base, field: 3, to: .array([edit(bot, at: [], field: 1, to: .text("sms"))])),
        .invalidValue, "approvers[0].kind"
      ),
      (
        "an RS256 passkey",
        edit(base, field: 3, to: .array([edit(passkey, at: [], field: 3, to: .bytes(try! rs256.encoded()))])),
        .invalidValue, "approvers[0].publicKey"
      ),
      (
        "origins out of order",
        edit(
          base, field: 3,
          to: .array([edit(passkey, at: [], field: 5, to: .array([.text("https://b"), .text("https://a")]))])),
        .invalidValue, "approvers[0].allowedOrigins[1]"
      ),
      (
        "a sign count above 32 bits",
        edit(base, field: 3, to: .array([edit(passkey, at: [], field: 6, to: .unsigned(1 << 32))])),
        .invalidValue, "approvers[0].signCount"
      ),
      (
        "an amount with a leading zero", edit(base, at: [2, 7], field: 0, to: .bytes([0, 1])), .invalidValue,
        "policy.perTransactionLimit"
      ),
      (
        "an amount of 33 bytes", edit(base, at: [2, 7], field: 0, to: .bytes([UInt8](repeating: 1, count: 33))),
        .invalidValue, "policy.perTransactionLimit"
      ),
      ("a null limit", edit(base, at: [2, 7], field: 0, to: .null), .wrongType, "policy.perTransactionLimit"),
      (
        "a window of 0 seconds", edit(base, at: [2, 7], field: 1, to: .array([.unsigned(0), .bytes([1])])),
        .invalidValue, "policy.rollingWindow.seconds"
      ),
      (
        "a repeated destination", edit(base, at: [2, 7], field: 2, to: .array([.text("x"), .text("x")])),
        .invalidValue, "policy.destinationAllowlist[1]"
      ),
      (
        "an empty time window", edit(base, at: [2, 7], field: 3, to: .array([.unsigned(60), .unsigned(60)])),
        .invalidValue, "policy.timeOfDay"
      ),
      (
        "minute 1440", edit(base, at: [2, 7], field: 3, to: .array([.unsigned(0), .unsigned(1440)])), .invalidValue,
        "policy.timeOfDay"
      ),
      (
        "spends out of time order",
        edit(
          base, at: [2, 8], field: 0,
          to: .array([.array([.unsigned(5), .bytes([1])]), .array([.unsigned(4), .bytes([1])])])),
        .invalidValue, "policyState.spent[1].timestamp"
      ),
    ]
  }()

  @Test func refusesEveryMalformedWalletNamingTheField() throws {
    for (name, item, code, field) in Self.refusals {
      let bytes = try item.encoded()
      let error = #expect(throws: WalletDataError.self, "\(name)") { try WalletData.decode(bytes) }
      #expect(error?.code == code, "\(name): \(String(describing: error))")
      #expect(error?.field == field, "\(name): \(String(describing: error))")
    }
  }

  @Test func refusesControlCharactersInNames() throws {
    for bad in ["bell\u{7}", "del\u{7F}", "next-line\u{85}", "tab\tname", ""] {
      let wallet = with(minimalWallet) { $0.approvers[0].id = bad }
      let error = #expect(throws: WalletDataError.self, "\(bad.debugDescription)") {
        try WalletData.decode(try wallet.cbor.encoded())
      }
      #expect(error?.field == "approvers[0].id")
    }
    // Other non-ASCII text is fine.
    let accented = with(minimalWallet) { $0.approvers[0].id = "zoë-\u{A0}-水" }
    #expect(try WalletData.decode(try accented.encoded()) == accented)
  }

  @Test func refusesFieldKeysOutOfOrderOrRepeated() throws {
    let bytes = try minimalWallet.encoded()
    // Fields 0 (id) and 1 (threshold) are "00 01 01 01" at offset 17: swap the keys.
    #expect(bytes[17...20] == [0x00, 0x01, 0x01, 0x01])
    var swapped = bytes
    swapped[17] = 0x01
    swapped[19] = 0x00
    var repeated = bytes
    repeated[19] = 0x00
    for (bad, rule) in [(swapped, "unsortedMapKeys"), (repeated, "duplicateMapKey")] {
      let error = #expect(throws: WalletDataError.self) { try WalletData.decode(bad) }
      #expect(error?.code == .cbor)
      #expect(error?.reason.contains(rule) == true, "\(String(describing: error))")
    }
  }

  @Test func refusesEncodingsThatAreNotDeterministic() throws {
    var bytes = try minimalWallet.encoded()
    let nonShortest = Array(bytes[0..<18]) + [0x18, 0x01] + Array(bytes[19...])  // id 1 as 0x18 0x01
    #expect(bytes[17...18] == [0x00, 0x01])
    for bad in [nonShortest, bytes + [0x00], Array(bytes.dropLast())] {
      let error = #expect(throws: WalletDataError.self) { try WalletData.decode(bad) }
      #expect(error?.code == .cbor)
    }
    bytes = Hash256.sha256([1]).bytes + Hash256.sha256([2]).bytes  // an internal node's preimage
    #expect(throws: WalletDataError.self) { try WalletData.decode(bytes) }
  }

  @Test func theEncoderRefusesInvalidWalletsToo() {
    let error = #expect(throws: WalletDataError.self) { try with(minimalWallet) { $0.threshold = 0 }.encoded() }
    #expect(error?.field == "threshold")
  }

  @Test func everyOneByteChangeIsRefusedOrIsAnotherCanonicalWallet() throws {
    let bytes = try SampleWallet.make(id: 5, revision: 2).encoded()
    var accepted = 0
    for position in bytes.indices {
      for flip: UInt8 in [0x01, 0x80] {
        var mutated = bytes
        mutated[position] ^= flip
        if let wallet = try? WalletData.decode(mutated) {
          accepted += 1
          #expect(try wallet.encoded() == mutated, "byte \(position)")
        }
      }
    }
    // Changes inside keys and ids give other valid wallets; structure changes do not.
    #expect(accepted > 0 && accepted < bytes.count * 2)
  }

  @Test func amountsCoverTheEVMRange() {
    let max = Amount(decimal: "115792089237316195423570985008687907853269984665640564039457584007913129639935")
    #expect(max == .max)
    #expect(Amount.max.description == "115792089237316195423570985008687907853269984665640564039457584007913129639935")
    #expect(Amount.max.bigEndianBytes == [UInt8](repeating: 0xFF, count: 32))
    #expect(Amount(decimal: "115792089237316195423570985008687907853269984665640564039457584007913129639936") == nil)
    #expect(Amount.max.adding(Amount(1)) == nil)
    #expect(Amount(1_000).subtracting(Amount(1_001)) == nil)
    #expect(Amount(decimal: "18446744073709551616")!.bigEndianBytes == [1, 0, 0, 0, 0, 0, 0, 0, 0])
    #expect(Amount(UInt64.max).adding(Amount(1))?.description == "18446744073709551616")
    #expect(Amount.zero.bigEndianBytes.isEmpty && Amount.zero.description == "0")
    #expect(Amount(decimal: "12a") == nil && Amount(decimal: "") == nil && Amount(decimal: "-1") == nil)
    #expect(Amount(bigEndian: [0, 0, 5]) == Amount(5))
  }

  /// Decimal text both ways over the whole range: every power of ten and its neighbours (where
  /// a digit chunk's zero padding shows), random 64-bit values against the standard library's
  /// text, and random 256-bit values written and read back.
  @Test func amountsInDecimal() {
    var power = "1"
    for _ in 0...77 {
      let value = Amount(decimal: power)!
      #expect(value.description == power)
      #expect(value.subtracting(Amount(1))!.adding(Amount(1))!.description == power)
      #expect(
        value.subtracting(Amount(1))!.description
          == (power == "1" ? "0" : String(repeating: "9", count: power.count - 1)))
      if let next = value.adding(Amount(1)) {
        #expect(next.description == String(power.dropLast()) + "1" || power == "1" && next.description == "2")
      }
      power += "0"
    }
    var generator = SystemRandomNumberGenerator()
    for _ in 0..<2_000 {
      let small = UInt64.random(in: 0...UInt64.max, using: &generator)
      #expect(Amount(small).description == String(small))
      let bytes = (0..<Int.random(in: 1...32, using: &generator)).map { _ in
        UInt8.random(in: 0...255, using: &generator)
      }
      let large = Amount(bigEndian: bytes)!
      #expect(Amount(decimal: large.description) == large)
      #expect(large.description.first != "0" || large == .zero)
    }
    #expect(RequestEnvelope.decimal(Amount(decimal: "1500000000000000000")!, places: 18) == "1.5")
    #expect(RequestEnvelope.decimal(Amount(5), places: 18) == "0.000000000000000005")
    #expect(RequestEnvelope.decimal(Amount(decimal: "20000000000000000000")!, places: 18) == "20")
    #expect(RequestEnvelope.decimal(.zero, places: 9) == "0")
    #expect(RequestEnvelope.decimal(Amount(decimal: "123")!, places: 0) == "123")
  }

  @Test func timeWindowsWrapPastMidnight() {
    let night = TimeOfDayWindow(fromMinute: 22 * 60, toMinute: 6 * 60)
    #expect(night.contains(minute: 23 * 60) && night.contains(minute: 0) && !night.contains(minute: 12 * 60))
    #expect(!night.contains(minute: 6 * 60) && night.contains(minute: 22 * 60))
    let day = TimeOfDayWindow(fromMinute: 9 * 60, toMinute: 17 * 60)
    #expect(day.contains(minute: 9 * 60) && !day.contains(minute: 17 * 60) && !day.contains(minute: 0))
  }
}

func with<T>(_ value: T, _ change: (inout T) -> Void) -> T {
  var copy = value
  change(&copy)
  return copy
}

extension CBOR {
  func replacingTop(_ index: Int, _ value: CBOR) -> CBOR {
    guard case .array(var items) = self else { return self }
    items[index] = value
    return .array(items)
  }
  func arrayItem(_ index: Int) -> CBOR { arrayValue![index] }
}
