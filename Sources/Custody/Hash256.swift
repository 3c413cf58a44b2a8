import Crypto

/// A 32-byte SHA-256 value: a wallet hash, a Merkle node, a root.
///
/// Held as four machine words (the bytes in order, not a number) so that trees of millions of
/// nodes sit in flat arrays without a heap object per node, and comparing two is four word
/// compares.
public struct Hash256: Hashable, Sendable, CustomStringConvertible {
  // The 32 bytes in memory order.
  private var w0: UInt64
  private var w1: UInt64
  private var w2: UInt64
  private var w3: UInt64

  /// 32 zero bytes: the empty leaf (DESIGN.md section 6).
  public static let zero = Hash256(w0: 0, w1: 0, w2: 0, w3: 0)

  private init(w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64) {
    self.w0 = w0
    self.w1 = w1
    self.w2 = w2
    self.w3 = w3
  }

  /// The value of exactly 32 bytes; nil for any other length.
  public init?(_ bytes: some Collection<UInt8>) {
    guard bytes.count == 32 else { return nil }
    // Contiguous bytes (arrays, Data, buffers) in one load, not 32 generic element reads.
    if let value = bytes.withContiguousStorageIfAvailable({
      UnsafeRawBufferPointer($0).loadUnaligned(as: Hash256.self)
    }) {
      self = value
      return
    }
    var value = Hash256.zero
    withUnsafeMutableBytes(of: &value) { raw in
      for (index, byte) in bytes.enumerated() { raw[index] = byte }
    }
    self = value
  }

  /// The value written as 64 hex digits; nil otherwise.
  public init?(hex: some StringProtocol) {
    guard let bytes = Hex.decode(hex), let value = Hash256(bytes) else { return nil }
    self = value
  }

  @inline(__always)
  init(_ digest: SHA256.Digest) {
    self = digest.withUnsafeBytes { $0.loadUnaligned(as: Hash256.self) }
  }

  /// The 32 bytes.
  public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

  /// Gives `body` the 32 bytes without copying them to the heap.
  public func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
    var copy = self
    return try Swift.withUnsafeBytes(of: &copy, body)
  }

  /// Lower-case hex, 64 digits.
  public var hex: String { Hex.encode(bytes) }

  public var description: String { hex }

  /// Whether this is the empty leaf.
  public var isZero: Bool { self == .zero }

  /// SHA-256 of `bytes`.
  public static func sha256(_ bytes: some Collection<UInt8>) -> Hash256 {
    if let hash = bytes.withContiguousStorageIfAvailable({ sha256(UnsafeRawBufferPointer($0)) }) {
      return hash
    }
    return Array(bytes).withUnsafeBytes { sha256($0) }
  }

  /// SHA-256 of the bytes in `buffer`.
  @inline(__always)
  public static func sha256(_ buffer: UnsafeRawBufferPointer) -> Hash256 {
    var hasher = SHA256()
    hasher.update(bufferPointer: buffer)
    return Hash256(hasher.finalize())
  }

  /// A Merkle parent: SHA-256(left || right), 64 bytes in one call.
  @inline(__always)
  public static func parent(_ left: Hash256, _ right: Hash256) -> Hash256 {
    let pair = (left, right)
    return Swift.withUnsafeBytes(of: pair) { sha256($0) }
  }
}
