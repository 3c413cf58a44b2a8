import Custody
import HSMBridge
import Testing

/// Multiplication in GF(2^8) mod 0x11B the slow way: carry-less product, then reduction.
private func referenceMultiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
  var product: UInt16 = 0
  for bit in 0..<8 where b & (1 << bit) != 0 { product ^= UInt16(a) << bit }
  for bit in stride(from: 15, through: 8, by: -1) where product & (1 << bit) != 0 {
    product ^= 0x11B << (bit - 8)
  }
  return UInt8(product)
}

private func bytes(_ secret: SecretBytes) -> [UInt8] { secret.withUnsafeBytes { Array($0) } }

/// Randomness from a fixed list (a fake allowed here: the ceremony tests use the token's RNG).
private func fixedRandom(_ values: [UInt8]) -> (UnsafeMutableRawBufferPointer) throws -> Void {
  { buffer in
    for index in buffer.indices { buffer[index] = values[index % values.count] }
  }
}

@Suite struct ShamirTests {
  @Test func fieldMultiplicationMatchesTheReferenceForEveryPair() {
    for a in 0...255 {
      for b in 0...255 {
        if GF256.multiply(UInt8(a), UInt8(b)) != referenceMultiply(UInt8(a), UInt8(b)) {
          Issue.record("\(a) * \(b)")
          return
        }
      }
    }
    // FIPS 197 section 4.2: {57} * {83} = {c1}, {57} * {13} = {fe}.
    #expect(GF256.multiply(0x57, 0x83) == 0xC1)
    #expect(GF256.multiply(0x57, 0x13) == 0xFE)
  }

  @Test func everyNonZeroElementHasItsInverse() {
    for a in 1...255 {
      #expect(GF256.multiply(UInt8(a), GF256.inverse(UInt8(a))) == 1)
    }
    // FIPS 197 section 4.4: the inverse of {53} is {ca}.
    #expect(GF256.inverse(0x53) == 0xCA)
  }

  @Test func aKnownSplitByHand() throws {
    // Secret byte 0x53 with coefficient 0xCA: f(x) = 0x53 + 0xCA x.
    // f(1) = 0x99, f(2) = 0x53 ^ {ca}*{02} = 0x53 ^ 0x8f = 0xdc, f(3) = 0x53 ^ 0xca ^ 0x8f = 0x16.
    let shares = try Shamir.split(SecretBytes([0x53]), threshold: 2, count: 3, random: fixedRandom([0xCA]))
    #expect(shares.map(\.index) == [1, 2, 3])
    #expect(shares.map { bytes($0.value) } == [[0x99], [0xDC], [0x16]])
  }

  @Test func anyTwoOfThreeRecoverTheSecretAndOneDoesNot() throws {
    var generator = SystemRandomNumberGenerator()
    let secretBytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
    let secret = SecretBytes(secretBytes)
    let shares = try Shamir.split(secret, threshold: 2, count: 3) { buffer in
      for index in buffer.indices { buffer[index] = UInt8.random(in: 0...255, using: &generator) }
    }
    for pair in [(0, 1), (0, 2), (1, 2), (2, 0), (1, 0)] {
      #expect(bytes(try Shamir.combine([shares[pair.0], shares[pair.1]])) == secretBytes)
    }
    #expect(bytes(try Shamir.combine(shares)) == secretBytes)
    // No share equals the secret, and the shares differ from each other.
    #expect(Set(shares.map { bytes($0.value) }).count == 3)
    #expect(!shares.contains { bytes($0.value) == secretBytes })
    #expect(throws: HSMBridgeError.self) { _ = try Shamir.combine([shares[0]]) }
    #expect(throws: HSMBridgeError.self) { _ = try Shamir.combine([shares[1], shares[1]]) }
  }

  @Test func threeOfFiveNeedsThree() throws {
    let secret = SecretBytes(Array("three of five".utf8))
    var generator = SystemRandomNumberGenerator()
    let shares = try Shamir.split(secret, threshold: 3, count: 5) { buffer in
      for index in buffer.indices { buffer[index] = UInt8.random(in: 0...255, using: &generator) }
    }
    #expect(bytes(try Shamir.combine([shares[4], shares[0], shares[2]])) == Array("three of five".utf8))
    #expect(bytes(try Shamir.combine([shares[4], shares[0]])) != Array("three of five".utf8))
  }

  @Test func refusedSplits() {
    let secret = SecretBytes([1, 2, 3])
    #expect(throws: HSMBridgeError.self) {
      _ = try Shamir.split(secret, threshold: 1, count: 3, random: fixedRandom([1]))
    }
    #expect(throws: HSMBridgeError.self) {
      _ = try Shamir.split(secret, threshold: 4, count: 3, random: fixedRandom([1]))
    }
    #expect(throws: HSMBridgeError.self) {
      _ = try Shamir.split(SecretBytes([]), threshold: 2, count: 3, random: fixedRandom([1]))
    }
  }
}
