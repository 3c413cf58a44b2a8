#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Secret material (a PIN, a seed, a private key) in one heap buffer that is zeroed when the
/// last reference goes away.
///
/// Secrets never take part in `description`, so they cannot reach a log or an error message by
/// accident; the only way to the bytes is a scoped `withUnsafeBytes` call.
public final class SecretBytes: @unchecked Sendable, CustomStringConvertible,
  CustomDebugStringConvertible
{
  // Immutable after init: written only inside the initialiser, read under `withUnsafeBytes`.
  private let storage: UnsafeMutableRawBufferPointer

  /// A buffer of `count` bytes, filled by `initializer` in place.
  public init(count: Int, initializer: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
    storage = .allocate(byteCount: max(count, 1), alignment: 16)
    storage.initializeMemory(as: UInt8.self, repeating: 0)
    do {
      try initializer(UnsafeMutableRawBufferPointer(rebasing: storage[0..<count]))
    } catch {
      SecretBytes.zero(storage)
      storage.deallocate()
      throw error
    }
    self.count = count
  }

  /// Copies `bytes` into a zeroing buffer. The caller remains responsible for its own copy.
  public convenience init(_ bytes: some Collection<UInt8>) {
    self.init(count: bytes.count) { buffer in
      _ = buffer.initializeMemory(as: UInt8.self, from: bytes)
    }
  }

  /// The UTF-8 bytes of `text` (a typed PIN or password).
  public convenience init(utf8 text: String) {
    self.init(Array(text.utf8))
  }

  deinit {
    SecretBytes.zero(storage)
    storage.deallocate()
  }

  /// Number of secret bytes.
  public let count: Int

  /// Gives `body` a read-only view of the secret for the duration of the call.
  public func withUnsafeBytes<Result>(
    _ body: (UnsafeRawBufferPointer) throws -> Result
  ) rethrows
    -> Result
  {
    try body(UnsafeRawBufferPointer(rebasing: storage[0..<count]))
  }

  /// Constant-time comparison with another secret.
  public func constantTimeEquals(_ other: SecretBytes) -> Bool {
    guard count == other.count else { return false }
    return withUnsafeBytes { mine in
      other.withUnsafeBytes { theirs in
        var difference: UInt8 = 0
        for index in 0..<count { difference |= mine[index] ^ theirs[index] }
        return difference == 0
      }
    }
  }

  public var description: String { "SecretBytes(\(count) bytes, redacted)" }
  public var debugDescription: String { description }

  /// Overwrites `buffer` with zeros in a way the optimiser may not remove.
  public static func zero(_ buffer: UnsafeMutableRawBufferPointer) {
    guard let base = buffer.baseAddress, buffer.count > 0 else { return }
    #if canImport(Glibc)
    explicit_bzero(base, buffer.count)
    #else
    memset_s(base, buffer.count, 0, buffer.count)
    #endif
  }

  /// Zeros the bytes of an array in place (for transient copies a caller owns).
  public static func zero(_ bytes: inout [UInt8]) {
    bytes.withUnsafeMutableBytes { zero($0) }
  }
}
