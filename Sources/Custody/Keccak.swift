/// Keccak-256 as Ethereum uses it: the Keccak submission's padding (0x01), not FIPS 202
/// SHA3-256 (0x06). Public data only (addresses, EIP-55 checksums): no zeroing.
public enum Keccak256 {
  private static let rate = 136
  private static let roundConstants: [UInt64] = [
    0x0000_0000_0000_0001, 0x0000_0000_0000_8082, 0x8000_0000_0000_808A, 0x8000_0000_8000_8000,
    0x0000_0000_0000_808B, 0x0000_0000_8000_0001, 0x8000_0000_8000_8081, 0x8000_0000_0000_8009,
    0x0000_0000_0000_008A, 0x0000_0000_0000_0088, 0x0000_0000_8000_8009, 0x0000_0000_8000_000A,
    0x0000_0000_8000_808B, 0x8000_0000_0000_008B, 0x8000_0000_0000_8089, 0x8000_0000_0000_8003,
    0x8000_0000_0000_8002, 0x8000_0000_0000_0080, 0x0000_0000_0000_800A, 0x8000_0000_8000_000A,
    0x8000_0000_8000_8081, 0x8000_0000_0000_8080, 0x0000_0000_8000_0001, 0x8000_0000_8000_8008,
  ]
  // Rotation offsets and the pi permutation, in the order the lanes are visited.
  private static let rotations: [UInt64] = [
    1, 3, 6, 10, 15, 21, 28, 36, 45, 55, 2, 14, 27, 41, 56, 8, 25, 43, 62, 18, 39, 61, 20, 44,
  ]
  private static let piLanes: [Int] = [
    10, 7, 11, 17, 18, 3, 5, 16, 8, 21, 24, 4, 15, 23, 19, 13, 12, 2, 20, 14, 22, 9, 6, 1,
  ]

  /// The 32-byte Keccak-256 digest of `data`.
  public static func hash(_ data: some Collection<UInt8>) -> [UInt8] {
    var state = [UInt64](repeating: 0, count: 25)
    var block = [UInt8]()
    block.reserveCapacity(rate)
    for byte in data {
      block.append(byte)
      if block.count == rate {
        absorb(block, into: &state)
        block.removeAll(keepingCapacity: true)
      }
    }
    // Padding: 0x01 after the message, 0x80 in the last byte of the block (together 0x81).
    block.append(0x01)
    block += [UInt8](repeating: 0, count: rate - block.count)
    block[rate - 1] |= 0x80
    absorb(block, into: &state)
    var digest = [UInt8]()
    digest.reserveCapacity(32)
    for lane in state.prefix(4) {
      for shift in stride(from: 0, to: 64, by: 8) { digest.append(UInt8(truncatingIfNeeded: lane >> UInt64(shift))) }
    }
    return digest
  }

  private static func absorb(_ block: [UInt8], into state: inout [UInt64]) {
    for lane in 0..<(rate / 8) {
      var value: UInt64 = 0
      for byte in 0..<8 { value |= UInt64(block[lane * 8 + byte]) << UInt64(8 * byte) }
      state[lane] ^= value
    }
    permute(&state)
  }

  private static func rotl(_ value: UInt64, _ count: UInt64) -> UInt64 {
    (value << count) | (value >> (64 - count))
  }

  private static func permute(_ a: inout [UInt64]) {
    var c = [UInt64](repeating: 0, count: 5)
    for round in 0..<24 {
      // Theta.
      for x in 0..<5 { c[x] = a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20] }
      for x in 0..<5 {
        let d = c[(x + 4) % 5] ^ rotl(c[(x + 1) % 5], 1)
        for y in stride(from: 0, to: 25, by: 5) { a[y + x] ^= d }
      }
      // Rho and pi.
      var current = a[1]
      for index in 0..<24 {
        let lane = piLanes[index]
        let next = a[lane]
        a[lane] = rotl(current, rotations[index])
        current = next
      }
      // Chi.
      for y in stride(from: 0, to: 25, by: 5) {
        let row = (a[y], a[y + 1], a[y + 2], a[y + 3], a[y + 4])
        a[y] = row.0 ^ (~row.1 & row.2)
        a[y + 1] = row.1 ^ (~row.2 & row.3)
        a[y + 2] = row.2 ^ (~row.3 & row.4)
        a[y + 3] = row.3 ^ (~row.4 & row.0)
        a[y + 4] = row.4 ^ (~row.0 & row.1)
      }
      // Iota.
      a[0] ^= roundConstants[round]
    }
  }
}
