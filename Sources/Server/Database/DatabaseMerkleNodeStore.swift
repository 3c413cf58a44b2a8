import Custody
import Foundation
import GRDB

/// The server's Merkle tree in the database: `MerkleTree` over this store reads and writes the
/// `tree_nodes` table (node number -> 32 bytes) and the leaf count in `tree_state`, inside the
/// database transaction it is made in. A change's node writes therefore commit or roll back
/// with the rest of that transaction (the wallet, the request, the intent, the history).
///
/// Use it only inside the `read` or `write` closure that handed out `db`.
public struct DatabaseMerkleNodeStore: MerkleNodeStore {
  private let db: Database
  public private(set) var leafCount: UInt64

  /// The store as the transaction of `db` sees it.
  public init(_ db: Database) throws {
    self.db = db
    let count = try Int64.fetchOne(db.cachedStatement(sql: "SELECT leaf_count FROM tree_state WHERE id = 1")) ?? 0
    leafCount = UInt64(count)
  }

  public func node(_ node: UInt64) throws -> Hash256 {
    guard node >= 1, node < 2 * leafCount,
      let data = try Data.fetchOne(
        db.cachedStatement(sql: "SELECT value FROM tree_nodes WHERE node = ?"), arguments: [Int64(bitPattern: node)]),
      let value = Hash256(data)
    else {
      throw MerkleError(.missingNode, "node \(node) is not in the stored tree of \(leafCount) leaves")
    }
    return value
  }

  public func nodes(_ nodes: [UInt64]) throws -> [Hash256] {
    guard !nodes.isEmpty else { return [] }
    for node in nodes where node < 1 || node >= 2 * leafCount {
      throw MerkleError(.missingNode, "node \(node) is not in the stored tree of \(leafCount) leaves")
    }
    let placeholders = Array(repeating: "?", count: nodes.count).joined(separator: ",")
    let rows = try Row.fetchAll(
      db.cachedStatement(sql: "SELECT node, value FROM tree_nodes WHERE node IN (\(placeholders))"),
      arguments: StatementArguments(nodes.map { Int64(bitPattern: $0) }))
    var values = [UInt64: Hash256]()
    for row in rows {
      let data: Data = row["value"]
      if let value = Hash256(data) { values[UInt64(bitPattern: row["node"] as Int64)] = value }
    }
    return try nodes.map { node in
      guard let value = values[node] else {
        throw MerkleError(.missingNode, "node \(node) is missing from the stored tree")
      }
      return value
    }
  }

  public mutating func write(_ writes: [MerkleNodeWrite], leafCount: UInt64) throws {
    for write in writes {
      guard write.node >= 1, write.node < 2 * leafCount else {
        throw MerkleError(.missingNode, "node \(write.node) is outside a tree of \(leafCount) leaves")
      }
    }
    let statement = try db.cachedStatement(sql: "INSERT OR REPLACE INTO tree_nodes (node, value) VALUES (?, ?)")
    for write in writes {
      try statement.execute(arguments: [Int64(bitPattern: write.node), Data(write.value.bytes)])
    }
    if leafCount != self.leafCount {
      try db.cachedStatement(sql: "UPDATE tree_state SET leaf_count = ? WHERE id = 1").execute(arguments: [
        Int64(leafCount)
      ])
      self.leafCount = leafCount
    }
  }
}
