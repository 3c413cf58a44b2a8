import Custody
import Foundation
import GRDB
import TestSupport
import Testing

@testable import Server

/// The database on its own: the tree's node store against the in-memory tree and the paper's
/// shapes, transactions that roll back whole, and the repositories' refusals.
@Suite struct DatabaseTests {
  /// A new database in its own directory (removed when the value goes away: keep it).
  struct TestDatabase {
    let directory: TemporaryDirectory
    let database: ServerDatabase
    var pool: DatabasePool { database.pool }

    init() throws {
      directory = try TemporaryDirectory("custos-db")
      database = try ServerDatabase(path: directory.appending("server/custos.sqlite"), logger: testLogger)
    }
  }

  @Test func databaseFileIsPrivateAndWAL() throws {
    let test = try TestDatabase()
    let database = test.database
    let attributes = try FileManager.default.attributesOfItem(atPath: database.path)
    #expect((attributes[.posixPermissions] as? Int ?? 0) & 0o077 == 0)
    let folder = try FileManager.default.attributesOfItem(atPath: test.directory.appending("server"))
    #expect((folder[.posixPermissions] as? Int ?? 0) == 0o700)
    #expect(try database.pool.read { try String.fetchOne($0, sql: "PRAGMA journal_mode") } == "wal")
  }

  /// The same adds, updates and removals on the database store and on the in-memory store give
  /// the same root and proofs after every step.
  @Test func nodeStoreMatchesTheInMemoryTree() throws {
    let database = try TestDatabase()
    var memory = MerkleTree()
    var generator = SplitMix(seed: 7)
    for step in 0..<300 {
      let hash = Hash256.sha256(Array("wallet \(step)".utf8))
      let choice = generator.next() % 4
      try database.pool.write { db in
        var tree = try MerkleTree(store: try DatabaseMerkleNodeStore(db))
        if choice == 0 || memory.leafCount < 3 {
          try tree.add(walletHash: hash)
          try memory.add(walletHash: hash)
        } else {
          let wallet = 1 + generator.next() % (memory.leafCount - 1)
          if choice == 3 {
            try tree.remove(walletID: wallet)
            try memory.remove(walletID: wallet)
          } else {
            try tree.update(walletID: wallet, walletHash: hash)
            try memory.update(walletID: wallet, walletHash: hash)
          }
        }
      }
      try database.pool.read { db in
        let tree = try MerkleTree(store: try DatabaseMerkleNodeStore(db))
        #expect(try tree.root() == memory.root(), "step \(step)")
        #expect(tree.leafCount == memory.leafCount)
        let wallet = 1 + UInt64(step) % (memory.leafCount - 1 > 0 ? memory.leafCount - 1 : 1)
        if wallet < memory.leafCount {
          #expect(try tree.proof(ofWallet: wallet) == memory.proof(ofWallet: wallet))
        }
        #expect(try tree.currentLeafProof() == memory.currentLeafProof())
      }
    }
  }

  /// The paper's five-wallet tree (DESIGN.md section 6): root(L(LL(0, W4), LR(W2, W5)), R(W1,
  /// W3)), wallet 2 at L/R/L, and the current leaf W1.
  @Test func fiveWalletsHaveThePapersShape() throws {
    let database = try TestDatabase()
    let wallets = (1...5).map { Hash256.sha256(Array("W\($0)".utf8)) }
    try database.pool.write { db in
      var tree = try MerkleTree(store: try DatabaseMerkleNodeStore(db))
      for wallet in wallets { try tree.add(walletHash: wallet) }
      let leftLeft = Hash256.parent(.zero, wallets[3])
      let leftRight = Hash256.parent(wallets[1], wallets[4])
      let right = Hash256.parent(wallets[0], wallets[2])
      #expect(try tree.root() == Hash256.parent(Hash256.parent(leftLeft, leftRight), right))
      #expect(try tree.path(ofWallet: 2).description == "L/R/L")
      #expect(try tree.currentLeafProof().leaf == wallets[0])
    }
  }

  /// Approver ids are stored as a JSON array; every id reads back as written, whether it takes
  /// the quick path (no escapes) or JSON's (quotes, backslashes, controls).
  @Test func approverIDsReadBackAsWritten() throws {
    let lists: [[String]] = [
      [], [""], ["bot-a"], ["bot-a", "bot-b", "carol"], ["a,b", "c\",\"d", "e"], ["back\\slash", "sl/ash"],
      ["ünï ćødé", "😀", "tab\tand\nnewline"], ["\",\""], ["[", "]"], ["", ""],
    ]
    for ids in lists {
      let text = SQLiteRepository.joinIDs(ids)
      #expect(SQLiteRepository.splitIDs(text) == ids, "\(text)")
      #expect(try JSONDecoder().decode([String].self, from: Data(text.utf8)) == ids)
    }
    #expect(SQLiteRepository.joinIDs(["bot-a", "sl/ash", "ünï"]) == #"["bot-a","sl/ash","ünï"]"#)
  }

  /// A write that fails part-way leaves the tree, and everything else of its transaction, as it was.
  @Test func aFailedTransactionLeavesNothing() throws {
    let database = try TestDatabase()
    let before = try database.pool.read { db in try SQLiteRepository.treeSummary(db) }
    struct Abort: Error {}
    #expect(throws: Abort.self) {
      try database.pool.write { db in
        var tree = try MerkleTree(store: try DatabaseMerkleNodeStore(db))
        try tree.add(walletHash: Hash256.sha256([1]))
        try db.execute(
          sql:
            "INSERT INTO wallets (id, status, wallet_hash, created_at, updated_at) VALUES (1, 'active', zeroblob(32), 0, 0)"
        )
        throw Abort()
      }
    }
    let after = try database.pool.read { db in try SQLiteRepository.treeSummary(db) }
    #expect(after == before)
    #expect(try database.pool.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM wallets") } == 0)
    // A node the tree does not have is refused by name.
    try database.pool.read { db in
      let store = try DatabaseMerkleNodeStore(db)
      #expect(throws: MerkleError.self) { _ = try store.node(2) }
    }
  }

  /// Approvals: stored once per approver, refused (nothing written) when the request is closed,
  /// and the request is approved exactly when the threshold is reached.
  @Test func approvalsAreStoredOnceAndReachTheThreshold() async throws {
    let test = try TestDatabase()
    let repository = SQLiteRepository(database: test.database)
    let now = Date()
    let request = StoredRequest(
      id: "rq_" + String(repeating: "a", count: 32), kind: .signEIP1559, walletID: 1, status: .awaitingApprovals,
      envelope: [1, 2, 3], envelopeHash: Hash256.sha256([1, 2, 3]), baseWalletHash: .zero, nonce: 2, threshold: 2,
      approverIDs: ["a", "b", "c"], createdAt: now, expiresAt: now.addingTimeInterval(60))
    try await repository.insert(request)
    let first = try await repository.addApproval(
      StoredApproval(approverID: "a", encoded: [9], receivedAt: now), to: request.id, now: now)
    #expect(first.status == .awaitingApprovals)
    await #expect(throws: LedgerError.self) {
      _ = try await repository.addApproval(
        StoredApproval(approverID: "a", encoded: [9], receivedAt: now), to: request.id, now: now)
    }
    let second = try await repository.addApproval(
      StoredApproval(approverID: "b", encoded: [8], receivedAt: now), to: request.id, now: now)
    #expect(second.status == .approved)
    #expect(second.approvals.map(\.approverID) == ["a", "b"])
    // Closed: the third is refused and not stored.
    await #expect(throws: LedgerError.self) {
      _ = try await repository.addApproval(
        StoredApproval(approverID: "c", encoded: [7], receivedAt: now), to: request.id, now: now)
    }
    #expect(try await repository.request(request.id)?.approvals.count == 2)
    // An intent moves it to submitted exactly once.
    let anchor = RootAnchor(.genesis)
    let intent = try await repository.beginIntent(
      requestID: request.id, call: "Sign", walletID: 1, envelopeHash: request.envelopeHash, oldLeaf: .zero,
      anchor: anchor, at: now)
    #expect(intent != nil)
    #expect(
      try await repository.beginIntent(
        requestID: request.id, call: "Sign", walletID: 1, envelopeHash: request.envelopeHash, oldLeaf: .zero,
        anchor: anchor, at: now) == nil)
    #expect(try await repository.pendingIntents().count == 1)
    // A result that does not follow from the tree is refused whole.
    let misfit = RequestResult(
      output: [], walletData: [], sealedSeed: [],
      change: AppliedWalletChange(
        sequence: 1, kind: .update, walletID: 1, node: 1, leaf: .zero,
        root: RootState(epoch: 1, leafCount: 1, root: Hash256.sha256([0]))))
    await #expect(throws: (any Error).self) { try await repository.complete(intent: intent!, result: misfit, at: now) }
    #expect(try await repository.request(request.id)?.status == .submitted)
    #expect(try await repository.pendingIntents().count == 1)
  }

  @Test func expiredRequestsAreClosed() async throws {
    let test = try TestDatabase()
    let repository = SQLiteRepository(database: test.database)
    let now = Date()
    for (index, expiry) in [-1.0, 60].enumerated() {
      try await repository.insert(
        StoredRequest(
          id: "rq_" + String(repeating: "\(index)", count: 32), kind: .removeWallet, walletID: 1,
          status: .awaitingApprovals, envelope: [UInt8(index)], envelopeHash: Hash256.sha256([UInt8(index)]),
          baseWalletHash: .zero, nonce: 2, threshold: 1, approverIDs: ["a"], createdAt: now,
          expiresAt: now.addingTimeInterval(expiry)))
    }
    #expect(try await repository.expire(now: now) == 1)
    #expect(try await repository.request("rq_" + String(repeating: "0", count: 32))?.status == .expired)
    #expect(try await repository.request("rq_" + String(repeating: "1", count: 32))?.status == .awaitingApprovals)
  }
}

/// A small deterministic generator (SplitMix64) for the store comparison.
struct SplitMix {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
