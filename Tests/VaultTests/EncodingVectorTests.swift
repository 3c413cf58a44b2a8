import Custody
import Foundation
import Testing

@testable import Vault

/// Keccak-256 KATs, EIP-55, BIP-173/BIP-350, RIPEMD-160, Base58.
@Suite struct EncodingVectorTests {
  @Test func keccak256KnownAnswers() throws {
    var checked = 0
    for line in try VectorFile.lines("keccak256.txt") {
      let f = line.split(separator: " ").map(String.init)
      let message = f[1] == "-" ? [] : try VectorFile.hex(f[1])
      #expect(message.count * 8 == Int(f[0])!)
      #expect(Hex.encode(Keccak256.hash(message)) == f[2].lowercased(), "Len = \(f[0])")
      checked += 1
    }
    #expect(checked == 8)
  }

  @Test func eip55TestCases() throws {
    var checked = 0
    for address in try VectorFile.lines("eip55.txt") {
      let bytes = try VectorFile.hex(address.dropFirst(2))
      let digits = address.dropFirst(2)
      if digits == digits.lowercased() || digits == digits.uppercased() {
        // All-lower and all-upper are the EIP's "no letters to case" examples: accepted as they are.
        #expect(ChainAddress.isValidEthereum(address))
      } else {
        #expect(ChainAddress.eip55(bytes) == address)
      }
      #expect(ChainAddress.isValidEthereum(address))
      checked += 1
    }
    #expect(checked == 8)
    // One letter's case flipped breaks the checksum.
    #expect(!ChainAddress.isValidEthereum("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"))
  }

  @Test func ethereumAddressOfAKnownKey() throws {
    // The private key 1's public key is the generator G, whose address is well known.
    let secp = try Secp256k1()
    var one = [UInt8](repeating: 0, count: 32)
    one[31] = 1
    let publicKey = try SecretBytes(one).withUnsafeBytes { try secp.publicKey(secret: $0) }
    #expect(try ChainAddress.ethereum(publicKey: publicKey, secp: secp) == "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf")
  }

  /// Decodes the file's `\xNN` escapes into bytes.
  func bytes(_ text: String) throws -> [UInt8] {
    var output = [UInt8]()
    var utf8 = Array(text.utf8)[...]
    while let first = utf8.first {
      if first == UInt8(ascii: "\\"), utf8.count >= 4, utf8.dropFirst().first == UInt8(ascii: "x") {
        output += try VectorFile.hex(String(decoding: utf8.dropFirst(2).prefix(2), as: UTF8.self))
        utf8 = utf8.dropFirst(4)
      } else {
        output.append(first)
        utf8 = utf8.dropFirst()
      }
    }
    return output
  }

  @Test func bech32AndBech32mVectors() throws {
    var counts = [String: Int]()
    for line in try VectorFile.lines("bech32.txt") {
      let f = line.components(separatedBy: " | ")
      let text = try bytes(f[1])
      counts[f[0], default: 0] += 1
      switch f[0] {
      case "valid-bech32", "valid-bech32m":
        let decoded = try Bech32.decode(text)
        #expect(decoded.variant == (f[0] == "valid-bech32" ? .bech32 : .bech32m), "\(f[1])")
        // Encoding what was decoded gives the string back (in lower case).
        #expect(
          Bech32.encode(hrp: decoded.hrp, data: decoded.data, variant: decoded.variant)
            == String(decoding: text, as: UTF8.self).lowercased())
      case "invalid-bech32", "invalid-bech32m":
        let variant: Bech32.Variant = f[0] == "invalid-bech32" ? .bech32 : .bech32m
        let accepted = (try? Bech32.decode(text))?.variant == variant
        #expect(!accepted, "accepted \(f[1]) (\(f[2]))")
      case "address":
        let address = try SegwitAddress(decoding: text)
        #expect(Hex.encode(address.scriptPubKey) == f[2], "\(f[1])")
        #expect(address.text == f[1].lowercased())
        #expect(try SegwitAddress(decoding: address.text, expectedHRP: address.humanReadablePart) == address)
      case "bad-address":
        let hrp = f[1].lowercased().hasPrefix("tb") ? "tb" : "bc"
        #expect(throws: VaultError.self, "accepted \(f[1]) (\(f[2]))") {
          _ = try SegwitAddress(decoding: text, expectedHRP: hrp)
        }
      default: Issue.record("unknown kind \(f[0])")
      }
    }
    #expect(
      counts == [
        "valid-bech32": 10, "invalid-bech32": 12, "valid-bech32m": 7, "invalid-bech32m": 14, "address": 11,
        "bad-address": 28,
      ])
  }

  @Test func ripemd160Vectors() throws {
    var checked = 0
    for line in try VectorFile.lines("ripemd160.txt") {
      let closing = try #require(line.dropFirst().firstIndex(of: "\""))
      let quoted = String(line[line.index(after: line.startIndex)..<closing])
      let digest = line[line.index(after: closing)...].trimmingCharacters(in: .whitespaces)
      let message: [UInt8] =
        switch quoted {
        case "1M*a": [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        case "8*1234567890": Array(String(repeating: "1234567890", count: 8).utf8)
        default: Array(quoted.utf8)
        }
      #expect(Hex.encode(Hashes.ripemd160(message)) == digest, "\"\(quoted)\"")
      checked += 1
    }
    #expect(checked == 9)
  }

  @Test func base58RoundTripsAndSolanaKnownAnswer() throws {
    // Solana's system program id is the all-zero key.
    #expect(try ChainAddress.solana(publicKey: [UInt8](repeating: 0, count: 32)) == "11111111111111111111111111111111")
    #expect(throws: VaultError.self) { _ = try ChainAddress.solana(publicKey: [1, 2, 3]) }
    var generator = SystemRandomNumberGenerator()
    for length in [0, 1, 2, 20, 32, 33, 64] {
      var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
      if length > 2 { bytes[0] = 0 }
      #expect(Base58.decode(Base58.encode(bytes)) == bytes)
      #expect(try Base58.decodeCheck(Base58.encodeCheck(bytes)) == bytes)
    }
    #expect(Base58.decode("0OIl") == nil)
    #expect(throws: VaultError.self) { _ = try Base58.decodeCheck("1111111") }
  }
}
