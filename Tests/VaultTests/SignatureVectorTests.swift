import Crypto
import Custody
import Testing

@testable import Vault

/// BIP-340 test-vectors.csv (every row) and RFC 8032 section 7.1 (every test).
@Suite struct SignatureVectorTests {
  let secp = try! Secp256k1()

  @Test func bip340AllRows() throws {
    let rows = try VectorFile.lines("bip340-test-vectors.csv").dropFirst()  // header
    var signed = 0
    var verified = 0
    for row in rows {
      let f = row.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
      let index = f[0]
      let publicKey = try VectorFile.hex(f[2])
      let message = try VectorFile.hex(f[4])
      let signature = try VectorFile.hex(f[5])
      let expected = f[6] == "TRUE"
      if !f[1].isEmpty {
        let secret = SecretBytes(try VectorFile.hex(f[1]))
        let (mine, xOnly) = try secret.withUnsafeBytes {
          try secp.signSchnorr(message: message, secret: $0, auxiliary: try VectorFile.hex(f[3]))
        }
        #expect(xOnly == publicKey, "row \(index): public key")
        #expect(mine == signature, "row \(index): signature")
        #expect(try secret.withUnsafeBytes { try secp.xOnlyPublicKey(secret: $0) } == publicKey)
        signed += 1
      }
      #expect(
        secp.verifySchnorr(signature: signature, message: message, publicKey: publicKey) == expected,
        "row \(index): \(f[7])")
      verified += 1
    }
    #expect(signed == 8 && verified == 19)
  }

  @Test func rfc8032Section7_1() throws {
    var tests = [(name: String, secret: [UInt8], public: [UInt8], message: [UInt8], signature: [UInt8])]()
    var name = ""
    var secret = [UInt8]()
    var publicKey = [UInt8]()
    var message = [UInt8]()
    for line in try VectorFile.lines("rfc8032-ed25519.txt") {
      let f = line.split(separator: " ", maxSplits: 1).map(String.init)
      switch f[0] {
      case "test":
        name = f[1]
        message = []
      case "secret": secret = try VectorFile.hex(f[1])
      case "public": publicKey = try VectorFile.hex(f[1])
      case "message": if f.count > 1 { message += try VectorFile.hex(f[1]) }
      case "signature": tests.append((name, secret, publicKey, message, try VectorFile.hex(f[1])))
      default: Issue.record("unexpected line \(line)")
      }
    }
    #expect(tests.map(\.name) == ["1", "2", "3", "1024", "SHA(abc)"])
    #expect(tests[3].message.count == 1023)
    #expect(tests[4].message == Array(SHA512.hash(data: Array("abc".utf8))))
    let signer = Signer(secp: secp)
    for test in tests {
      let key = SecretBytes(test.secret)
      // Through the vault's signer: signs, and checks against the derived key before returning.
      let signature = try signer.sign(
        test.message, algorithm: .ed25519, privateKey: key, publicKey: test.public, auxiliary: [])
      #expect(signature.signature == test.signature, "TEST \(test.name)")
      #expect(signature.publicKey == test.public, "TEST \(test.name)")
      let verifier = try Curve25519.Signing.PublicKey(rawRepresentation: test.public)
      #expect(verifier.isValidSignature(test.signature, for: test.message))
      var altered = test.signature
      altered[0] ^= 1
      #expect(!verifier.isValidSignature(altered, for: test.message))
    }
  }

  @Test func ecdsaIsDeterministicLowSAndRecoverable() throws {
    let signer = Signer(secp: secp)
    var generator = SystemRandomNumberGenerator()
    let halfOrder = Hex.decode("7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0")!
    for round in 0..<64 {
      let secret = SecretBytes((0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) })
      let publicKey = try secret.withUnsafeBytes { try secp.publicKey(secret: $0) }
      let digest = Hashes.sha256(Array("message \(round)".utf8))
      let first = try signer.sign(
        digest, algorithm: .ecdsaSecp256k1, privateKey: secret, publicKey: publicKey, auxiliary: [])
      let second = try signer.sign(
        digest, algorithm: .ecdsaSecp256k1, privateKey: secret, publicKey: publicKey, auxiliary: [])
      #expect(first == second, "RFC 6979: same key and digest, same signature")
      #expect(first.signature[32...].lexicographicallyPrecedes(halfOrder) || Array(first.signature[32...]) == halfOrder)
      #expect(secp.recoverECDSA(signature: first.signature, recoveryID: first.recoveryID!, digest: digest) == publicKey)
      #expect(secp.verifyECDSA(signature: first.signature, digest: digest, publicKey: publicKey))
      // DER round trip shape: SEQUENCE of two INTEGERs.
      let der = try #require(first.der)
      #expect(der[0] == 0x30 && Int(der[1]) == der.count - 2)
    }
  }

  @Test func aSignatureThatDoesNotVerifyIsAnError() throws {
    let signer = Signer(secp: secp)
    let secret = SecretBytes([UInt8](repeating: 7, count: 32))
    let publicKey = try secret.withUnsafeBytes { try secp.publicKey(secret: $0) }
    let other = try SecretBytes([UInt8](repeating: 9, count: 32)).withUnsafeBytes { try secp.publicKey(secret: $0) }
    let digest = Hashes.sha256([1, 2, 3])
    for algorithm in [SignatureAlgorithm.ecdsaSecp256k1, .schnorrBIP340, .schnorrTaproot] {
      // Claimed public key of another key: the check against the derived key refuses it.
      #expect(throws: VaultError.self) {
        _ = try signer.sign(
          digest, algorithm: algorithm, privateKey: secret, publicKey: other,
          auxiliary: [UInt8](repeating: 0, count: 32))
      }
      let good = try signer.sign(
        digest, algorithm: algorithm, privateKey: secret, publicKey: publicKey,
        auxiliary: [UInt8](repeating: 1, count: 32))
      var bad = good.signature
      bad[40] ^= 0x10
      let tampered = VaultSignature(
        algorithm: algorithm, signature: bad, recoveryID: good.recoveryID, publicKey: good.publicKey)
      do {
        try signer.check(tampered, message: digest, derivedPublicKey: publicKey)
        Issue.record("\(algorithm) accepted a tampered signature")
      } catch let error as VaultError {
        #expect(error.code == .signatureCheckFailed)
      }
    }
  }
}
