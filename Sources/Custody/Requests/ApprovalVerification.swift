import Crypto

/// WebAuthn assertion verification as the WebAuthn Level 3 specification's section 7.2 has a
/// relying party do it, with the vault as the relying party and SHA-256 of the request
/// envelope as the challenge. The vault runs it on every request; the custody server runs the
/// same code before it stores an approval, so a stranger cannot store one that does not verify.
public enum WebAuthn {
  /// authenticatorData flag bits.
  public static let userPresent: UInt8 = 0x01
  public static let userVerified: UInt8 = 0x04
  public static let backupEligible: UInt8 = 0x08
  public static let backupState: UInt8 = 0x10

  /// Verifies `assertion` by the credential `passkey` over `challenge` and returns the
  /// signature counter the wallet data records next. Checked, in the specification's order:
  /// the credential id is the enrolled one; clientDataJSON parses, its type is `webauthn.get`,
  /// its challenge is base64url(`challenge`), its origin is one the passkey allows, it is not
  /// cross-origin; authenticatorData's rpIdHash is SHA-256 of the passkey's RP id, UP is set,
  /// UV is set when the passkey requires it, BS is not set without BE; the signature over
  /// authenticatorData || SHA-256(clientDataJSON) verifies under the COSE key (ES256 DER or
  /// EdDSA); and the counter rule: when the stored or the new counter is not zero, the new one
  /// must be greater.
  public static func verify(
    _ assertion: PasskeyAssertion, passkey: Passkey, challenge: [UInt8]
  ) throws(RequestError) -> UInt32 {
    guard assertion.credentialID == passkey.credentialID else {
      throw RequestError(
        .unknownApprover,
        "the assertion is by credential \(Hex.encode(assertion.credentialID.prefix(8))), not the enrolled one")
    }
    let clientData = try ClientData.parse(assertion.clientDataJSON)
    guard clientData.type == "webauthn.get" else {
      throw RequestError(.wrongClientDataType, "clientDataJSON type is '\(clientData.type)', not 'webauthn.get'")
    }
    guard clientData.challenge.utf8.elementsEqual(Base64URL.encodedBytes(challenge)) else {
      throw RequestError(
        .challengeMismatch,
        "the assertion's challenge is not SHA-256 of this request: the request was changed after it was approved, or the approval is for another request"
      )
    }
    guard passkey.allowedOrigins.contains(clientData.origin) else {
      throw RequestError(
        .wrongOrigin,
        "origin '\(clientData.origin)' is not one the passkey allows (\(passkey.allowedOrigins.joined(separator: ", ")))"
      )
    }
    guard clientData.crossOrigin != true, clientData.topOrigin == nil else {
      throw RequestError(.crossOriginRefused, "the approval was made in a page embedded in another origin's page")
    }
    let data = assertion.authenticatorData
    guard data.count >= 37 else {
      throw RequestError(
        .malformedAuthenticatorData, "authenticatorData has \(data.count) bytes; at least 37 are needed")
    }
    let rpIDHash = Hash256.sha256(Array(passkey.rpID.utf8))
    guard Hash256(data[0..<32]) == rpIDHash else {
      throw RequestError(.wrongRPID, "authenticatorData is for another relying party than '\(passkey.rpID)'")
    }
    let flags = data[32]
    guard flags & userPresent != 0 else {
      throw RequestError(.userPresenceMissing, "the user-present flag (UP) is not set")
    }
    guard !passkey.requireUserVerification || flags & userVerified != 0 else {
      throw RequestError(.userVerificationMissing, "the passkey requires user verification and the UV flag is not set")
    }
    guard flags & backupState == 0 || flags & backupEligible != 0 else {
      throw RequestError(.backupFlagsInconsistent, "the backup-state flag is set without the backup-eligible flag")
    }
    let key: COSEPublicKey
    do {
      key = try passkey.coseKey()
    } catch {
      throw RequestError(.malformedWalletData, "the enrolled COSE key does not parse: \(error)")
    }
    let signed = data + Hash256.sha256(assertion.clientDataJSON).bytes
    let valid: Bool
    switch key.algorithm {
    case .es256: valid = verifyP256(signatureDER: assertion.signature, over: signed, rawPublicKey: key.rawPublicKey)
    case .edDSA: valid = verifyEd25519(signature: assertion.signature, over: signed, rawPublicKey: key.rawPublicKey)
    }
    guard valid else {
      throw RequestError(.badSignature, "the assertion's signature does not verify under the enrolled passkey")
    }
    let counter = data[33..<37].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    if counter != 0 || passkey.signCount != 0 {
      guard counter > passkey.signCount else {
        throw RequestError(
          .signCounterNotIncreasing,
          "the signature counter is \(counter) after \(passkey.signCount): a cloned authenticator or a replayed assertion"
        )
      }
    }
    return counter
  }

  /// ECDSA P-256 with SHA-256 over `message`, signature in DER.
  public static func verifyP256(signatureDER: [UInt8], over message: [UInt8], rawPublicKey: [UInt8]) -> Bool {
    guard let key = try? P256.Signing.PublicKey(x963Representation: rawPublicKey),
      let signature = try? P256.Signing.ECDSASignature(derRepresentation: signatureDER)
    else { return false }
    return key.isValidSignature(signature, for: message)
  }

  /// Ed25519 (RFC 8032) over `message`.
  public static func verifyEd25519(signature: [UInt8], over message: [UInt8], rawPublicKey: [UInt8]) -> Bool {
    guard signature.count == 64, let key = try? Curve25519.Signing.PublicKey(rawRepresentation: rawPublicKey) else {
      return false
    }
    return key.isValidSignature(signature, for: message)
  }
}

/// The approvals step of every request: each approval valid, from a distinct approver the
/// wallet (or the proposal) enrols, and at least `required` of them.
public enum ApprovalCheck {
  /// Verifies `approvals` of the request whose encoding is `envelope` against `approvers`
  /// (sorted by id, as wallet data keeps them) and returns the approvers with the counters the
  /// passkey assertions reported. Every approval given must be valid: a bad one is refused,
  /// not ignored, because only a tampering relay produces one.
  public static func verify(
    envelope: [UInt8], approvals: [Approval], approvers: [Approver], required: Int
  ) throws(RequestError) -> [Approver] {
    var seen = Set<String>()
    for approval in approvals where !seen.insert(approval.approverID).inserted {
      throw RequestError(.duplicateApprover, "approver '\(approval.approverID)' approved twice; each counts once")
    }
    guard approvals.count >= required else {
      throw RequestError(
        .thresholdNotMet,
        "\(approvals.count) distinct approvals; this request needs \(required) of the \(approvers.count) approvers")
    }
    let challenge = RequestEnvelope.challenge(of: envelope).bytes
    var updated = approvers
    for approval in approvals {
      guard let index = updated.firstIndex(where: { $0.id == approval.approverID }) else {
        throw RequestError(.unknownApprover, "'\(approval.approverID)' is not an approver of this wallet")
      }
      switch (updated[index].credential, approval.proof) {
      case (.passkey(var passkey), .passkey(let assertion)):
        passkey.signCount = try WebAuthn.verify(assertion, passkey: passkey, challenge: challenge)
        updated[index].credential = .passkey(passkey)
      case (.bot(let bot), .bot(let signature)):
        let valid =
          switch bot.algorithm {
          case .p256: WebAuthn.verifyP256(signatureDER: signature, over: envelope, rawPublicKey: bot.publicKey)
          case .ed25519: WebAuthn.verifyEd25519(signature: signature, over: envelope, rawPublicKey: bot.publicKey)
          }
        guard valid else {
          throw RequestError(
            .badSignature,
            "bot '\(approval.approverID)''s signature does not verify over this request under its enrolled key")
        }
      default:
        throw RequestError(
          .unknownApprover, "'\(approval.approverID)' is enrolled with another kind of credential than it approved with"
        )
      }
    }
    return updated
  }
}
