import Foundation
import Testing

@testable import Vault

/// The flush after a commit syncs what changed since the last one, judged by bytes: a rewrite
/// within one clock tick, a new file, a removed file.
@Suite struct TokenDirectoryFlushTests {
  let root: String

  init() throws {
    root = FileManager.default.temporaryDirectory.appendingPathComponent("flush-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: root + "/token", withIntermediateDirectories: true)
    for (name, text) in [("a.object", "slot a 1"), ("b.object", "slot b 1"), ("generation", "7"), ("a.lock", "")] {
      try write(name, text)
    }
  }

  func write(_ name: String, _ text: String) throws {
    try Data(text.utf8).write(to: URL(fileURLWithPath: root + "/token/" + name))
  }

  func relative(_ synced: TokenDirectoryFlush.Synced) -> (files: Set<String>, directories: Set<String>) {
    (
      Set(synced.files.map { String($0.dropFirst(root.count + 1)) }),
      Set(synced.directories.map { $0 == root ? "." : String($0.dropFirst(root.count + 1)) })
    )
  }

  @Test func syncsEverythingFirstThenOnlyWhatChanged() throws {
    defer { try? FileManager.default.removeItem(atPath: root) }
    let flush = TokenDirectoryFlush(directory: root)
    let first = relative(try flush.flush())
    #expect(first.files == ["token/a.object", "token/b.object", "token/generation"])
    #expect(first.directories == [".", "token"])

    let unchanged = relative(try flush.flush())
    #expect(unchanged.files.isEmpty && unchanged.directories.isEmpty)

    // Same size, same clock tick: the bytes tell.
    try write("a.object", "slot a 2")
    try write("a.lock", "")
    let rewritten = relative(try flush.flush())
    #expect(rewritten.files == ["token/a.object"])
    #expect(rewritten.directories.isEmpty)

    try write("c.object", "slot c 1")
    let created = relative(try flush.flush())
    #expect(created.files == ["token/c.object"])
    #expect(created.directories == ["token"])

    try FileManager.default.removeItem(atPath: root + "/token/b.object")
    let removed = relative(try flush.flush())
    #expect(removed.files.isEmpty)
    #expect(removed.directories == ["token"])

    try write("b.object", "slot b 1")
    let back = relative(try flush.flush())
    #expect(back.files == ["token/b.object"])
    #expect(back.directories == ["token"])
  }

  @Test func aFileThatGrowsOrShrinksIsSynced() throws {
    defer { try? FileManager.default.removeItem(atPath: root) }
    let flush = TokenDirectoryFlush(directory: root)
    try flush.flush()
    try write("a.object", "slot a 1 and more")
    #expect(relative(try flush.flush()).files == ["token/a.object"])
    try write("a.object", "")
    #expect(relative(try flush.flush()).files == ["token/a.object"])
    #expect(relative(try flush.flush()).files.isEmpty)
  }
}
