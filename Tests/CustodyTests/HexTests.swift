import Custody
import Testing

@Suite struct HexTests {
  @Test func encodesLowerCase() {
    #expect(Hex.encode([0x00, 0x0F, 0xA5, 0xFF]) == "000fa5ff")
    #expect(Hex.encode([UInt8]()) == "")
  }

  @Test func decodesEitherCaseWithOptionalPrefix() {
    #expect(Hex.decode("000fA5ff") == [0x00, 0x0F, 0xA5, 0xFF])
    #expect(Hex.decode("0xdeadBEEF") == [0xDE, 0xAD, 0xBE, 0xEF])
    #expect(Hex.decode("") == [])
  }

  @Test(arguments: ["abc", "zz", "0x0", "12 34", "é1"])
  func refusesWhatIsNotWholeBytesOfHex(text: String) {
    #expect(Hex.decode(text) == nil)
  }

  @Test func roundTrips() {
    let bytes = (0..<256).map { UInt8($0) }
    #expect(Hex.decode(Hex.encode(bytes)) == bytes)
  }
}

@Suite struct SecretBytesTests {
  @Test func holdsAndComparesInConstantTime() {
    let a = SecretBytes([1, 2, 3])
    #expect(a.count == 3)
    #expect(a.withUnsafeBytes { Array($0) } == [1, 2, 3])
    #expect(a.constantTimeEquals(SecretBytes([1, 2, 3])))
    #expect(!a.constantTimeEquals(SecretBytes([1, 2, 4])))
    #expect(!a.constantTimeEquals(SecretBytes([1, 2])))
  }

  @Test func neverPrintsItsBytes() {
    let secret = SecretBytes(utf8: "hunter2-pin")
    for text in ["\(secret)", String(describing: secret), String(reflecting: secret)] {
      #expect(!text.contains("hunter2"))
      #expect(text.contains("redacted"))
    }
  }

  @Test func failedInitialiserLeavesNoSecret() {
    struct Refused: Error {}
    #expect(throws: Refused.self) {
      _ = try SecretBytes(count: 8) { buffer in
        buffer.copyBytes(from: [1, 2, 3, 4, 5, 6, 7, 8])
        throw Refused()
      }
    }
  }

  @Test func zeroesArraysInPlace() {
    var bytes: [UInt8] = [9, 9, 9]
    SecretBytes.zero(&bytes)
    #expect(bytes == [0, 0, 0])
  }

  @Test func emptySecretIsValid() {
    let empty = SecretBytes([UInt8]())
    #expect(empty.count == 0)
    #expect(empty.withUnsafeBytes { $0.count } == 0)
  }
}
