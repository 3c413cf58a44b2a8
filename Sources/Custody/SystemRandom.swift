/// Bytes from the system's random number generator (`getrandom(2)` on Linux), for ids, nonces
/// and keys made where no token exists (a token's RNG is preferred wherever there is one).
///
/// Eight bytes per call to the generator: filling an array one `UInt8.random` at a time made one
/// system call per byte (a request id, sixteen).
public enum SystemRandom {
  /// `count` random bytes.
  public static func bytes(_ count: Int) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
      fill(UnsafeMutableRawBufferPointer(buffer))
      initialized = count
    }
  }

  /// Fills `buffer` with random bytes.
  public static func fill(_ buffer: UnsafeMutableRawBufferPointer) {
    var generator = SystemRandomNumberGenerator()
    var offset = 0
    while offset < buffer.count {
      let word = generator.next().littleEndian
      let take = min(8, buffer.count - offset)
      withUnsafeBytes(of: word) { source in
        buffer.baseAddress!.advanced(by: offset).copyMemory(from: source.baseAddress!, byteCount: take)
      }
      offset += take
    }
  }
}
