import Custody
import Foundation

/// What a request asks the vault for (the envelope's operation).
public enum RequestKind: String, Sendable, Hashable, CaseIterable {
  case createWallet = "create-wallet"
  case updateWallet = "update-wallet"
  case removeWallet = "remove-wallet"
  case signEIP1559 = "sign-eip1559"
  case signPersonalMessage = "sign-personal-message"

  /// The kind of an envelope's operation.
  public init(_ operation: RequestEnvelope.Operation) {
    switch operation {
    case .createWallet: self = .createWallet
    case .updateWallet: self = .updateWallet
    case .removeWallet: self = .removeWallet
    case .signEIP1559: self = .signEIP1559
    case .signPersonalMessage: self = .signPersonalMessage
    }
  }

  /// Whether the request signs (and so is for an existing wallet's key).
  public var isSigning: Bool { self == .signEIP1559 || self == .signPersonalMessage }
}

/// Where a request is in the workflow (openapi.yaml's `RequestStatus`).
public enum RequestStatus: String, Sendable, Hashable, CaseIterable {
  /// Fewer approvals than the threshold so far.
  case awaitingApprovals = "awaiting-approvals"
  /// The threshold is met; the call waits for the device (sealed, unreachable, reconciling).
  case approved
  /// An intent is written and the call is with the vault (or its outcome is being settled).
  case submitted
  /// The vault did it; the result is stored.
  case completed
  /// The vault refused it.
  case refused
  /// Its expiry passed before it was sent.
  case expired
  /// Another request changed the wallet first: the envelope no longer matches the wallet data.
  case superseded
  /// Withdrawn by the customer.
  case cancelled

  /// Whether the request can still change (take approvals, be sent).
  public var isOpen: Bool { self == .awaitingApprovals || self == .approved || self == .submitted }
}

/// One approver's approval as stored: its canonical encoding.
public struct StoredApproval: Sendable, Hashable {
  public var approverID: String
  /// The `custos/approval` encoding, relayed to the vault as it is.
  public var encoded: [UInt8]
  public var receivedAt: Date

  public init(approverID: String, encoded: [UInt8], receivedAt: Date) {
    self.approverID = approverID
    self.encoded = encoded
    self.receivedAt = receivedAt
  }
}

/// Why a request did not complete.
public struct RequestFailure: Sendable, Hashable {
  /// An `APIError.Code` name (`vaultRefused`, `expired`, ...).
  public var code: String
  public var message: String
  /// The vault's own reason, when it refused.
  public var vaultCode: String?

  public init(code: String, message: String, vaultCode: String? = nil) {
    self.code = code
    self.message = message
    self.vaultCode = vaultCode
  }
}

/// A request as the database holds it.
public struct StoredRequest: Sendable, Hashable {
  /// `rq_` and 32 hex digits.
  public var id: String
  public var kind: RequestKind
  /// The wallet (for a creation: the one the vault assigned, once it did).
  public var walletID: UInt64?
  public var status: RequestStatus
  /// The canonical envelope approvers approve.
  public var envelope: [UInt8]
  public var envelopeHash: Hash256
  /// The wallet data's hash the envelope was made against (zero for a creation).
  public var baseWalletHash: Hash256
  public var nonce: UInt64
  /// Approvals needed.
  public var threshold: Int
  /// Who may approve (a creation: every proposed approver, all of whom must).
  public var approverIDs: [String]
  public var createdAt: Date
  public var expiresAt: Date
  public var completedAt: Date?
  /// The signed transaction or signature.
  public var output: [UInt8]?
  public var resultEpoch: UInt64?
  public var failure: RequestFailure?
  /// The API key that made it.
  public var apiKeyID: String?
  public var approvals: [StoredApproval]

  public init(
    id: String, kind: RequestKind, walletID: UInt64?, status: RequestStatus, envelope: [UInt8],
    envelopeHash: Hash256, baseWalletHash: Hash256, nonce: UInt64, threshold: Int, approverIDs: [String],
    createdAt: Date, expiresAt: Date, completedAt: Date? = nil, output: [UInt8]? = nil, resultEpoch: UInt64? = nil,
    failure: RequestFailure? = nil, apiKeyID: String? = nil, approvals: [StoredApproval] = []
  ) {
    self.id = id
    self.kind = kind
    self.walletID = walletID
    self.status = status
    self.envelope = envelope
    self.envelopeHash = envelopeHash
    self.baseWalletHash = baseWalletHash
    self.nonce = nonce
    self.threshold = threshold
    self.approverIDs = approverIDs
    self.createdAt = createdAt
    self.expiresAt = expiresAt
    self.completedAt = completedAt
    self.output = output
    self.resultEpoch = resultEpoch
    self.failure = failure
    self.apiKeyID = apiKeyID
    self.approvals = approvals
  }
}

/// A wallet as the database holds it: its latest data and sealed seed.
public struct StoredWallet: Sendable, Hashable {
  public enum Status: String, Sendable, Hashable {
    case active, removed
  }
  public var id: UInt64
  public var status: Status
  /// The canonical wallet data; nil once removed.
  public var walletData: [UInt8]?
  /// SHA-256 of the data (its leaf); zero once removed.
  public var walletHash: Hash256
  /// The seed sealed for the current data; nil once removed.
  public var sealedSeed: [UInt8]?
  public var createdAt: Date
  public var updatedAt: Date

  public init(
    id: UInt64, status: Status, walletData: [UInt8]?, walletHash: Hash256, sealedSeed: [UInt8]?, createdAt: Date,
    updatedAt: Date
  ) {
    self.id = id
    self.status = status
    self.walletData = walletData
    self.walletHash = walletHash
    self.sealedSeed = sealedSeed
    self.createdAt = createdAt
    self.updatedAt = updatedAt
  }
}

/// A vault call the server is about to make (written before the call) or made: the exact
/// change it asks for, so that after a crash the server can tell, against the device's root,
/// whether the device applied it.
public struct Intent: Sendable, Hashable {
  public enum State: String, Sendable, Hashable {
    case pending, completed, discarded
  }
  public var id: Int64
  public var requestID: String
  /// `CreateWallet`, `UpdateWallet`, `RemoveWallet` or `Sign`.
  public var call: String
  public var walletID: UInt64?
  /// SHA-256 of the envelope sent: the request's identity at the device.
  public var envelopeHash: Hash256
  /// The leaf the change replaces (the current leaf for a creation).
  public var oldLeaf: Hash256
  /// The tree the proof was made from.
  public var anchor: RootAnchor
  public var state: State
  public var createdAt: Date

  public init(
    id: Int64, requestID: String, call: String, walletID: UInt64?, envelopeHash: Hash256, oldLeaf: Hash256,
    anchor: RootAnchor, state: State, createdAt: Date
  ) {
    self.id = id
    self.requestID = requestID
    self.call = call
    self.walletID = walletID
    self.envelopeHash = envelopeHash
    self.oldLeaf = oldLeaf
    self.anchor = anchor
    self.state = state
    self.createdAt = createdAt
  }
}

/// The server's tree as one transaction saw it.
public struct TreeSummary: Sendable, Hashable {
  public var leafCount: UInt64
  public var root: Hash256
  /// The device epoch of the last change mirrored.
  public var epoch: UInt64
  /// Wallets not removed.
  public var activeWallets: UInt64
  public var pendingIntents: UInt64

  public init(leafCount: UInt64, root: Hash256, epoch: UInt64, activeWallets: UInt64, pendingIntents: UInt64) {
    self.leafCount = leafCount
    self.root = root
    self.epoch = epoch
    self.activeWallets = activeWallets
    self.pendingIntents = pendingIntents
  }
}

/// One entry of the root history: the tree after a change, and what changed.
public struct RootHistoryEntry: Sendable, Hashable {
  public var epoch: UInt64
  public var leafCount: UInt64
  public var root: Hash256
  /// `add`, `update`, `remove`, or a note (`reconciled`, `diverged`).
  public var change: String
  public var walletID: UInt64?
  public var requestID: String?
  public var vaultSequence: UInt64?
  public var recordedAt: Date

  public init(
    epoch: UInt64, leafCount: UInt64, root: Hash256, change: String, walletID: UInt64?, requestID: String?,
    vaultSequence: UInt64?, recordedAt: Date
  ) {
    self.epoch = epoch
    self.leafCount = leafCount
    self.root = root
    self.change = change
    self.walletID = walletID
    self.requestID = requestID
    self.vaultSequence = vaultSequence
    self.recordedAt = recordedAt
  }
}

/// One vault call as the server's audit records it.
public struct VaultAuditRecord: Sendable, Hashable {
  public var at: Date
  public var call: String
  public var requestID: String?
  public var walletID: UInt64?
  /// `ok`, `refused`, `failed`, `unknown`.
  public var outcome: String
  public var code: String?
  public var detail: String?

  public init(
    at: Date, call: String, requestID: String?, walletID: UInt64?, outcome: String, code: String?, detail: String?
  ) {
    self.at = at
    self.call = call
    self.requestID = requestID
    self.walletID = walletID
    self.outcome = outcome
    self.code = code
    self.detail = detail
  }
}

/// What an API key may do.
public enum APIScope: String, Sendable, Hashable, CaseIterable, Comparable {
  case deviceRead = "device:read"
  case walletsRead = "wallets:read"
  case walletsWrite = "wallets:write"
  case requestsRead = "requests:read"
  case requestsWrite = "requests:write"

  public static func < (lhs: APIScope, rhs: APIScope) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// An API key as stored: never the key, only its SHA-256.
public struct APIKeyRecord: Sendable, Hashable {
  /// `ak_` and 16 hex digits: names the key in logs and listings.
  public var id: String
  public var name: String
  public var keyHash: Hash256
  public var scopes: Set<APIScope>
  public var createdAt: Date
  public var revokedAt: Date?

  public init(id: String, name: String, keyHash: Hash256, scopes: Set<APIScope>, createdAt: Date, revokedAt: Date?) {
    self.id = id
    self.name = name
    self.keyHash = keyHash
    self.scopes = scopes
    self.createdAt = createdAt
    self.revokedAt = revokedAt
  }
}
