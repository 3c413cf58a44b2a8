import Foundation
import GRDB
import Logging

/// The server's SQLite database (through GRDB): one file, WAL journal, foreign keys on, and
/// the migrations that make its tables.
///
/// Every change of the workflow is one transaction (a request and its approvals, an intent and
/// the request's status, a vault result with the tree, the wallet, the sealed seed, the
/// request, the intent and the root history), so a crash at any point leaves either all of a
/// change or none of it.
public final class ServerDatabase: Sendable {
  /// The connection pool: one writer, concurrent readers on snapshots (WAL).
  public let pool: DatabasePool
  public let path: String

  /// Opens (creating when missing) the database at `path` and runs the migrations. The file
  /// and its directory are made readable by the owner only.
  public init(path: String, logger: Logger) throws {
    let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
    try FileManager.default.createDirectory(
      atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    var configuration = Configuration()
    configuration.foreignKeysEnabled = true
    configuration.busyMode = .timeout(10)
    configuration.prepareDatabase { db in
      // WAL with NORMAL sync: a commit is durable once the WAL is synced at checkpoints; a
      // crash of this process never loses a committed transaction (the OS has it), a power
      // loss may lose the last ones, which reconciliation with the device then settles.
      try db.execute(sql: "PRAGMA synchronous = NORMAL")
    }
    let previousMask = umask(0o077)
    defer { umask(previousMask) }
    pool = try DatabasePool(path: path, configuration: configuration)
    self.path = path
    try ServerDatabase.migrator.migrate(pool)
    logger.info("database opened", metadata: ["db.path": "\(path)"])
  }

  /// The schema, version by version. A released migration is never edited: a change is a new one.
  static var migrator: DatabaseMigrator {
    var migrator = DatabaseMigrator()
    migrator.registerMigration("v1: wallets, tree, seeds, requests, approvals, intents, history, audit, keys") { db in
      try db.execute(
        sql: """
          CREATE TABLE tree_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            leaf_count INTEGER NOT NULL,
            epoch INTEGER NOT NULL
          );
          INSERT INTO tree_state (id, leaf_count, epoch) VALUES (1, 1, 0);
          CREATE TABLE tree_nodes (
            node INTEGER PRIMARY KEY,
            value BLOB NOT NULL CHECK (length(value) = 32)
          );
          INSERT INTO tree_nodes (node, value) VALUES (1, zeroblob(32));
          CREATE TABLE wallets (
            id INTEGER PRIMARY KEY,
            status TEXT NOT NULL CHECK (status IN ('active', 'removed')),
            wallet_data BLOB,
            wallet_hash BLOB NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            created_by TEXT
          );
          CREATE TABLE sealed_seeds (
            wallet_id INTEGER PRIMARY KEY REFERENCES wallets(id),
            wallet_hash BLOB NOT NULL,
            sealed_seed BLOB NOT NULL,
            updated_at REAL NOT NULL
          );
          CREATE TABLE requests (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            wallet_id INTEGER,
            status TEXT NOT NULL,
            envelope BLOB NOT NULL,
            envelope_hash BLOB NOT NULL UNIQUE,
            base_wallet_hash BLOB NOT NULL,
            nonce INTEGER NOT NULL,
            threshold INTEGER NOT NULL,
            approvers TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            completed_at REAL,
            output BLOB,
            result_wallet_id INTEGER,
            result_epoch INTEGER,
            failure_code TEXT,
            failure_message TEXT,
            vault_code TEXT,
            api_key_id TEXT
          );
          CREATE INDEX requests_by_wallet ON requests (wallet_id, created_at);
          CREATE INDEX requests_by_status ON requests (status, expires_at);
          CREATE TABLE approvals (
            request_id TEXT NOT NULL REFERENCES requests(id),
            approver_id TEXT NOT NULL,
            encoded BLOB NOT NULL,
            received_at REAL NOT NULL,
            PRIMARY KEY (request_id, approver_id)
          );
          CREATE TABLE intents (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            request_id TEXT NOT NULL REFERENCES requests(id),
            call TEXT NOT NULL,
            wallet_id INTEGER,
            envelope_hash BLOB NOT NULL,
            old_leaf BLOB NOT NULL,
            anchor_leaf_count INTEGER NOT NULL,
            anchor_root BLOB NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'completed', 'discarded')),
            created_at REAL NOT NULL,
            settled_at REAL,
            note TEXT
          );
          CREATE INDEX intents_pending ON intents (state) WHERE state = 'pending';
          CREATE TABLE root_history (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            epoch INTEGER NOT NULL,
            leaf_count INTEGER NOT NULL,
            root BLOB NOT NULL,
            change TEXT NOT NULL,
            wallet_id INTEGER,
            request_id TEXT,
            vault_sequence INTEGER,
            recorded_at REAL NOT NULL
          );
          CREATE TABLE vault_audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            call TEXT NOT NULL,
            request_id TEXT,
            wallet_id INTEGER,
            outcome TEXT NOT NULL,
            code TEXT,
            detail TEXT
          );
          CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            key_hash BLOB NOT NULL UNIQUE,
            scopes TEXT NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL
          );
          """)
    }
    return migrator
  }
}

extension Date {
  /// Seconds since 1970 as the database stores times.
  var databaseValue: Double { timeIntervalSince1970 }
}
