import Custody
import HSMBridge
import TestSupport
import Testing

private let sessionAES: [Attribute] = [
  .class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .sensitive(true),
  .extractable(false), .encrypt(true), .decrypt(true),
]

@Suite(.serialized) struct KeyTests {
  @Test func derivedSessionKeyIsSensitiveAndNonExtractable() throws {
    let test = try TestDevice()
    let session = try test.userSession()
    let master = try session.generateKey(
      .aesKeyGen,
      [
        .class(.secretKey), .keyType(.aes), .valueLength(32), .token(true), .private(true),
        .sensitive(true), .extractable(false), .derive(true), .encrypt(false), .decrypt(false),
      ])
    let derivationData = [UInt8](repeating: 0xA5, count: 32)
    let derived = try session.deriveKey(.aesECBEncryptData(derivationData), baseKey: master, sessionAES)
    let readings = try session.attributes(
      [.sensitive, .extractable, .alwaysSensitive, .neverExtractable, .token, .value, .encrypt], of: derived)
    #expect(readings[0] == .value(.sensitive(true)))
    #expect(readings[1] == .value(.extractable(false)))
    #expect(readings[4] == .value(.token(false)))
    #expect(readings[5] == .sensitive)
    #expect(readings[6] == .value(.encrypt(true)))
    // Sensitive cannot be weakened.
    #expect(throws: PKCS11Error.self) { try session.setAttributes([.sensitive(false)], of: derived) }
    // Deriving twice from the same data gives the same key: encrypt under one, decrypt under the other.
    let twin = try session.deriveKey(.aesECBEncryptData(derivationData), baseKey: master, sessionAES)
    let gcm = Mechanism.aesGCM(iv: [UInt8](repeating: 7, count: 12), aad: [1, 2], tagBits: 128)
    let sealed = try session.encrypt(gcm, key: derived, Array("hello".utf8))
    #expect(try session.decrypt(gcm, key: twin, sealed) == Array("hello".utf8))
    // Different data, different key.
    let stranger = try session.deriveKey(
      .aesECBEncryptData([UInt8](repeating: 0x5A, count: 32)), baseKey: master, sessionAES)
    #expect(throws: PKCS11Error(code: .generalError, function: "C_Decrypt")) {
      _ = try session.decrypt(gcm, key: stranger, sealed)
    }
    try session.destroyObject(derived)
    #expect(throws: PKCS11Error.self) { _ = try session.encrypt(gcm, key: derived, [1]) }
  }

  @Test func aesGCMRoundTripAndTamperRejection() throws {
    let test = try TestDevice()
    let session = try test.userSession()
    let key = try session.generateKey(.aesKeyGen, sessionAES)
    let iv = try session.generateRandom(12)
    let aad = Array("wallet-hash".utf8)
    let plaintext = [UInt8](0..<64)
    let gcm = Mechanism.aesGCM(iv: iv, aad: aad, tagBits: 128)
    let ciphertext = try session.encrypt(gcm, key: key, plaintext)
    #expect(ciphertext.count == plaintext.count + 16)
    #expect(Array(ciphertext.prefix(64)) != plaintext)
    let opened = try session.decryptSecret(gcm, key: key, ciphertext)
    #expect(opened.withUnsafeBytes { Array($0) } == plaintext)
    #expect("\(opened)".contains("redacted"))
    // Every flipped byte of ciphertext or tag is refused. SoftHSM 2.6.1 reports a GCM tag
    // mismatch as CKR_GENERAL_ERROR (DESIGN.md section 3).
    for index in [0, 31, 63, 64, 79] {
      var tampered = ciphertext
      tampered[index] ^= 0x01
      #expect(throws: PKCS11Error(code: .generalError, function: "C_Decrypt")) {
        _ = try session.decrypt(gcm, key: key, tampered)
      }
    }
    // Other associated data or IV is refused.
    #expect(throws: PKCS11Error.self) {
      _ = try session.decrypt(.aesGCM(iv: iv, aad: Array("other".utf8)), key: key, ciphertext)
    }
    var otherIV = iv
    otherIV[0] ^= 1
    #expect(throws: PKCS11Error.self) {
      _ = try session.decrypt(.aesGCM(iv: otherIV, aad: aad), key: key, ciphertext)
    }
  }

  @Test func secretPlaintextEncrypts() throws {
    let test = try TestDevice()
    let session = try test.userSession()
    let key = try session.generateKey(.aesKeyGen, sessionAES)
    let gcm = Mechanism.aesGCM(iv: [UInt8](repeating: 1, count: 12), aad: [])
    let secret = SecretBytes([UInt8](repeating: 0x42, count: 32))
    let sealed = try session.encrypt(gcm, key: key, secret: secret)
    #expect(try session.decryptSecret(gcm, key: key, sealed).constantTimeEquals(secret))
  }

  @Test func hmacMatchesRFC4231() throws {
    // RFC 4231 test case 6: a 131-byte key (SoftHSM refuses HMAC keys shorter than the hash).
    let test = try TestDevice()
    let session = try test.userSession()
    let key = try session.createObject([
      .class(.secretKey), .keyType(.genericSecret), .token(false), .value([UInt8](repeating: 0xAA, count: 131)),
      .sign(true), .verify(true),
    ])
    let data = Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8)
    let mac256 = try session.sign(.sha256HMAC, key: key, data)
    #expect(Hex.encode(mac256) == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    let mac512 = try session.sign(.sha512HMAC, key: key, data)
    #expect(
      Hex.encode(mac512)
        == "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f3526b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598"
    )
    #expect(try session.verify(.sha256HMAC, key: key, data, signature: mac256))
    var wrong = mac256
    wrong[0] ^= 1
    #expect(try !session.verify(.sha256HMAC, key: key, data, signature: wrong))
  }

  @Test func generatedHMACKeySignsAndVerifies() throws {
    let test = try TestDevice()
    let session = try test.userSession()
    let key = try session.generateKey(
      .genericSecretKeyGen,
      [.class(.secretKey), .keyType(.genericSecret), .valueLength(32), .token(false), .sign(true), .verify(true)])
    let mac = try session.sign(.sha256HMAC, key: key, [1, 2, 3])
    #expect(mac.count == 32)
    #expect(try session.verify(.sha256HMAC, key: key, [1, 2, 3], signature: mac))
    #expect(try !session.verify(.sha256HMAC, key: key, [1, 2, 4], signature: mac))
  }

  @Test func sha256DigestMatchesFIPS180() throws {
    let test = try TestDevice()
    let session = try test.userSession()
    #expect(
      Hex.encode(try session.digest(.sha256, Array("abc".utf8)))
        == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    #expect(try session.digest(.sha512, Array("abc".utf8)).count == 64)
  }

  @Test(arguments: [ECCurve.p256, .secp256k1])
  func ecdsaKeyPairSignsAndVerifies(curve: ECCurve) throws {
    let test = try TestDevice()
    let session = try test.userSession()
    let (publicKey, privateKey) = try session.generateKeyPair(
      curve.keyPairGeneration,
      publicKey: [.token(false), .ecParams(curve.parameters), .verify(true)],
      privateKey: [.token(false), .private(true), .sensitive(true), .extractable(false), .sign(true)])
    #expect(try session.attribute(.keyType, of: privateKey) == .keyType(.ec))
    #expect(try session.attribute(.ecParams, of: publicKey) == .ecParams(curve.parameters))
    let point = try session.attribute(.ecPoint, of: publicKey)
    if case .ecPoint(let bytes) = point {
      // DER OCTET STRING (0x04, 65) around an uncompressed point (0x04 || X || Y).
      #expect(bytes.count == 67 && bytes[0] == 0x04 && bytes[1] == 65 && bytes[2] == 0x04)
    } else {
      Issue.record("no EC point: \(String(describing: point))")
    }
    let digest = try session.digest(.sha256, Array("step challenge".utf8))
    let signature = try session.sign(.ecdsa, key: privateKey, digest)
    #expect(signature.count == 64)
    #expect(try session.verify(.ecdsa, key: publicKey, digest, signature: signature))
    var tampered = signature
    tampered[10] ^= 0x40
    #expect(try !session.verify(.ecdsa, key: publicKey, digest, signature: tampered))
    #expect(try !session.verify(.ecdsa, key: publicKey, [UInt8](repeating: 0, count: 32), signature: signature))
  }

  @Test func ed25519KeyPairSignsAndVerifies() throws {
    let test = try TestDevice()
    let session = try test.userSession()
    let (publicKey, privateKey) = try session.generateKeyPair(
      .ecEdwardsKeyPairGen,
      publicKey: [.token(false), .ecParams(ECCurve.ed25519.parameters), .verify(true)],
      privateKey: [.token(false), .private(true), .sensitive(true), .sign(true)])
    #expect(try session.attribute(.keyType, of: privateKey) == .keyType(.ecEdwards))
    let message = Array("approve request 42".utf8)
    let signature = try session.sign(.eddsa, key: privateKey, message)
    #expect(signature.count == 64)
    #expect(try session.verify(.eddsa, key: publicKey, message, signature: signature))
    #expect(try !session.verify(.eddsa, key: publicKey, message + [0], signature: signature))
  }

  @Test func rsaOAEPWrapAndUnwrap() throws {
    let test = try TestDevice()
    let session = try test.userSession()
    let (publicKey, privateKey) = try session.generateKeyPair(
      .rsaPKCSKeyPairGen,
      publicKey: [.token(false), .modulusBits(2048), .publicExponent([1, 0, 1]), .wrap(true), .encrypt(true)],
      privateKey: [.token(false), .private(true), .sensitive(true), .unwrap(true), .decrypt(true)])
    #expect(try session.attribute(.modulusBits, of: publicKey) == .modulusBits(2048))
    let key = try session.generateKey(
      .aesKeyGen,
      [
        .class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .sensitive(true),
        .extractable(true), .encrypt(true), .decrypt(true),
      ])
    let oaep = Mechanism.rsaPKCSOAEP(hash: .sha1)
    let wrapped = try session.wrapKey(oaep, wrappingKey: publicKey, key: key)
    #expect(wrapped.count == 256)
    let unwrapped = try session.unwrapKey(
      oaep, unwrappingKey: privateKey, wrapped: wrapped,
      [
        .class(.secretKey), .keyType(.aes), .token(false), .sensitive(true), .extractable(false),
        .encrypt(true), .decrypt(true),
      ])
    #expect(try session.bool(.extractable, of: unwrapped) == false)
    let gcm = Mechanism.aesGCM(iv: [UInt8](repeating: 3, count: 12), aad: [])
    let sealed = try session.encrypt(gcm, key: key, [9, 9, 9])
    #expect(try session.decrypt(gcm, key: unwrapped, sealed) == [9, 9, 9])
    // RSA-OAEP encrypt/decrypt of data.
    let ciphertext = try session.encrypt(oaep, key: publicKey, [1, 2, 3, 4])
    #expect(try session.decrypt(oaep, key: privateKey, ciphertext) == [1, 2, 3, 4])
  }

  @Test func aesKeyWrapPadRoundTripAndNonExtractableRefused() throws {
    let test = try TestDevice()
    let session = try test.userSession()
    let kek = try session.generateKey(
      .aesKeyGen,
      [.class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .wrap(true), .unwrap(true)])
    let key = try session.generateKey(
      .aesKeyGen,
      [
        .class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .sensitive(true),
        .extractable(true), .encrypt(true), .decrypt(true),
      ])
    let wrapped = try session.wrapKey(.aesKeyWrapPad, wrappingKey: kek, key: key)
    #expect(wrapped.count == 40)
    let unwrapped = try session.unwrapKey(
      .aesKeyWrapPad, unwrappingKey: kek, wrapped: wrapped,
      [.class(.secretKey), .keyType(.aes), .token(false), .encrypt(true), .decrypt(true)])
    let gcm = Mechanism.aesGCM(iv: [UInt8](repeating: 5, count: 12), aad: [])
    #expect(try session.decrypt(gcm, key: unwrapped, try session.encrypt(gcm, key: key, [4, 2])) == [4, 2])

    let locked = try session.generateKey(.aesKeyGen, sessionAES)
    #expect(throws: PKCS11Error(code: .keyUnextractable, function: "C_WrapKey")) {
      _ = try session.wrapKey(.aesKeyWrapPad, wrappingKey: kek, key: locked)
    }
  }

  @Test func randomBytesDiffer() throws {
    let test = try TestDevice()
    let session = try test.userSession()
    let a = try session.generateRandom(32)
    let b = try session.generateRandom(32)
    #expect(a.count == 32 && a != b)
    let secret = try SecretBytes(count: 64) { try session.generateRandom(into: $0) }
    #expect(secret.withUnsafeBytes { $0.contains { $0 != 0 } })
  }

  @Test func usageNotPermittedIsRefusedByTheToken() throws {
    let test = try TestDevice()
    let session = try test.userSession()
    let key = try session.generateKey(
      .aesKeyGen, [.class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .encrypt(false)])
    #expect(throws: PKCS11Error(code: .keyFunctionNotPermitted, function: "C_EncryptInit")) {
      _ = try session.encrypt(.aesGCM(iv: [UInt8](repeating: 0, count: 12), aad: []), key: key, [1])
    }
  }
}
