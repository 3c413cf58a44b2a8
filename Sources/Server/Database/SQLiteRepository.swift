import Custody
import Foundation
import GRDB

/// The repositories over the server's SQLite database. Each method is one transaction.
public final class SQLiteRepository: CustodyRepository {
  public let database: ServerDatabase
  private var pool: DatabasePool { database.pool }

  public init(database: ServerDatabase) {
    self.database = database
  }

  /// A read transaction run on the calling thread (GRDB's synchronous access): this server's
  /// queries take tens of microseconds, less than handing them to GRDB's queue and resuming
  /// the task afterwards (two thread switches).
  private func reading<T>(_ body: (Database) throws -> T) throws -> T { try pool.read(body) }

  /// A read of one statement, on the calling thread and without a transaction around it: one
  /// SQLite statement reads one consistent snapshot by itself, and the BEGIN and COMMIT of a
  /// read transaction are two more statements for each such read.
  private func readingOneStatement<T>(_ body: (Database) throws -> T) throws -> T { try pool.unsafeRead(body) }

  /// A write transaction run on the calling thread (see `reading`); concurrent writers wait for
  /// SQLite's single writer as they would on GRDB's queue.
  private func writing<T>(_ body: (Database) throws -> T) throws -> T { try pool.write(body) }

  // MARK: Wallets

  public func wallet(_ id: UInt64) async throws -> StoredWallet? {
    try readingOneStatement { db in try Self.wallet(db, id) }
  }

  public func wallets(after: UInt64, limit: Int) async throws -> [StoredWallet] {
    try readingOneStatement { db in
      try Row.fetchAll(
        db.cachedStatement(
          sql: """
            SELECT \(Self.walletColumns) FROM wallets w LEFT JOIN sealed_seeds s ON s.wallet_id = w.id
            WHERE w.id > ? ORDER BY w.id LIMIT ?
            """), arguments: [Int64(after), limit]
      ).map { Self.wallet(row: $0) }
    }
  }

  static func wallet(_ db: Database, _ id: UInt64) throws -> StoredWallet? {
    var wallet: StoredWallet? = nil
    try forEachRow(db.cachedStatement(sql: walletSQL), [Int64(id)]) { row in wallet = Self.wallet(row: row) }
    return wallet
  }

  static let walletSQL = """
    SELECT \(walletColumns) FROM wallets w LEFT JOIN sealed_seeds s ON s.wallet_id = w.id WHERE w.id = ?
    """

  /// Calls `body` with each row of `statement` as SQLite steps to it, read in place (GRDB's
  /// cursor row, valid until the next step): `fetchAll` and `fetchOne` copy every row, its
  /// values and its column names first, which cost more than the query on the hot reads.
  static func forEachRow(
    _ statement: Statement, _ arguments: StatementArguments, _ body: (Row) throws -> Void
  ) throws {
    let cursor = try Row.fetchCursor(statement, arguments: arguments)
    while let row = try cursor.next() { try body(row) }
  }

  /// The columns `wallet(row:)` reads, in its order (rows are read by position: GRDB's lookup
  /// by name compares lowercased names, which costs more than the query on a hot path).
  static let walletColumns =
    "w.id, w.status, w.wallet_data, w.wallet_hash, s.sealed_seed, w.created_at, w.updated_at"

  static let walletColumnCount = walletColumns.split(separator: ",").count

  /// A wallet from a row of `walletColumns`, starting at column `from`.
  static func wallet(row: Row, from first: Int = 0) -> StoredWallet {
    StoredWallet(
      id: UInt64(row[first] as Int64), status: StoredWallet.Status(rawValue: row[first + 1]) ?? .removed,
      walletData: (row[first + 2] as Data?).map { Array($0) }, walletHash: hash(row[first + 3]),
      sealedSeed: (row[first + 4] as Data?).map { Array($0) },
      createdAt: Date(timeIntervalSince1970: row[first + 5]),
      updatedAt: Date(timeIntervalSince1970: row[first + 6]))
  }

  // MARK: Requests

  public func insert(_ request: StoredRequest) async throws {
    try writing { db in
      try db.cachedStatement(
        sql: """
          INSERT INTO requests (id, kind, wallet_id, status, envelope, envelope_hash, base_wallet_hash, nonce,
            threshold, approvers, created_at, expires_at, api_key_id)
          VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
          """
      ).execute(arguments: [
        request.id, request.kind.rawValue, request.walletID.map { Int64($0) }, request.status.rawValue,
        Data(request.envelope), Data(request.envelopeHash.bytes), Data(request.baseWalletHash.bytes),
        Int64(request.nonce), request.threshold, Self.joinIDs(request.approverIDs),
        request.createdAt.databaseValue, request.expiresAt.databaseValue, request.apiKeyID,
      ])
    }
  }

  public func request(_ id: String) async throws -> StoredRequest? {
    try readingOneStatement { db in try Self.request(db, id) }
  }

  public func requestAndWallet(_ id: String) async throws -> (request: StoredRequest, wallet: StoredWallet?)? {
    try readingOneStatement { db in
      try Self.request(
        db.cachedStatement(sql: Self.requestAndWalletSQL), [id],
        approvalsFrom: Self.requestColumnCount + Self.walletColumnCount
      ) { first -> StoredWallet? in
        // The wallet's id column is NULL when the request names no wallet, or one not stored yet.
        guard first[Self.requestColumnCount] as Int64? != nil else { return nil }
        return Self.wallet(row: first, from: Self.requestColumnCount)
      }.map { (request: $0.request, wallet: $0.first) }
    }
  }

  public func requests(ofWallet walletID: UInt64, limit: Int) async throws -> [StoredRequest] {
    try reading { db in
      try Self.requests(
        db, sql: "SELECT \(Self.requestColumns) FROM requests WHERE wallet_id = ? ORDER BY created_at DESC, id LIMIT ?",
        arguments: [Int64(walletID), limit])
    }
  }

  public func requests(inStatus status: RequestStatus, limit: Int) async throws -> [StoredRequest] {
    try reading { db in
      try Self.requests(
        db, sql: "SELECT \(Self.requestColumns) FROM requests WHERE status = ? ORDER BY created_at, id LIMIT ?",
        arguments: [status.rawValue, limit])
    }
  }

  public func addApproval(_ approval: StoredApproval, to requestID: String, now: Date) async throws -> StoredRequest {
    try writing { db in
      guard var request = try Self.request(db, requestID) else {
        throw LedgerError(.notFound, "no request \(requestID)")
      }
      guard request.status == .awaitingApprovals else {
        throw LedgerError(.wrongState, "request \(requestID) is \(request.status.rawValue), not awaiting approvals")
      }
      guard request.expiresAt > now else {
        throw LedgerError(.wrongState, "request \(requestID) expired")
      }
      guard !request.approvals.contains(where: { $0.approverID == approval.approverID }) else {
        throw LedgerError(.duplicate, "'\(approval.approverID)' has approved request \(requestID) already")
      }
      try db.cachedStatement(
        sql: "INSERT INTO approvals (request_id, approver_id, encoded, received_at) VALUES (?, ?, ?, ?)"
      ).execute(arguments: [requestID, approval.approverID, Data(approval.encoded), approval.receivedAt.databaseValue])
      request.approvals.append(approval)
      if request.approvals.count >= request.threshold {
        request.status = .approved
        try db.cachedStatement(sql: "UPDATE requests SET status = ? WHERE id = ?").execute(arguments: [
          RequestStatus.approved.rawValue, requestID,
        ])
      }
      return request
    }
  }

  public func transition(
    _ requestID: String, from: Set<RequestStatus>, to: RequestStatus, failure: RequestFailure?, at: Date
  ) async throws -> Bool {
    try writing { db in
      try Self.transition(db, requestID, from: from, to: to, failure: failure, at: at)
    }
  }

  static func transition(
    _ db: Database, _ requestID: String, from: Set<RequestStatus>, to: RequestStatus, failure: RequestFailure?,
    at: Date
  ) throws -> Bool {
    let placeholders = Array(repeating: "?", count: from.count).joined(separator: ",")
    var arguments: [(any DatabaseValueConvertible)?] = [
      to.rawValue, to.isOpen ? nil : at.databaseValue, failure?.code, failure?.message, failure?.vaultCode, requestID,
    ]
    arguments += from.map { $0.rawValue }
    try db.cachedStatement(
      sql: """
        UPDATE requests SET status = ?, completed_at = ?, failure_code = ?, failure_message = ?, vault_code = ?
        WHERE id = ? AND status IN (\(placeholders))
        """
    ).execute(arguments: StatementArguments(arguments))
    return db.changesCount > 0
  }

  public func expire(now: Date) async throws -> Int {
    try writing { db in
      try db.cachedStatement(
        sql: """
          UPDATE requests SET status = 'expired', completed_at = ?, failure_code = 'expired',
            failure_message = 'the request expired before the vault was asked'
          WHERE status IN ('awaiting-approvals', 'approved') AND expires_at <= ?
          """
      ).execute(arguments: [now.databaseValue, now.databaseValue])
      return db.changesCount
    }
  }

  /// One request with its approvals, in one statement (the workflow's most frequent read):
  /// a row per approval, or one row with NULL approval columns when it has none.
  static func request(_ db: Database, _ id: String) throws -> StoredRequest? {
    try request(db.cachedStatement(sql: requestWithApprovalsSQL), [id], approvalsFrom: requestColumnCount) { _ in }?
      .request
  }

  /// The request of the rows `statement` reads (its columns first, then a row per approval
  /// whose columns start at `column`, NULL when it has none) with its approvals, and what
  /// `first` reads of its first row; nil without rows.
  static func request<Extra>(
    _ statement: Statement, _ arguments: StatementArguments, approvalsFrom column: Int,
    first: (Row) -> Extra
  ) throws -> (request: StoredRequest, first: Extra)? {
    var found: (request: StoredRequest, first: Extra)? = nil
    try forEachRow(statement, arguments) { row in
      if found == nil { found = (request(row: row), first(row)) }
      guard let approverID = row[column] as String? else { return }
      found!.request.approvals.append(approval(approverID: approverID, row: row, from: column + 1))
    }
    return found
  }

  static let requestColumnCount = requestColumnNames.count

  /// A request, the wallet it names (NULL columns when none) and its approvals, in one
  /// statement: one snapshot without a transaction (an approver's envelope, an approval).
  /// Request columns are prefixed here: `wallets` has columns of the same names.
  static let requestAndWalletSQL = """
    SELECT \(requestColumnNames.map { "r." + $0 }.joined(separator: ", ")), \(walletColumns),
      a.approver_id, a.encoded, a.received_at
    FROM requests r LEFT JOIN wallets w ON w.id = r.wallet_id LEFT JOIN sealed_seeds s ON s.wallet_id = w.id
    LEFT JOIN approvals a ON a.request_id = r.id
    WHERE r.id = ? ORDER BY a.received_at, a.approver_id
    """

  /// `requestColumns` name no column of `approvals` (SQLite would refuse an ambiguous name
  /// when the statement is prepared), so they need no table prefix here.
  static let requestWithApprovalsSQL = """
    SELECT \(requestColumns), a.approver_id, a.encoded, a.received_at
    FROM requests r LEFT JOIN approvals a ON a.request_id = r.id
    WHERE r.id = ? ORDER BY a.received_at, a.approver_id
    """

  /// An approval from `row`: its encoding and reception time at columns `from` and `from + 1`.
  static func approval(approverID: String, row: Row, from column: Int) -> StoredApproval {
    StoredApproval(
      approverID: approverID, encoded: Array(row[column] as Data),
      receivedAt: Date(timeIntervalSince1970: row[column + 1]))
  }

  static func requests(_ db: Database, sql: String, arguments: StatementArguments) throws -> [StoredRequest] {
    var requests = try Row.fetchAll(db.cachedStatement(sql: sql), arguments: arguments).map(request(row:))
    guard !requests.isEmpty else { return [] }
    let placeholders = Array(repeating: "?", count: requests.count).joined(separator: ",")
    let rows = try Row.fetchAll(
      db.cachedStatement(
        sql: """
          SELECT request_id, approver_id, encoded, received_at FROM approvals
          WHERE request_id IN (\(placeholders)) ORDER BY received_at, approver_id
          """),
      arguments: StatementArguments(requests.map(\.id)))
    var byRequest = [String: [StoredApproval]]()
    for row in rows {
      byRequest[row[0], default: []].append(approval(approverID: row[1], row: row, from: 2))
    }
    for index in requests.indices { requests[index].approvals = byRequest[requests[index].id] ?? [] }
    return requests
  }

  /// The columns `request(row:)` reads, in its order (see `walletColumns`).
  static let requestColumnNames = [
    "id", "kind", "wallet_id", "status", "envelope", "envelope_hash", "base_wallet_hash", "nonce", "threshold",
    "approvers", "created_at", "expires_at", "completed_at", "output", "result_epoch", "failure_code",
    "failure_message", "vault_code", "api_key_id",
  ]

  /// `requestColumnNames` as a select list.
  static let requestColumns = requestColumnNames.joined(separator: ", ")

  /// A request (without its approvals) from a row of `requestColumns`.
  static func request(row: Row) -> StoredRequest {
    let failureCode: String? = row[15]
    return StoredRequest(
      id: row[0], kind: RequestKind(rawValue: row[1]) ?? .signEIP1559,
      walletID: (row[2] as Int64?).map { UInt64($0) },
      status: RequestStatus(rawValue: row[3]) ?? .refused, envelope: Array(row[4] as Data),
      envelopeHash: hash(row[5]), baseWalletHash: hash(row[6]),
      nonce: UInt64(row[7] as Int64), threshold: row[8], approverIDs: splitIDs(row[9]),
      createdAt: Date(timeIntervalSince1970: row[10]),
      expiresAt: Date(timeIntervalSince1970: row[11]),
      completedAt: (row[12] as Double?).map { Date(timeIntervalSince1970: $0) },
      output: (row[13] as Data?).map { Array($0) },
      resultEpoch: (row[14] as Int64?).map { UInt64($0) },
      failure: failureCode.map {
        RequestFailure(code: $0, message: row[16] ?? "", vaultCode: row[17])
      }, apiKeyID: row[18])
  }

  /// Approver ids as stored: JSON array text (ids may hold any character but controls).
  static func joinIDs(_ ids: [String]) -> String {
    // Ids without quotes, backslashes or control characters need no escapes: written as they
    // are, between quotes (the ids of every approver kind the API takes). Others go through
    // JSONEncoder.
    let plain = ids.allSatisfy { id in
      id.utf8.allSatisfy { $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }
    }
    guard plain else { return String(decoding: (try? JSONEncoder().encode(ids)) ?? Data("[]".utf8), as: UTF8.self) }
    var text = "["
    for (index, id) in ids.enumerated() {
      text += index == 0 ? "\"" : ",\""
      text += id
      text += "\""
    }
    return text + "]"
  }

  static func splitIDs(_ text: String) -> [String] {
    // Without a backslash no id holds an escape, so none holds a quote: the array is
    // ["a","b",...] exactly as `joinIDs` wrote it, and split at its quotes it gives `[`, an id,
    // `,`, an id, ..., an id, `]`.
    if text == "[]" { return [] }
    if !text.utf8.contains(UInt8(ascii: "\\")) {
      let pieces = text.utf8.split(separator: UInt8(ascii: "\""), omittingEmptySubsequences: false)
      let framed =
        pieces.count >= 3 && pieces.count % 2 == 1 && pieces.first!.elementsEqual("[".utf8)
        && pieces.last!.elementsEqual("]".utf8)
        && stride(from: 2, to: pieces.count - 1, by: 2).allSatisfy { pieces[$0].elementsEqual(",".utf8) }
      if framed { return stride(from: 1, to: pieces.count, by: 2).map { String(Substring(pieces[$0])) } }
    }
    return (try? JSONDecoder().decode([String].self, from: Data(text.utf8))) ?? []
  }

  static func hash(_ data: Data?) -> Hash256 {
    data.flatMap { Hash256($0) } ?? .zero
  }

  // MARK: Ledger

  public func treeSummary() async throws -> TreeSummary {
    try reading { db in try Self.treeSummary(db) }
  }

  static func treeSummary(_ db: Database) throws -> TreeSummary {
    let state = try Row.fetchOne(db.cachedStatement(sql: "SELECT leaf_count, epoch FROM tree_state WHERE id = 1"))
    let root = try Data.fetchOne(db.cachedStatement(sql: "SELECT value FROM tree_nodes WHERE node = 1"))
    let active =
      try Int64.fetchOne(db.cachedStatement(sql: "SELECT count(*) FROM wallets WHERE status = 'active'")) ?? 0
    let pending =
      try Int64.fetchOne(db.cachedStatement(sql: "SELECT count(*) FROM intents WHERE state = 'pending'")) ?? 0
    return TreeSummary(
      leafCount: UInt64((state?["leaf_count"] as Int64?) ?? 1), root: hash(root),
      epoch: UInt64((state?["epoch"] as Int64?) ?? 0), activeWallets: UInt64(active), pendingIntents: UInt64(pending))
  }

  public func walletProof(
    _ walletID: UInt64
  ) async throws -> (
    wallet: StoredWallet, proof: WalletProof, path: MerklePath
  ) {
    try reading { db in
      guard let wallet = try Self.wallet(db, walletID) else {
        throw LedgerError(.notFound, "no wallet \(walletID)")
      }
      let tree = try MerkleTree(store: try DatabaseMerkleNodeStore(db))
      let proof = try tree.proof(ofWallet: walletID)
      let anchor = RootAnchor(leafCount: tree.leafCount, root: try tree.root())
      guard proof.leaf == wallet.walletHash else {
        throw LedgerError(
          .doesNotFit,
          "wallet \(walletID)'s leaf in the tree is not the hash of its stored data (the database is damaged)")
      }
      return (wallet, WalletProof(siblings: proof.siblings, anchor: anchor), try tree.path(ofWallet: walletID))
    }
  }

  public func currentLeafProof() async throws -> CurrentLeafProof {
    try reading { db in
      let tree = try MerkleTree(store: try DatabaseMerkleNodeStore(db))
      let proof = try tree.currentLeafProof()
      return CurrentLeafProof(
        leaf: proof.leaf, siblings: proof.siblings,
        anchor: RootAnchor(leafCount: tree.leafCount, root: try tree.root()))
    }
  }

  public func beginIntent(
    requestID: String, call: String, walletID: UInt64?, envelopeHash: Hash256, oldLeaf: Hash256, anchor: RootAnchor,
    at: Date
  ) async throws -> Intent? {
    try writing { db in
      guard try Self.transition(db, requestID, from: [.approved], to: .submitted, failure: nil, at: at) else {
        return nil
      }
      try db.cachedStatement(
        sql: """
          INSERT INTO intents (request_id, call, wallet_id, envelope_hash, old_leaf, anchor_leaf_count, anchor_root,
            state, created_at)
          VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)
          """
      ).execute(arguments: [
        requestID, call, walletID.map { Int64($0) }, Data(envelopeHash.bytes), Data(oldLeaf.bytes),
        Int64(anchor.leafCount), Data(anchor.root.bytes), at.databaseValue,
      ])
      return Intent(
        id: db.lastInsertedRowID, requestID: requestID, call: call, walletID: walletID, envelopeHash: envelopeHash,
        oldLeaf: oldLeaf, anchor: anchor, state: .pending, createdAt: at)
    }
  }

  public func complete(intent: Intent, result: RequestResult, at: Date) async throws {
    try writing { db in
      guard
        let state = try String.fetchOne(
          db.cachedStatement(sql: "SELECT state FROM intents WHERE id = ?"), arguments: [intent.id]),
        state == Intent.State.pending.rawValue
      else {
        throw LedgerError(.wrongState, "intent \(intent.id) is not pending")
      }
      let change = result.change
      var tree = try MerkleTree(store: try DatabaseMerkleNodeStore(db))
      switch change.kind {
      case .add:
        guard change.walletID == tree.nextWalletID else {
          throw LedgerError(
            .doesNotFit, "the vault added wallet \(change.walletID); the server's tree adds \(tree.nextWalletID) next")
        }
        guard Hash256.sha256(result.walletData) == change.leaf else {
          throw LedgerError(.doesNotFit, "the new wallet's data does not hash to the leaf the vault reported")
        }
        try tree.add(walletHash: change.leaf)
      case .update:
        guard Hash256.sha256(result.walletData) == change.leaf else {
          throw LedgerError(.doesNotFit, "the wallet's new data does not hash to the leaf the vault reported")
        }
        try tree.update(walletID: change.walletID, walletHash: change.leaf)
      case .remove:
        try tree.remove(walletID: change.walletID)
      }
      guard try tree.root() == change.root.root, tree.leafCount == change.root.leafCount else {
        throw LedgerError(
          .doesNotFit,
          "after change \(change.sequence) (\(change.kind.rawValue) of wallet \(change.walletID)) the server's root is not the vault's \(change.root.root.hex)"
        )
      }
      try db.cachedStatement(sql: "UPDATE tree_state SET epoch = max(epoch, ?) WHERE id = 1").execute(arguments: [
        Int64(change.root.epoch)
      ])
      let now = at.databaseValue
      let walletID = Int64(change.walletID)
      switch change.kind {
      case .add:
        try db.cachedStatement(
          sql: """
            INSERT INTO wallets (id, status, wallet_data, wallet_hash, created_at, updated_at, created_by)
            VALUES (?, 'active', ?, ?, ?, ?, ?)
            """
        ).execute(arguments: [walletID, Data(result.walletData), Data(change.leaf.bytes), now, now, intent.requestID])
        try db.cachedStatement(
          sql: "INSERT INTO sealed_seeds (wallet_id, wallet_hash, sealed_seed, updated_at) VALUES (?, ?, ?, ?)"
        ).execute(arguments: [walletID, Data(change.leaf.bytes), Data(result.sealedSeed), now])
      case .update:
        try db.cachedStatement(sql: "UPDATE wallets SET wallet_data = ?, wallet_hash = ?, updated_at = ? WHERE id = ?")
          .execute(arguments: [Data(result.walletData), Data(change.leaf.bytes), now, walletID])
        try db.cachedStatement(
          sql: "UPDATE sealed_seeds SET wallet_hash = ?, sealed_seed = ?, updated_at = ? WHERE wallet_id = ?"
        ).execute(arguments: [Data(change.leaf.bytes), Data(result.sealedSeed), now, walletID])
      case .remove:
        try db.cachedStatement(
          sql:
            "UPDATE wallets SET status = 'removed', wallet_data = NULL, wallet_hash = zeroblob(32), updated_at = ? WHERE id = ?"
        ).execute(arguments: [now, walletID])
        try db.cachedStatement(sql: "DELETE FROM sealed_seeds WHERE wallet_id = ?").execute(arguments: [walletID])
      }
      try db.cachedStatement(
        sql: """
          UPDATE requests SET status = 'completed', completed_at = ?, output = ?, result_epoch = ?, wallet_id = ?,
            failure_code = NULL, failure_message = NULL, vault_code = NULL
          WHERE id = ?
          """
      ).execute(arguments: [
        now, result.output.isEmpty ? nil : Data(result.output), Int64(change.root.epoch), walletID,
        intent.requestID,
      ])
      try db.cachedStatement(sql: "UPDATE intents SET state = 'completed', settled_at = ? WHERE id = ?").execute(
        arguments: [now, intent.id])
      // Requests made against the wallet's previous data can no longer pass the vault.
      try db.cachedStatement(
        sql: """
          UPDATE requests SET status = 'superseded', completed_at = ?, failure_code = 'superseded',
            failure_message = ?
          WHERE wallet_id = ? AND id != ? AND status IN ('awaiting-approvals', 'approved')
            AND (base_wallet_hash != ? OR ? = 'remove')
          """
      ).execute(arguments: [
        now,
        change.kind == .remove
          ? "the wallet was removed" : "request \(intent.requestID) changed the wallet first; make a new request",
        walletID, intent.requestID, Data(change.leaf.bytes), change.kind.rawValue,
      ])
      try Self.insertHistory(
        db,
        RootHistoryEntry(
          epoch: change.root.epoch, leafCount: change.root.leafCount, root: change.root.root,
          change: change.kind.rawValue, walletID: change.walletID, requestID: intent.requestID,
          vaultSequence: change.sequence, recordedAt: at))
      try Self.insertAudit(
        db,
        VaultAuditRecord(
          at: at, call: intent.call, requestID: intent.requestID, walletID: change.walletID, outcome: "ok", code: nil,
          detail: "sequence \(change.sequence), epoch \(change.root.epoch)"))
    }
  }

  public func settle(
    intent: Intent, requestStatus: RequestStatus, failure: RequestFailure?, note: String, at: Date
  ) async throws {
    try writing { db in
      try db.cachedStatement(
        sql: "UPDATE intents SET state = 'discarded', settled_at = ?, note = ? WHERE id = ? AND state = 'pending'"
      ).execute(arguments: [at.databaseValue, note, intent.id])
      guard db.changesCount > 0 else { throw LedgerError(.wrongState, "intent \(intent.id) is not pending") }
      _ = try Self.transition(db, intent.requestID, from: [.submitted], to: requestStatus, failure: failure, at: at)
    }
  }

  public func pendingIntents() async throws -> [Intent] {
    try reading { db in
      try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM intents WHERE state = 'pending' ORDER BY id")).map {
        row in
        Intent(
          id: row["id"], requestID: row["request_id"], call: row["call"],
          walletID: (row["wallet_id"] as Int64?).map { UInt64($0) }, envelopeHash: Self.hash(row["envelope_hash"]),
          oldLeaf: Self.hash(row["old_leaf"]),
          anchor: RootAnchor(
            leafCount: UInt64(row["anchor_leaf_count"] as Int64), root: Self.hash(row["anchor_root"])),
          state: .pending, createdAt: Date(timeIntervalSince1970: row["created_at"]))
      }
    }
  }

  public func recordRoot(_ entry: RootHistoryEntry) async throws {
    try writing { db in try Self.insertHistory(db, entry) }
  }

  static func insertHistory(_ db: Database, _ entry: RootHistoryEntry) throws {
    try db.cachedStatement(
      sql: """
        INSERT INTO root_history (epoch, leaf_count, root, change, wallet_id, request_id, vault_sequence, recorded_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
        """
    ).execute(arguments: [
      Int64(entry.epoch), Int64(entry.leafCount), Data(entry.root.bytes), entry.change,
      entry.walletID.map { Int64($0) }, entry.requestID, entry.vaultSequence.map { Int64(bitPattern: $0) },
      entry.recordedAt.databaseValue,
    ])
  }

  public func rootHistory(limit: Int) async throws -> [RootHistoryEntry] {
    try reading { db in
      try Row.fetchAll(
        db.cachedStatement(sql: "SELECT * FROM root_history ORDER BY id DESC LIMIT ?"), arguments: [limit]
      ).map { row in
        RootHistoryEntry(
          epoch: UInt64(row["epoch"] as Int64), leafCount: UInt64(row["leaf_count"] as Int64),
          root: Self.hash(row["root"]), change: row["change"],
          walletID: (row["wallet_id"] as Int64?).map { UInt64($0) }, requestID: row["request_id"],
          vaultSequence: (row["vault_sequence"] as Int64?).map { UInt64(bitPattern: $0) },
          recordedAt: Date(timeIntervalSince1970: row["recorded_at"]))
      }
    }
  }

  public func audit(_ record: VaultAuditRecord) async throws {
    try writing { db in try Self.insertAudit(db, record) }
  }

  static func insertAudit(_ db: Database, _ record: VaultAuditRecord) throws {
    try db.cachedStatement(
      sql: """
        INSERT INTO vault_audit (at, call, request_id, wallet_id, outcome, code, detail)
        VALUES (?, ?, ?, ?, ?, ?, ?)
        """
    ).execute(arguments: [
      record.at.databaseValue, record.call, record.requestID, record.walletID.map { Int64($0) }, record.outcome,
      record.code, record.detail,
    ])
  }

  public func auditRecords(limit: Int) async throws -> [VaultAuditRecord] {
    try reading { db in
      try Row.fetchAll(
        db.cachedStatement(sql: "SELECT * FROM vault_audit ORDER BY id DESC LIMIT ?"), arguments: [limit]
      ).map { row in
        VaultAuditRecord(
          at: Date(timeIntervalSince1970: row["at"]), call: row["call"], requestID: row["request_id"],
          walletID: (row["wallet_id"] as Int64?).map { UInt64($0) }, outcome: row["outcome"], code: row["code"],
          detail: row["detail"])
      }
    }
  }

  // MARK: API keys

  public func insert(_ key: APIKeyRecord) async throws {
    try writing { db in
      try db.cachedStatement(
        sql: "INSERT INTO api_keys (id, name, key_hash, scopes, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?)"
      ).execute(arguments: [
        key.id, key.name, Data(key.keyHash.bytes), key.scopes.sorted().map(\.rawValue).joined(separator: " "),
        key.createdAt.databaseValue, key.revokedAt?.databaseValue,
      ])
    }
  }

  public func key(hash: Hash256) async throws -> APIKeyRecord? {
    try readingOneStatement { db in
      try Row.fetchOne(
        db.cachedStatement(sql: "SELECT * FROM api_keys WHERE key_hash = ?"), arguments: [Data(hash.bytes)]
      ).map(
        Self.key(row:))
    }
  }

  public func keys() async throws -> [APIKeyRecord] {
    try readingOneStatement { db in
      try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM api_keys ORDER BY created_at, id")).map(Self.key(row:))
    }
  }

  public func revoke(id: String, at: Date) async throws -> Bool {
    try writing { db in
      try db.cachedStatement(sql: "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL").execute(
        arguments: [at.databaseValue, id])
      return db.changesCount > 0
    }
  }

  static func key(row: Row) -> APIKeyRecord {
    let scopes = (row["scopes"] as String).split(separator: " ").compactMap { APIScope(rawValue: String($0)) }
    return APIKeyRecord(
      id: row["id"], name: row["name"], keyHash: hash(row["key_hash"]), scopes: Set(scopes),
      createdAt: Date(timeIntervalSince1970: row["created_at"]),
      revokedAt: (row["revoked_at"] as Double?).map { Date(timeIntervalSince1970: $0) })
  }
}
