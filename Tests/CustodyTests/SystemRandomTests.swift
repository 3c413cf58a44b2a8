import Custody
import Testing

@Suite struct SystemRandomTests {
  @Test(arguments: [0, 1, 7, 8, 9, 16, 33])
  func givesTheCountAskedForAndDifferentBytesEachTime(count: Int) {
    let first = SystemRandom.bytes(count)
    let second = SystemRandom.bytes(count)
    #expect(first.count == count && second.count == count)
    if count >= 8 { #expect(first != second) }
  }

  /// Every byte value turns up, in every position of the eight a generator call gives (a byte
  /// left unfilled or repeated from the previous word would not).
  @Test func everyByteValueInEveryPositionOfAWord() {
    let bytes = SystemRandom.bytes(8 * 16_384)
    for position in 0..<8 {
      var seen = Set<UInt8>()
      for index in stride(from: position, to: bytes.count, by: 8) { seen.insert(bytes[index]) }
      #expect(seen.count == 256, "position \(position)")
    }
  }

  @Test func fillsABufferPastItsLastWholeWord() {
    var buffer = [UInt8](repeating: 0, count: 13)
    var filled = 0
    for _ in 0..<8 {
      buffer.withUnsafeMutableBytes { SystemRandom.fill($0) }
      if buffer[8...].contains(where: { $0 != 0 }) { filled += 1 }
    }
    #expect(filled >= 7)
  }
}
