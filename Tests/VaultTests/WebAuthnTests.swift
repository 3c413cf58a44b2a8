import Custody
import Foundation
import Testing

@testable import Vault

/// The vault's WebAuthn assertion check: the specification's ES256 test vector, assertions
/// from the software authenticator (ES256 and EdDSA), and each rule the check enforces.
@Suite struct WebAuthnTests {
  struct SpecVector: Decodable {
    struct Registration: Decodable {
      var challenge, clientDataJSON, attestationObject, aaguid, credentialId: String
    }
    struct Authentication: Decodable {
      var challenge, clientDataJSON, authenticatorData, signature: String
    }
    var source, rpId, origin: String
    var registration: Registration
    var authentication: Authentication
  }

  static func specVector() throws -> SpecVector {
    let url = try #require(
      Bundle.module.url(forResource: "webauthn-l3-es256.json", withExtension: nil, subdirectory: "Vectors"))
    return try JSONDecoder().decode(SpecVector.self, from: Data(contentsOf: url))
  }

  /// WebAuthn Level 3, section 16.2: the registration's attestation object decodes (with the
  /// vault's strict CBOR decoder) to the published credential id and AAGUID and an ES256 COSE
  /// key; the authentication's assertion, made by the same credential over the published
  /// challenge, passes the vault's check; its counter is zero on both sides and UV is not set.
  @Test func specificationES256Vector() throws {
    let vector = try Self.specVector()
    let registration = vector.registration
    let attestation = try CBORDecoder().decode(try VectorFile.hex(registration.attestationObject))
    let fields = try #require(attestation.mapValue)
    func field(_ name: String) -> CBOR? { fields.first { $0.key == .text(name) }?.value }
    #expect(field("fmt") == .text("none"))
    #expect(field("attStmt") == .map([CBOR.Entry]()))
    let authData = try #require(field("authData")?.bytesValue)
    #expect(Hash256(authData[0..<32]) == Hash256.sha256(Array(vector.rpId.utf8)))
    #expect(authData[32] & 0x41 == 0x41, "UP and AT are set at registration")
    #expect(Array(authData[37..<53]) == (try VectorFile.hex(registration.aaguid)))
    let credentialLength = Int(authData[53]) << 8 | Int(authData[54])
    let credentialID = Array(authData[55..<55 + credentialLength])
    #expect(credentialID == (try VectorFile.hex(registration.credentialId)))
    let coseKey = Array(authData[(55 + credentialLength)...])
    #expect(try COSEPublicKey(coseKey).algorithm == .es256)
    let registrationData = try ClientData.parse(try VectorFile.hex(registration.clientDataJSON))
    #expect(registrationData.type == "webauthn.create")
    #expect(registrationData.challenge == Base64URL.encode(try VectorFile.hex(registration.challenge)))

    let authentication = vector.authentication
    let assertion = PasskeyAssertion(
      credentialID: credentialID, authenticatorData: try VectorFile.hex(authentication.authenticatorData),
      clientDataJSON: try VectorFile.hex(authentication.clientDataJSON),
      signature: try VectorFile.hex(authentication.signature))
    let passkey = Passkey(
      credentialID: credentialID, publicKey: coseKey, rpID: vector.rpId, allowedOrigins: [vector.origin],
      signCount: 0, requireUserVerification: false)
    let challenge = try VectorFile.hex(authentication.challenge)
    #expect(try WebAuthn.verify(assertion, passkey: passkey, challenge: challenge) == 0)

    // The same assertion fails where it should: another challenge, a UV requirement, a byte of
    // the signature, another origin list.
    var otherChallenge = challenge
    otherChallenge[0] ^= 1
    #expect(
      refusal { _ = try WebAuthn.verify(assertion, passkey: passkey, challenge: otherChallenge) } == .challengeMismatch)
    var strict = passkey
    strict.requireUserVerification = true
    #expect(
      refusal { _ = try WebAuthn.verify(assertion, passkey: strict, challenge: challenge) } == .userVerificationMissing)
    var damaged = assertion
    damaged.signature[10] ^= 0x40
    #expect(refusal { _ = try WebAuthn.verify(damaged, passkey: passkey, challenge: challenge) } == .badSignature)
    var elsewhere = passkey
    elsewhere.allowedOrigins = ["https://example.com"]
    #expect(refusal { _ = try WebAuthn.verify(assertion, passkey: elsewhere, challenge: challenge) } == .wrongOrigin)
  }

  /// Assertions from the software authenticator pass, for both algorithms, and the counter
  /// they report comes back (it goes into the wallet data).
  @Test(arguments: SoftwareAuthenticator.Algorithm.allCases)
  func softwareAuthenticator(_ algorithm: SoftwareAuthenticator.Algorithm) throws {
    let authenticator = try SoftwareAuthenticator(algorithm)
    let passkey = authenticator.passkey()
    let challenge = Hashes.sha256(Array("a request".utf8))
    let first = authenticator.assert(challenge: challenge)
    #expect(try WebAuthn.verify(first, passkey: passkey, challenge: challenge) == 1)
    var advanced = passkey
    advanced.signCount = 1
    #expect(
      try WebAuthn.verify(authenticator.assert(challenge: challenge), passkey: advanced, challenge: challenge) == 2)
    // A passkey that keeps no counter (zero on both sides) passes every time.
    let synced = try SoftwareAuthenticator(algorithm, countsSignatures: false)
    for _ in 0..<2 {
      #expect(
        try WebAuthn.verify(synced.assert(challenge: challenge), passkey: synced.passkey(), challenge: challenge) == 0)
    }
  }

  /// Each rule, with an assertion that breaks only it.
  @Test func eachRuleHasItsOwnRefusal() throws {
    let authenticator = try SoftwareAuthenticator(.es256, signCount: 10)
    let passkey = authenticator.passkey()
    let challenge = Hashes.sha256(Array("the request".utf8))
    func check(_ options: SoftwareAuthenticator.Options, _ passkey: Passkey = passkey) -> RequestError.Code? {
      refusal {
        _ = try WebAuthn.verify(
          authenticator.assert(challenge: challenge, options: options), passkey: passkey, challenge: challenge)
      }
    }
    var options = SoftwareAuthenticator.Options()
    options.type = "webauthn.create"
    #expect(check(options) == .wrongClientDataType)
    options = .init()
    options.challenge = Hashes.sha256(Array("another request".utf8))
    #expect(
      refusal {
        _ = try WebAuthn.verify(
          authenticator.assert(challenge: options.challenge!), passkey: passkey, challenge: challenge)
      } == .challengeMismatch)
    options = .init()
    options.origin = "https://evil.example"
    #expect(check(options) == .wrongOrigin)
    options = .init()
    options.crossOrigin = true
    #expect(check(options) == .crossOriginRefused)
    options = .init()
    options.rpID = "evil.example"
    #expect(check(options) == .wrongRPID)
    options = .init()
    options.userPresent = false
    #expect(check(options) == .userPresenceMissing)
    options = .init()
    options.userVerified = false
    #expect(check(options) == .userVerificationMissing)
    var lenient = passkey
    lenient.requireUserVerification = false
    #expect(check(options, lenient) == nil, "UV is only required where the passkey says so")
    options = .init()
    options.signCount = 10
    #expect(check(options) == .signCounterNotIncreasing, "a counter equal to the stored one")
    options.signCount = 3
    #expect(check(options) == .signCounterNotIncreasing, "a counter going back")
    options.signCount = 0
    #expect(check(options) == .signCounterNotIncreasing, "a counter reset to zero")

    let good = authenticator.assert(challenge: challenge)
    var otherCredential = good
    otherCredential.credentialID[0] ^= 1
    #expect(
      refusal { _ = try WebAuthn.verify(otherCredential, passkey: passkey, challenge: challenge) } == .unknownApprover)
    var backupState = good
    backupState.authenticatorData[32] |= 0x10
    #expect(
      refusal { _ = try WebAuthn.verify(backupState, passkey: passkey, challenge: challenge) }
        == .backupFlagsInconsistent)
    var short = good
    short.authenticatorData.removeLast()
    #expect(
      refusal { _ = try WebAuthn.verify(short, passkey: passkey, challenge: challenge) } == .malformedAuthenticatorData)
    var forgedFlags = good
    forgedFlags.authenticatorData[32] |= 0x08  // BE set after signing: the signature no longer holds
    #expect(refusal { _ = try WebAuthn.verify(forgedFlags, passkey: passkey, challenge: challenge) } == .badSignature)
    var otherKey = passkey
    otherKey.publicKey = try SoftwareAuthenticator(.es256).coseKey
    #expect(refusal { _ = try WebAuthn.verify(good, passkey: otherKey, challenge: challenge) } == .badSignature)
  }

  /// Bots sign the envelope's encoding itself; the approvals step checks them under the
  /// enrolled key, for both algorithms, and keeps passkeys and bots apart.
  @Test func botApprovals() throws {
    let envelope = try RequestEnvelope(
      walletID: 1, walletHash: .zero, operation: .removeWallet, nonce: 2, expiry: noon
    ).encoded()
    let p256 = try SoftwareBot(.p256)
    let ed25519 = try SoftwareBot(.ed25519)
    let passkey = try SoftwareAuthenticator(.es256)
    let approvers = [passkey.approver("alice"), p256.approver("bot-a"), ed25519.approver("bot-b")]
    let approvals = [p256.approve(envelope, as: "bot-a"), ed25519.approve(envelope, as: "bot-b")]
    #expect(
      try ApprovalCheck.verify(envelope: envelope, approvals: approvals, approvers: approvers, required: 2) == approvers
    )
    var changed = envelope
    changed[changed.count - 1] ^= 1
    #expect(
      refusal {
        _ = try ApprovalCheck.verify(envelope: changed, approvals: approvals, approvers: approvers, required: 2)
      }
        == .badSignature)
    // A bot's signature where a passkey is enrolled, and the other way round.
    #expect(
      refusal {
        _ = try ApprovalCheck.verify(
          envelope: envelope, approvals: [p256.approve(envelope, as: "alice")], approvers: approvers, required: 1)
      } == .unknownApprover)
    #expect(
      refusal {
        _ = try ApprovalCheck.verify(
          envelope: envelope, approvals: [passkey.approve(envelope, as: "bot-a")], approvers: approvers, required: 1)
      } == .unknownApprover)
    // Another bot's key under bot-b's name.
    #expect(
      refusal {
        _ = try ApprovalCheck.verify(
          envelope: envelope, approvals: [try SoftwareBot(.ed25519).approve(envelope, as: "bot-b")],
          approvers: approvers,
          required: 1)
      } == .badSignature)
  }

  /// clientDataJSON is parsed as JSON, strictly.
  @Test func clientDataParsing() throws {
    func parse(_ text: String) -> Result<ClientData, RequestError> {
      Result { () throws(RequestError) in try ClientData.parse(Array(text.utf8)) }
    }
    let parsed = try parse(
      #" { "type" : "webauthn.get", "challenge":"YWJj", "origin":"https:\/\/a.example\u0021", "crossOrigin":false, "extra":[1,-2.5e3,{"n":null,"t":true}], "x\ud83d\ude00":"\u00e9" } "#
    ).get()
    #expect(
      parsed
        == ClientData(
          type: "webauthn.get", challenge: "YWJj", origin: "https://a.example!", crossOrigin: false, topOrigin: nil))
    for bad in [
      #"{"type":"webauthn.get","challenge":"a","origin":"o","origin":"p"}"#,  // duplicate member
      #"{"type":"webauthn.get","challenge":"a","origin":"o"} x"#,  // trailing bytes
      #"{"type":"webauthn.get","challenge":"a"}"#,  // origin missing
      #"{"type":"webauthn.get","challenge":"a","origin":"\ud800"}"#,  // lone surrogate
      #"{"type":"webauthn.get","challenge":"a","origin":"o","n":01}"#,  // leading zero
      #"{"type":"webauthn.get","challenge":"a","origin":"o","crossOrigin":"no"}"#,  // not a boolean
      "{\"type\":\"webauthn.get\",\"challenge\":\"a\",\"origin\":\"o\u{01}\"}",  // control character
      #"["webauthn.get"]"#,
    ] {
      #expect(throws: RequestError.self, "\(bad)") { try parse(bad).get() }
    }
    var invalidUTF8 = Array(#"{"type":"webauthn.get","challenge":"a","origin":"o"}"#.utf8)
    invalidUTF8[40] = 0xFF
    #expect(throws: RequestError.self) { try ClientData.parse(invalidUTF8) }
  }
}

/// The code of the `RequestError` `body` throws; nil when it does not throw.
func refusal(_ body: () throws -> Void) -> RequestError.Code? {
  do {
    try body()
    return nil
  } catch let error as RequestError {
    return error.code
  } catch {
    Issue.record("expected a RequestError, got \(error)")
    return nil
  }
}

/// The code of the `RequestError` an async `body` throws; nil when it does not throw.
func refusal(_ body: () async throws -> Void) async -> RequestError.Code? {
  do {
    try await body()
    return nil
  } catch let error as RequestError {
    return error.code
  } catch {
    Issue.record("expected a RequestError, got \(error)")
    return nil
  }
}
