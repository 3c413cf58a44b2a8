// The vocabulary of the vault's request API, shared by the vault, the wire layer and the
// server: what a caller sends beside the canonical bytes (proofs and the root they were made
// against) and what comes back (the committed change and the new wallet state).

/// The tree a proof was computed from: its leaf count and root. The vault accepts proofs made
/// against any root it has had in its recent window (committed or still pending) and rebases
/// them onto its running root.
public struct RootAnchor: Hashable, Sendable, CustomStringConvertible {
  public var leafCount: UInt64
  public var root: Hash256

  public init(leafCount: UInt64, root: Hash256) {
    self.leafCount = leafCount
    self.root = root
  }

  /// The anchor of a root state.
  public init(_ state: RootState) {
    self.init(leafCount: state.leafCount, root: state.root)
  }

  public var description: String { "\(leafCount) leaves, root \(root.hex)" }
}

/// The siblings of a wallet's leaf (nearest first) in the tree `anchor` names. The leaf itself
/// is SHA-256 of the wallet data sent with the request.
public struct WalletProof: Hashable, Sendable {
  public var siblings: [Hash256]
  public var anchor: RootAnchor

  public init(siblings: [Hash256], anchor: RootAnchor) {
    self.siblings = siblings
    self.anchor = anchor
  }
}

/// The leaf an add splits, its value and its siblings, in the tree `anchor` names.
///
/// With m leaves the next add splits node m and the new wallet's id is m, so the node is also
/// the id the new wallet gets. By default it is the anchor's current leaf (`anchor.leafCount`).
/// A server with several adds in flight names a later leaf of the same tree (`node` from m to
/// 2m-1): the add that gets id `node`, once the adds before it are applied. The vault applies
/// adds strictly in id order: an add is accepted only when the running tree has `node` leaves,
/// waits (briefly) while earlier ids are still under way, and is refused (`staleProof`) once
/// the id is taken.
public struct CurrentLeafProof: Hashable, Sendable {
  public var leaf: Hash256
  public var siblings: [Hash256]
  public var anchor: RootAnchor
  /// The heap number of `leaf` in the anchor's tree, and the id the new wallet gets.
  public var node: UInt64

  /// A proof of the leaf `node` (by default the anchor's current leaf).
  public init(leaf: Hash256, siblings: [Hash256], anchor: RootAnchor, node: UInt64? = nil) {
    self.leaf = leaf
    self.siblings = siblings
    self.anchor = anchor
    self.node = node ?? anchor.leafCount
  }
}

/// A change the vault applied and committed, as the server mirrors it into its tree.
public struct AppliedWalletChange: Hashable, Sendable {
  public enum Kind: String, Hashable, Sendable {
    case add, update, remove
  }

  /// The vault's order of changes (1, 2, 3, ... over its lifetime, without gaps among the
  /// changes it released): the server applies changes in this order, and its root after
  /// change n is `root`.
  public var sequence: UInt64
  public var kind: Kind
  public var walletID: UInt64
  /// The node written at the leaf level: the wallet's leaf for an update or a removal, the
  /// split node (the old current leaf, whose children are now its old value and the new
  /// wallet) for an add.
  public var node: UInt64
  /// The wallet's new leaf: SHA-256 of its new data, or zero after a removal.
  public var leaf: Hash256
  /// The tree right after this change; its epoch is the commit that made it durable.
  public var root: RootState

  public init(sequence: UInt64, kind: Kind, walletID: UInt64, node: UInt64, leaf: Hash256, root: RootState) {
    self.sequence = sequence
    self.kind = kind
    self.walletID = walletID
    self.node = node
    self.leaf = leaf
    self.root = root
  }
}

/// What an approved request returns, only once the root recording it is durable in the token.
/// Everything in it is public.
public struct RequestResult: Hashable, Sendable {
  /// For `sign-eip1559` the raw signed transaction (0x02 || RLP, ready to broadcast); for
  /// `sign-personal-message` the 65-byte signature r || s || v (v = 27 + y parity); empty for
  /// the other operations.
  public var output: [UInt8]
  /// The wallet's new data (its deterministic encoding); empty after a removal.
  public var walletData: [UInt8]
  /// The wallet's seed sealed for the new data; empty after a removal.
  public var sealedSeed: [UInt8]
  public var change: AppliedWalletChange

  public init(output: [UInt8], walletData: [UInt8], sealedSeed: [UInt8], change: AppliedWalletChange) {
    self.output = output
    self.walletData = walletData
    self.sealedSeed = sealedSeed
    self.change = change
  }
}

/// The vault's root: what is durable in the token and what its accepted changes have made of it
/// since (the running root, committed with the next token write).
public struct VaultRootState: Hashable, Sendable {
  public var durable: RootState
  /// The sequence number of the last change the durable root records.
  public var durableSequence: UInt64
  /// The durable root with the pending changes applied (epoch: the durable one).
  public var running: RootState
  public var runningSequence: UInt64

  public init(durable: RootState, durableSequence: UInt64, running: RootState, runningSequence: UInt64) {
    self.durable = durable
    self.durableSequence = durableSequence
    self.running = running
    self.runningSequence = runningSequence
  }
}

/// A request the vault refused, and which check refused it. Every refusal leaves the root,
/// the wallet's nonce and its sealed seed as they were.
public struct RequestError: Error, Hashable, Sendable, CustomStringConvertible {
  /// Which check failed. Extensible: new codes are added as static members.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public var description: String { name }

    // The request's encodings.
    /// The envelope is not in deterministic CBOR (RFC 8949 section 4.2.1).
    public static let nonCanonicalEnvelope = Code("nonCanonicalEnvelope")
    /// The envelope is canonical CBOR but not a valid request (shape, field, value).
    public static let malformedEnvelope = Code("malformedEnvelope")
    /// An approval that does not decode (or is not canonical).
    public static let malformedApproval = Code("malformedApproval")
    /// The wallet data sent is not valid wallet data.
    public static let malformedWalletData = Code("malformedWalletData")
    /// The envelope asks for another operation than the call made (sign with a remove request).
    public static let wrongOperation = Code("wrongOperation")

    // Approvals.
    /// Fewer distinct valid approvals than the threshold (or, at creation, than the approvers).
    public static let thresholdNotMet = Code("thresholdNotMet")
    /// The same approver twice.
    public static let duplicateApprover = Code("duplicateApprover")
    /// An approver the wallet does not enrol, or a credential or key that is not the enrolled one.
    public static let unknownApprover = Code("unknownApprover")
    /// clientDataJSON whose type is not `webauthn.get`.
    public static let wrongClientDataType = Code("wrongClientDataType")
    /// clientDataJSON whose challenge is not SHA-256 of this envelope (it was changed after approval).
    public static let challengeMismatch = Code("challengeMismatch")
    /// An origin the passkey does not allow.
    public static let wrongOrigin = Code("wrongOrigin")
    /// An assertion made in a page embedded in another origin's page.
    public static let crossOriginRefused = Code("crossOriginRefused")
    /// authenticatorData for another relying party id.
    public static let wrongRPID = Code("wrongRPID")
    /// The user-present flag is not set.
    public static let userPresenceMissing = Code("userPresenceMissing")
    /// The user-verified flag is not set where the passkey requires it.
    public static let userVerificationMissing = Code("userVerificationMissing")
    /// The backup-state flag is set without the backup-eligible flag.
    public static let backupFlagsInconsistent = Code("backupFlagsInconsistent")
    /// A signature counter that did not increase (a cloned authenticator, or a replayed assertion).
    public static let signCounterNotIncreasing = Code("signCounterNotIncreasing")
    /// A signature that does not verify under the enrolled key.
    public static let badSignature = Code("badSignature")
    /// clientDataJSON that is not the JSON object WebAuthn describes.
    public static let malformedClientData = Code("malformedClientData")
    /// authenticatorData too short or otherwise unreadable.
    public static let malformedAuthenticatorData = Code("malformedAuthenticatorData")

    // The envelope against the wallet.
    /// The envelope names another wallet than the wallet data sent.
    public static let walletMismatch = Code("walletMismatch")
    /// The envelope was made against other (older) wallet data.
    public static let staleWalletHash = Code("staleWalletHash")
    /// A nonce not greater than the wallet's last one: a replayed or out-of-date request.
    public static let replayedNonce = Code("replayedNonce")
    /// The request expired.
    public static let expired = Code("expired")

    // Policy.
    /// The transaction's value exceeds the per-transaction limit.
    public static let perTransactionLimitExceeded = Code("perTransactionLimitExceeded")
    /// The value plus what the rolling window holds exceeds the window's limit.
    public static let rollingLimitExceeded = Code("rollingLimitExceeded")
    /// A destination outside the allowlist.
    public static let destinationNotAllowed = Code("destinationNotAllowed")
    /// Outside the hours the policy allows.
    public static let outsideTimeWindow = Code("outsideTimeWindow")

    // The tree.
    /// The leaf and siblings do not give the root the proof names.
    public static let proofInvalid = Code("proofInvalid")
    /// The proof's root is no longer in the vault's window, the wallet's leaf changed or moved
    /// since it, or (for an add) a wallet was added since it: fetch a new proof and retry.
    public static let staleProof = Code("staleProof")

    // The rest.
    /// The sealed seed does not open for this wallet data.
    public static let sealedSeedMismatch = Code("sealedSeedMismatch")
    /// Something this version does not do (non-custodial signing, EVM on an ed25519 wallet).
    public static let unsupported = Code("unsupported")
    /// The token write that would have made the change durable failed; nothing of it is kept.
    public static let commitFailed = Code("commitFailed")

    /// Every code this version defines, to rebuild one from its name on the far side of a
    /// wire (a name not in the list is still kept: a newer vault may know more).
    public static let all: [Code] = [
      .nonCanonicalEnvelope, .malformedEnvelope, .malformedApproval, .malformedWalletData, .wrongOperation,
      .thresholdNotMet, .duplicateApprover, .unknownApprover, .wrongClientDataType, .challengeMismatch, .wrongOrigin,
      .crossOriginRefused, .wrongRPID, .userPresenceMissing, .userVerificationMissing, .backupFlagsInconsistent,
      .signCounterNotIncreasing, .badSignature, .malformedClientData, .malformedAuthenticatorData, .walletMismatch,
      .staleWalletHash, .replayedNonce, .expired, .perTransactionLimitExceeded, .rollingLimitExceeded,
      .destinationNotAllowed, .outsideTimeWindow, .proofInvalid, .staleProof, .sealedSeedMismatch, .unsupported,
      .commitFailed,
    ]
  }

  public let code: Code
  /// A sentence naming what was wrong. Never contains secret material.
  public let reason: String

  public init(_ code: Code, _ reason: String) {
    self.code = code
    self.reason = reason
  }

  public var description: String { "\(code): \(reason)" }
}
