import CSecp256k1
import Testing

/// Proves the system library links and computes: the public key of the private key 1 is the
/// curve's generator G, whose compressed encoding is fixed by SEC 2.
@Suite struct Secp256k1SmokeTests {
  @Test func publicKeyOfOneIsTheGenerator() throws {
    let context = try #require(secp256k1_context_create(UInt32(SECP256K1_CONTEXT_NONE)))
    defer { secp256k1_context_destroy(context) }
    var secret = [UInt8](repeating: 0, count: 32)
    secret[31] = 1
    var publicKey = secp256k1_pubkey()
    #expect(secp256k1_ec_pubkey_create(context, &publicKey, secret) == 1)
    var output = [UInt8](repeating: 0, count: 33)
    var length = 33
    #expect(
      secp256k1_ec_pubkey_serialize(
        context, &output, &length, &publicKey, UInt32(SECP256K1_EC_COMPRESSED)) == 1)
    let generator = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
    let digits = Array("0123456789abcdef")
    #expect(String(output.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }) == generator)
  }

  @Test func zeroIsNotAValidSecretKey() throws {
    let context = try #require(secp256k1_context_create(UInt32(SECP256K1_CONTEXT_NONE)))
    defer { secp256k1_context_destroy(context) }
    let zero = [UInt8](repeating: 0, count: 32)
    #expect(secp256k1_ec_seckey_verify(context, zero) == 0)
  }
}
