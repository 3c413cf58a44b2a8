import Custody
import Foundation
import TestSupport
import Testing

/// One row of Vectors/cbor-deterministic.json.
struct CBORVector: Decodable, CustomTestStringConvertible {
  var source: String
  var hex: String
  var diagnostic: String?
  var refused: String?
  var offset: Int?
  var note: String?

  var testDescription: String { "\(hex.prefix(40)) \(note ?? diagnostic ?? "")" }

  static let all: [CBORVector] = {
    struct File: Decodable { var vectors: [CBORVector] }
    let url = Bundle.module.url(forResource: "cbor-deterministic", withExtension: "json", subdirectory: "Vectors")!
    return try! JSONDecoder().decode(File.self, from: Data(contentsOf: url)).vectors
  }()
}

@Suite struct CBORTests {
  @Test func theVectorFileHoldsAllOfAppendixA() {
    #expect(CBORVector.all.filter { $0.source == "RFC 8949 Appendix A" }.count == 81)
    #expect(CBORVector.all.contains { $0.refused != nil } && CBORVector.all.contains { $0.diagnostic != nil })
  }

  @Test(arguments: CBORVector.all)
  func decodesExactlyTheDeterministicEncodings(vector: CBORVector) throws {
    let bytes = try #require(Hex.decode(vector.hex))
    if let diagnostic = vector.diagnostic {
      let item = try CBORDecoder().decode(bytes)
      #expect(item.diagnostic == diagnostic)
      #expect(try item.encoded() == bytes, "re-encoding must give the same bytes")
    } else {
      let error = #expect(throws: CBORError.self) { try CBORDecoder().decode(bytes) }
      #expect(error?.code.name == vector.refused)
      #expect(error?.offset == vector.offset)
      #expect(error?.description.contains("at byte \(vector.offset ?? -1)") == true)
    }
  }

  @Test func theEncoderSortsMapKeysBytewiseWhateverOrderTheyCameIn() throws {
    let entries: [CBOR.Entry] = [
      .init(.text("b"), .unsigned(1)), .init(.array([]), .unsigned(2)), .init(.unsigned(24), .unsigned(3)),
      .init(.integer(-1), .unsigned(4)), .init(.unsigned(10), .unsigned(5)),
    ]
    // 10, 24, -1, "b", []: text (0x61) sorts before arrays (0x80).
    let expected = Hex.decode("a50a051818032004616201" + "8002")!
    #expect(try CBOR.map(entries).encoded() == expected)
    #expect(try CBOR.map(entries.reversed()).encoded() == expected)
    #expect(CBOR.map(entries) == CBOR.map(entries.reversed()))
    #expect(try CBORDecoder().decode(expected) == CBOR.map(entries))
  }

  @Test func theEncoderRefusesWhatHasNoDeterministicEncoding() {
    let duplicate = #expect(throws: CBORError.self) {
      try CBOR.array([.map([.init(.unsigned(1), .null), .init(.unsigned(1), .bool(true))])]).encoded()
    }
    #expect(duplicate?.code == .duplicateMapKey)
    let bignum = #expect(throws: CBORError.self) { try CBOR.tagged(2, .bytes([0, 1])).encoded() }
    #expect(bignum?.code == .bignumNotPreferred)
  }

  @Test func textComparesByItsBytesSoTwoEncodingsAreNeverEqual() throws {
    let composed = CBOR.text("\u{E9}")  // é as one code point
    let decomposed = CBOR.text("e\u{301}")  // e + combining acute
    #expect(composed != decomposed)
    #expect(try composed.encoded() != decomposed.encoded())
    // As map keys they are two keys, in byte order.
    let map = CBOR.map([.init(composed, .unsigned(1)), .init(decomposed, .unsigned(2))])
    #expect(try CBORDecoder().decode(try map.encoded()) == map)
  }

  @Test func inputBeyondTheSizeLimitIsRefusedBeforeDecoding() {
    let decoder = CBORDecoder(limits: .init(maxDepth: 4, maxLength: 16, maxInputSize: 8))
    let error = #expect(throws: CBORError.self) { try decoder.decode([UInt8](repeating: 0, count: 9)) }
    #expect(error?.code == .inputTooLarge)
    #expect(throws: Never.self) { try decoder.decode(Hex.decode("83010203")!) }
  }

  @Test func randomValuesRoundTripAndEveryByteFlipIsCaughtOrCanonical() throws {
    var random = SplitMix64(seed: 0xC0B0)
    for _ in 0..<300 {
      let value = Self.randomValue(depth: 0, using: &random)
      let bytes = try value.encoded()
      let decoded = try CBORDecoder().decode(bytes)
      #expect(decoded == value)
      #expect(try decoded.encoded() == bytes)
      // Any change of one byte either is refused or decodes to a value whose encoding is
      // exactly the changed bytes: no second encoding of anything slips through.
      var mutated = bytes
      let position = Int.random(in: 0..<bytes.count, using: &random)
      mutated[position] ^= UInt8.random(in: 1...255, using: &random)
      if let other = try? CBORDecoder().decode(mutated) {
        #expect(try other.encoded() == mutated)
      }
    }
  }

  static func randomValue(depth: Int, using random: inout SplitMix64) -> CBOR {
    let kinds = depth >= 4 ? 6 : 9
    switch Int.random(in: 0..<kinds, using: &random) {
    case 0: return .unsigned(random.next() >> UInt64.random(in: 0...63, using: &random))
    case 1: return .negative(random.next() >> UInt64.random(in: 0...63, using: &random))
    case 2:
      return .bytes((0..<Int.random(in: 0...40, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) })
    case 3:
      let scalars = ["a", "Z", "é", "水", "𐅑", "\"", "\\", " "]
      return .text(
        (0..<Int.random(in: 0...12, using: &random)).map { _ in scalars.randomElement(using: &random)! }.joined())
    case 4: return [.bool(true), .bool(false), .null].randomElement(using: &random)!
    case 5: return .integer(Int64.random(in: -1000...1000, using: &random))
    case 6:
      return .array(
        (0..<Int.random(in: 0...5, using: &random)).map { _ in randomValue(depth: depth + 1, using: &random) })
    case 7:
      var entries = [CBOR.Entry]()
      var keys = Set<CBOR>()
      for _ in 0..<Int.random(in: 0...5, using: &random) {
        let key = randomValue(depth: 4, using: &random)
        if keys.insert(key).inserted { entries.append(.init(key, randomValue(depth: depth + 1, using: &random))) }
      }
      return .map(entries)
    default:
      return .tagged(UInt64.random(in: 4...100_000, using: &random), randomValue(depth: depth + 1, using: &random))
    }
  }
}

@Suite struct UTF8ValidationTests {
  /// The decoder's own UTF-8 check agrees with the standard library's on every byte and on
  /// sweeps of 2-, 3- and 4-byte sequences over the boundaries of Unicode table 3-7.
  @Test func agreesWithTheStandardLibrary() throws {
    var inputs = [[UInt8]]()
    let interesting: [UInt8] = [
      0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0,
      0xF1, 0xF3, 0xF4, 0xF5, 0xFF,
    ]
    for a in 0...255 {
      inputs.append([UInt8(a)])
      for b in interesting { inputs.append([UInt8(a), b]) }
    }
    for a in interesting {
      for b in interesting {
        for c in interesting { inputs.append([a, b, c]) }
      }
    }
    for a: UInt8 in [0xF0, 0xF1, 0xF4, 0xF5, 0xED, 0xE0] {
      for b in interesting {
        for c: UInt8 in [0x7F, 0x80, 0xBF, 0xC0] {
          for d: UInt8 in [0x00, 0x80, 0xBF] { inputs.append([a, b, c, d]) }
        }
      }
    }
    for input in inputs {
      let head: [UInt8] = input.count < 24 ? [0x60 | UInt8(input.count)] : [0x78, UInt8(input.count)]
      let expected = String(validating: input, as: UTF8.self) != nil
      let decoded = try? CBORDecoder().decode(head + input)
      #expect((decoded != nil) == expected, "\(Hex.encode(input))")
      if let decoded { #expect(decoded == .text(String(validating: input, as: UTF8.self)!)) }
    }
  }
}
