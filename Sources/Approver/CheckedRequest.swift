import Custody
import Foundation

/// What the server says about a request on its approval route (`GET /v1/approvals/{id}`),
/// reduced to what an approver's tool checks. Nothing in it is trusted until `check` has
/// compared it with the envelope itself.
public struct ServedRequest: Sendable, Hashable {
  public struct ListedApprover: Sendable, Hashable {
    public var id: String
    public var isPasskey: Bool
    public var approved: Bool
    public var credentialID: [UInt8]?
    public var rpID: String?

    public init(id: String, isPasskey: Bool, approved: Bool, credentialID: [UInt8]? = nil, rpID: String? = nil) {
      self.id = id
      self.isPasskey = isPasskey
      self.approved = approved
      self.credentialID = credentialID
      self.rpID = rpID
    }
  }

  public var id: String
  public var kind: String
  public var walletID: UInt64?
  /// `awaiting-approvals`, `completed`, ...
  public var status: String
  /// The envelope as served (base64url text, not yet decoded).
  public var envelope: String
  /// base64url(SHA-256(envelope)) as served.
  public var challenge: String
  public var approvers: [ListedApprover]

  public init(
    id: String, kind: String, walletID: UInt64?, status: String, envelope: String, challenge: String,
    approvers: [ListedApprover]
  ) {
    self.id = id
    self.kind = kind
    self.walletID = walletID
    self.status = status
    self.envelope = envelope
    self.challenge = challenge
    self.approvers = approvers
  }
}

/// A request an approver's tool has decoded and checked itself: the envelope's bytes (what it
/// signs), the decoded envelope, and its rendering by the one Custody renderer.
public struct CheckedRequest: Sendable {
  public let requestID: String
  public let encoding: [UInt8]
  public let envelope: RequestEnvelope
  /// `RequestEnvelope.rendered()` of the decoded envelope (never the server's text).
  public var rendering: String { envelope.rendered() }

  /// Decodes and checks what the server served for `requestID` before `approverID` may sign
  /// it with `key`:
  /// - the envelope is base64url, decodes as a request, and re-encodes to the very same bytes
  ///   (deterministic CBOR: one request, one encoding);
  /// - the served id, challenge (SHA-256 of the bytes), kind and wallet are the envelope's;
  /// - `expectedWallet`, when given, is the envelope's wallet;
  /// - the request awaits approvals, lists `approverID`, who has not approved it yet; for a
  ///   creation, the proposal enrols this very key under that id; for a passkey, the listed
  ///   credential and RP id are this passkey's;
  /// - it has not expired by this machine's clock.
  public static func check(
    _ served: ServedRequest, requestID: String, approverID: String, key: ApproverKey, expectedWallet: UInt64? = nil,
    now: Date = Date()
  ) throws(ApproverError) -> CheckedRequest {
    guard served.id == requestID else {
      throw ApproverError(.envelopeMismatch, "asked for request \(requestID), the server answered with \(served.id)")
    }
    guard let bytes = Base64URL.decode(served.envelope), !bytes.isEmpty else {
      throw ApproverError(.envelopeNotCanonical, "the envelope of \(requestID) is not base64url")
    }
    let envelope: RequestEnvelope
    do {
      envelope = try RequestEnvelope.decode(bytes)
    } catch {
      throw ApproverError(
        .envelopeNotCanonical, "the envelope of \(requestID) does not decode as a canonical request: \(error)")
    }
    let reencoded: [UInt8]
    do {
      reencoded = try envelope.encoded()
    } catch {
      throw ApproverError(.envelopeNotCanonical, "the envelope of \(requestID) does not re-encode: \(error)")
    }
    guard reencoded == bytes else {
      throw ApproverError(
        .envelopeNotCanonical,
        "the envelope of \(requestID) is not in deterministic form: it re-encodes to other bytes (\(reencoded.count) against \(bytes.count))"
      )
    }
    guard served.challenge == Base64URL.encode(RequestEnvelope.challenge(of: bytes).bytes) else {
      throw ApproverError(
        .envelopeMismatch, "the challenge the server gives for \(requestID) is not SHA-256 of the envelope it sent")
    }
    guard served.kind == envelope.operation.name else {
      throw ApproverError(
        .envelopeMismatch,
        "the server says \(requestID) is a \(served.kind) request; its envelope is \(envelope.operation.name)")
    }
    if case .createWallet = envelope.operation {
      if let wallet = served.walletID, served.status == "awaiting-approvals" {
        throw ApproverError(
          .envelopeMismatch, "the server names wallet \(wallet) for a creation that has not happened yet")
      }
    } else {
      guard served.walletID == envelope.walletID else {
        throw ApproverError(
          .envelopeMismatch,
          "the server says \(requestID) is for wallet \(served.walletID.map(String.init) ?? "none"); its envelope is for wallet \(envelope.walletID)"
        )
      }
      if let expectedWallet, expectedWallet != envelope.walletID {
        throw ApproverError(
          .envelopeMismatch, "\(requestID) is for wallet \(envelope.walletID), not wallet \(expectedWallet) as expected"
        )
      }
    }
    guard served.status == "awaiting-approvals" else {
      throw ApproverError(.requestClosed, "\(requestID) is \(served.status): it takes no approval")
    }
    guard let listed = served.approvers.first(where: { $0.id == approverID }) else {
      throw ApproverError(
        .notAnApprover,
        "\(requestID) does not list approver '\(approverID)' (it lists \(served.approvers.map(\.id).joined(separator: ", ")))"
      )
    }
    guard !listed.approved else {
      throw ApproverError(.requestClosed, "'\(approverID)' has approved \(requestID) already")
    }
    switch key.signer {
    case .bot:
      guard !listed.isPasskey else {
        throw ApproverError(.notAnApprover, "'\(approverID)' is enrolled with a passkey, and this is a bot key")
      }
    case .passkey(let authenticator):
      guard listed.isPasskey, listed.credentialID == authenticator.credentialID, listed.rpID == authenticator.rpID
      else {
        throw ApproverError(
          .notAnApprover, "'\(approverID)' is not enrolled with this passkey (credential and RP id) in \(requestID)")
      }
    }
    if case .createWallet(let configuration) = envelope.operation {
      guard let proposed = configuration.approvers.first(where: { $0.id == approverID }),
        sameCredential(proposed.credential, key.approver(id: approverID).credential)
      else {
        throw ApproverError(
          .notAnApprover, "the proposed wallet enrols another key than this one under '\(approverID)'")
      }
    }
    guard UInt64(max(0, now.timeIntervalSince1970)) < envelope.expiry else {
      throw ApproverError(.requestClosed, "\(requestID) expired at \(envelope.expiry) (Unix seconds)")
    }
    return CheckedRequest(requestID: requestID, encoding: bytes, envelope: envelope)
  }

  /// Same key (and for passkeys, same credential and RP id); counters and origins aside.
  static func sameCredential(_ a: Approver.Credential, _ b: Approver.Credential) -> Bool {
    switch (a, b) {
    case (.bot(let x), .bot(let y)): x == y
    case (.passkey(let x), .passkey(let y)):
      x.credentialID == y.credentialID && x.publicKey == y.publicKey && x.rpID == y.rpID
    default: false
    }
  }
}
