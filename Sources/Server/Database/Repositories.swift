import Custody
import Foundation

/// Wallets and their sealed seeds.
public protocol WalletRepository: Sendable {
  /// The wallet with `id`, or nil.
  func wallet(_ id: UInt64) async throws -> StoredWallet?
  /// Wallets with an id above `after`, in id order, at most `limit`.
  func wallets(after: UInt64, limit: Int) async throws -> [StoredWallet]
}

/// Requests and their approvals.
public protocol RequestRepository: Sendable {
  /// Stores a new request (status `awaiting-approvals`).
  func insert(_ request: StoredRequest) async throws
  /// The request with `id` and its approvals, or nil.
  func request(_ id: String) async throws -> StoredRequest?
  /// The request with `id`, its approvals, and the wallet it names (nil for a creation or an
  /// unknown wallet), read in one snapshot; nil when there is no such request.
  func requestAndWallet(_ id: String) async throws -> (request: StoredRequest, wallet: StoredWallet?)?
  /// The requests of a wallet, newest first.
  func requests(ofWallet walletID: UInt64, limit: Int) async throws -> [StoredRequest]
  /// Requests in `status`, oldest first.
  func requests(inStatus status: RequestStatus, limit: Int) async throws -> [StoredRequest]
  /// Adds an approval in one transaction: refused (nothing written) when the request is not
  /// awaiting approvals or the approver approved it already. The request becomes `approved`
  /// when this approval reaches its threshold. Returns the request afterwards.
  func addApproval(_ approval: StoredApproval, to requestID: String, now: Date) async throws -> StoredRequest
  /// Moves a request from one of `from` to `to` (with a failure when given); false when it was
  /// in none of them.
  func transition(
    _ requestID: String, from: Set<RequestStatus>, to: RequestStatus, failure: RequestFailure?, at: Date
  ) async throws -> Bool
  /// Marks requests awaiting approvals, or approved and not sent, whose expiry is not after
  /// `now` as expired; returns how many.
  func expire(now: Date) async throws -> Int
}

/// The server's tree, the intents of vault calls, the root history and the audit of vault calls.
public protocol LedgerRepository: Sendable {
  /// The tree's leaf count, root, epoch and counts.
  func treeSummary() async throws -> TreeSummary
  /// The wallet's record and its proof in the current tree (one snapshot).
  func walletProof(_ walletID: UInt64) async throws -> (wallet: StoredWallet, proof: WalletProof, path: MerklePath)
  /// The current leaf's proof, for adding a wallet.
  func currentLeafProof() async throws -> CurrentLeafProof
  /// Writes an intent and moves its request from `approved` to `submitted`, in one
  /// transaction; nil (nothing written) when the request is not `approved`.
  func beginIntent(
    requestID: String, call: String, walletID: UInt64?, envelopeHash: Hash256, oldLeaf: Hash256, anchor: RootAnchor,
    at: Date
  ) async throws -> Intent?
  /// Applies a vault result to the tree, the wallet, its sealed seed, the request, the intent,
  /// the root history and the vault audit (outcome `ok`), in one transaction; refused (nothing written) with
  /// `LedgerError.doesNotFit` when the change applied to the tree does not give the root the
  /// vault reported (it is not the next change).
  func complete(intent: Intent, result: RequestResult, at: Date) async throws
  /// Settles an intent the vault did not apply: the request goes to `status` (`approved` to be
  /// sent again, `refused`, `superseded`, `expired`) with `failure`.
  func settle(
    intent: Intent, requestStatus: RequestStatus, failure: RequestFailure?, note: String, at: Date
  ) async throws
  /// Intents not yet completed or discarded, oldest first.
  func pendingIntents() async throws -> [Intent]
  /// Records a root in the history without a change (a reconciliation's verdict).
  func recordRoot(_ entry: RootHistoryEntry) async throws
  /// The newest history entries, newest first.
  func rootHistory(limit: Int) async throws -> [RootHistoryEntry]
  /// Appends to the audit of vault calls.
  func audit(_ record: VaultAuditRecord) async throws
  /// The newest audit records, newest first.
  func auditRecords(limit: Int) async throws -> [VaultAuditRecord]
}

/// API keys, by the SHA-256 of the key.
public protocol APIKeyRepository: Sendable {
  func insert(_ key: APIKeyRecord) async throws
  /// The key whose SHA-256 is `hash`, or nil.
  func key(hash: Hash256) async throws -> APIKeyRecord?
  func keys() async throws -> [APIKeyRecord]
  /// Revokes the key `id`; false when there is no such key.
  func revoke(id: String, at: Date) async throws -> Bool
}

/// Everything the server stores.
public typealias CustodyRepository = APIKeyRepository & LedgerRepository & RequestRepository & WalletRepository

/// A refusal of the ledger's repository.
public struct LedgerError: Error, Hashable, Sendable, CustomStringConvertible {
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public var description: String { name }

    /// The change does not follow from the server's tree (its root after it is not the
    /// vault's): not the next change, or the trees disagree.
    public static let doesNotFit = Code("doesNotFit")
    /// The request, wallet or intent is not in a state that allows this.
    public static let wrongState = Code("wrongState")
    /// No such wallet, request or intent.
    public static let notFound = Code("notFound")
    /// Already there (an approver's second approval of a request).
    public static let duplicate = Code("duplicate")
  }

  public let code: Code
  public let reason: String

  public init(_ code: Code, _ reason: String) {
    self.code = code
    self.reason = reason
  }

  public var description: String { "\(code): \(reason)" }
}
