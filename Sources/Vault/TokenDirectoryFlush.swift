import Foundation

/// Makes a SoftHSM token directory durable after a token write, syncing only what changed
/// since its own last flush.
///
/// SoftHSM never calls fsync, so the vault flushes the token's files itself after each root
/// commit. Syncing every file and directory (as the first flush does) costs one disk cache flush
/// each: on this machine's ext4 an fsync of an unchanged file still takes about 16 us of CPU and
/// 70 us of wall time, and a token directory holds ten or so of them, while a commit's label
/// rewrite changes one object file. So the flusher remembers the bytes of every file as of its
/// last fsync and the entries of every directory, and syncs a file only when its bytes differ
/// (new, rewritten or grown) and a directory only when its entries differ (a file created or
/// removed), files before their directory. Bytes, not modification times: the kernel's file
/// timestamps advance in clock ticks of a few milliseconds, and two rewrites of one slot can
/// fall in one tick.
///
/// Not thread-safe: its owner serialises the calls (the root-state store under its lock).
final class TokenDirectoryFlush {
  /// What a flush synced, for the tests and the logs.
  struct Synced: Equatable {
    var files: [String] = []
    var directories: [String] = []
  }

  /// Files larger than this are synced at every flush without being compared.
  static let largestCompared = 1 << 20

  let directory: String
  /// Each file's bytes when it was last synced.
  private var durableFiles: [String: [UInt8]] = [:]
  /// Each directory's entries when it was last synced.
  private var durableEntries: [String: Set<String>] = [:]

  init(directory: String) {
    self.directory = directory
  }

  /// Syncs, under `directory`, the directories and the `.object` files and files without an
  /// extension (SoftHSM's `generation`) that changed since the last flush; everything at the
  /// first. Walked with readdir(3), not FileManager: this runs at every commit, and Foundation's
  /// path handling cost more CPU than the flush.
  @discardableResult
  func flush() throws -> Synced {
    var directories = [directory]
    var entries = [String: Set<String>]()
    var files = [String]()
    var index = 0
    while index < directories.count {
      let path = directories[index]
      index += 1
      guard let stream = opendir(path) else { continue }
      defer { closedir(stream) }
      var names = Set<String>()
      while let entry = readdir(stream) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in Array(raw.prefix { $0 != 0 }) }
        if name == [0x2E] || name == [0x2E, 0x2E] { continue }  // "." and ".."
        let text = String(decoding: name, as: UTF8.self)
        names.insert(text)
        let full = path + "/" + text
        if entry.pointee.d_type == UInt8(DT_DIR) {
          directories.append(full)
        } else if name.ends(with: Array(".object".utf8)) || !name.contains(0x2E) {
          files.append(full)
        }
      }
      entries[path] = names
    }

    var synced = Synced()
    var seen = Set<String>()
    for path in files {
      seen.insert(path)
      let descriptor = Foundation.open(path, O_RDONLY | O_CLOEXEC)
      guard descriptor >= 0 else { continue }  // removed since the listing: its directory changed
      defer { close(descriptor) }
      let bytes = Self.contents(of: descriptor)
      if let bytes, durableFiles[path] == bytes { continue }
      try Self.sync(descriptor, path)
      durableFiles[path] = bytes
      synced.files.append(path)
    }
    for path in durableFiles.keys where !seen.contains(path) { durableFiles[path] = nil }
    // Deepest first, each after the files it lists, so an entry never becomes durable before
    // its file's bytes.
    for path in directories.reversed() where durableEntries[path] != entries[path] {
      let descriptor = Foundation.open(path, O_RDONLY | O_CLOEXEC | O_DIRECTORY)
      guard descriptor >= 0 else { continue }
      defer { close(descriptor) }
      try Self.sync(descriptor, path)
      synced.directories.append(path)
    }
    durableEntries = entries
    return synced
  }

  private static func sync(_ descriptor: Int32, _ path: String) throws {
    guard fsync(descriptor) == 0 else {
      throw VaultError(.tokenWrite, "fsync of \(path) failed: \(String(cString: strerror(errno)))")
    }
  }

  /// The whole file, or nil when it cannot be read or is too large to compare.
  private static func contents(of descriptor: Int32) -> [UInt8]? {
    var status = stat()
    guard fstat(descriptor, &status) == 0, status.st_size <= largestCompared else { return nil }
    var bytes = [UInt8](repeating: 0, count: Int(status.st_size) + 1)
    var filled = 0
    while true {
      let read = bytes.withUnsafeMutableBytes { buffer in
        pread(descriptor, buffer.baseAddress! + filled, buffer.count - filled, off_t(filled))
      }
      if read < 0 {
        if errno == EINTR { continue }
        return nil
      }
      if read == 0 { break }
      filled += read
      // One byte more than fstat's size was asked for, so a file that grew shows as different.
      if filled == bytes.count { bytes.append(contentsOf: repeatElement(0, count: bytes.count)) }
    }
    bytes.removeSubrange(filled...)
    return bytes
  }
}

extension Array where Element == UInt8 {
  /// Whether the bytes end with `suffix`.
  fileprivate func ends(with suffix: [UInt8]) -> Bool {
    count >= suffix.count && self[(count - suffix.count)...].elementsEqual(suffix)
  }
}
