import Custody
import Foundation
import Testing

/// Reads a vector file from the test bundle's Vectors folder: its lines without comments.
enum VectorFile {
  static func lines(_ name: String) throws -> [String] {
    let url = try #require(
      Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Vectors"),
      "vector file \(name) is missing from the test bundle")
    let text = try String(contentsOf: url, encoding: .utf8)
    return text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init).filter { !$0.hasPrefix("#") }
  }

  /// Bytes of hex text, failing the test on bad hex.
  static func hex(_ text: some StringProtocol) throws -> [UInt8] {
    try #require(Hex.decode(text), "bad hex in a vector file: \(text)")
  }
}
