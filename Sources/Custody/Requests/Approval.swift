/// One approver's approval of a request envelope: who approves, and the proof.
///
/// A passkey approval is a WebAuthn assertion whose challenge is SHA-256 of the envelope
/// (base64url in clientDataJSON); a bot approval is the bot's signature over the envelope's
/// encoding itself (which opens with its domain tag, so it cannot be taken for a signature over
/// any other Custos object). The encoding, deterministic CBOR like every Custos object:
///
/// ```
/// approval = ["custos/approval", 1, {0: approver id, 1: "passkey", 2: credential id,
///                                    3: authenticatorData, 4: clientDataJSON, 5: signature}]
///          / ["custos/approval", 1, {0: approver id, 1: "bot", 2: signature}]
/// ```
///
/// Signatures: ES256 passkeys and P-256 bots give ASN.1 DER (as WebAuthn and most tools do);
/// EdDSA passkeys and Ed25519 bots give the 64-byte RFC 8032 signature.
public struct Approval: Sendable, Hashable {
  /// The text that opens every approval encoding.
  public static let domain = "custos/approval"
  /// The version this build writes and reads.
  public static let currentVersion: UInt64 = 1

  /// The approver's id in the wallet (or, for a create-wallet request, in the proposal).
  public var approverID: String
  public var proof: Proof

  public init(approverID: String, proof: Proof) {
    self.approverID = approverID
    self.proof = proof
  }

  /// How the approver proves the approval.
  public enum Proof: Sendable, Hashable {
    case passkey(PasskeyAssertion)
    /// The bot's signature over the envelope's encoding.
    case bot(signature: [UInt8])
  }

  /// The approval as a CBOR value (not validated).
  public var cbor: CBOR {
    let fields: [(UInt64, CBOR)]
    switch proof {
    case .passkey(let assertion):
      fields = [
        (0, .text(approverID)), (1, .text("passkey")), (2, .bytes(assertion.credentialID)),
        (3, .bytes(assertion.authenticatorData)), (4, .bytes(assertion.clientDataJSON)),
        (5, .bytes(assertion.signature)),
      ]
    case .bot(let signature):
      fields = [(0, .text(approverID)), (1, .text("bot")), (2, .bytes(signature))]
    }
    return .array([.text(Approval.domain), .unsigned(Approval.currentVersion), CBOR.map(fields)])
  }

  /// The deterministic encoding (what the server relays to the vault).
  public func encoded() throws(RequestEnvelopeError) -> [UInt8] {
    try validate()
    do {
      return try cbor.encoded()
    } catch {
      throw RequestEnvelopeError(.cbor, field: "approval", "cannot encode: \(error)")
    }
  }

  /// Checks the sizes and the approver id.
  public func validate() throws(RequestEnvelopeError) {
    do {
      try checkText(approverID, FieldPath("approverID"), maxBytes: 128)
    } catch {
      throw RequestEnvelopeError(wrapping: error, under: "approval")
    }
    func check(_ count: Int, _ range: ClosedRange<Int>, _ field: String) throws(RequestEnvelopeError) {
      guard range.contains(count) else {
        throw RequestEnvelopeError(
          .invalidValue, field: "approval.\(field)",
          "\(field) has \(range.lowerBound) to \(range.upperBound) bytes, not \(count)")
      }
    }
    switch proof {
    case .passkey(let assertion):
      try check(assertion.credentialID.count, 1...1023, "credentialID")
      try check(assertion.authenticatorData.count, 37...1024, "authenticatorData")
      try check(assertion.clientDataJSON.count, 1...4096, "clientDataJSON")
      try check(assertion.signature.count, 1...132, "signature")
    case .bot(let signature):
      try check(signature.count, 1...132, "signature")
    }
  }

  /// Decodes and validates an approval encoding; anything not in deterministic form or not of
  /// this shape is refused.
  public static func decode(_ bytes: [UInt8]) throws(RequestEnvelopeError) -> Approval {
    let result = bytes.withUnsafeBytes { raw in
      Result { () throws(WalletDataError) -> Approval in
        try WalletReader.read(raw) { reader throws(WalletDataError) in try decodeFields(&reader) }
      }
    }
    let approval: Approval
    do {
      approval = try result.get()
    } catch {
      throw RequestEnvelopeError(wrapping: error, under: "approval")
    }
    try approval.validate()
    return approval
  }

  private static func decodeFields(_ reader: inout WalletReader) throws(WalletDataError) -> Approval {
    var fields = try reader.object("approval", domain: domain, version: currentVersion)
    let id = try reader.text(0, "approverID", in: &fields)
    let proof: Proof
    if try reader.either(1, "kind", in: &fields, "passkey", "bot") {
      proof = .passkey(
        PasskeyAssertion(
          credentialID: try reader.bytes(2, "credentialID", in: &fields),
          authenticatorData: try reader.bytes(3, "authenticatorData", in: &fields),
          clientDataJSON: try reader.bytes(4, "clientDataJSON", in: &fields),
          signature: try reader.bytes(5, "signature", in: &fields)))
    } else {
      proof = .bot(signature: try reader.bytes(2, "signature", in: &fields))
    }
    try reader.end(&fields)
    return Approval(approverID: id, proof: proof)
  }
}

/// A WebAuthn assertion (`AuthenticatorAssertionResponse`) as the vault checks it.
public struct PasskeyAssertion: Sendable, Hashable {
  /// The credential that signed (the `rawId` of the `PublicKeyCredential`).
  public var credentialID: [UInt8]
  /// rpIdHash (32) || flags (1) || signCount (4, big-endian) || extensions.
  public var authenticatorData: [UInt8]
  /// The client's JSON: type, challenge, origin, crossOrigin.
  public var clientDataJSON: [UInt8]
  /// Over authenticatorData || SHA-256(clientDataJSON): DER for ES256, 64 bytes for EdDSA.
  public var signature: [UInt8]

  public init(credentialID: [UInt8], authenticatorData: [UInt8], clientDataJSON: [UInt8], signature: [UInt8]) {
    self.credentialID = credentialID
    self.authenticatorData = authenticatorData
    self.clientDataJSON = clientDataJSON
    self.signature = signature
  }
}
