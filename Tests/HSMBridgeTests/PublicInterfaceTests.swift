import Foundation
import Testing

/// HSMBridge exposes no C type: CPKCS11 is imported `internal` everywhere (so the compiler
/// refuses a public declaration that mentions one), and no public line names a `CK_` type.
@Suite struct PublicInterfaceTests {
  static let sources: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Sources/HSMBridge")

  func swiftFiles() throws -> [URL] {
    let walker = FileManager.default.enumerator(at: Self.sources, includingPropertiesForKeys: nil)!
    return walker.compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" }
  }

  @Test func cpkcs11IsOnlyImportedInternally() throws {
    let files = try swiftFiles()
    #expect(files.count > 5)
    for file in files {
      let text = try String(contentsOf: file, encoding: .utf8)
      for line in text.split(separator: "\n") where line.contains("import CPKCS11") {
        #expect(
          line.trimmingCharacters(in: .whitespaces) == "internal import CPKCS11", "\(file.lastPathComponent): \(line)")
      }
    }
  }

  @Test func noPublicDeclarationNamesACType() throws {
    for file in try swiftFiles() {
      let text = try String(contentsOf: file, encoding: .utf8)
      for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix("public ") || trimmed.hasPrefix("open ") else { continue }
        // The declaration, not its initial value (which may use CKA_ constants internally).
        let declaration = trimmed.split(separator: "=", maxSplits: 1)[0]
        #expect(
          declaration.firstMatch(of: /\bCK_[A-Z_]+/) == nil,
          "\(file.lastPathComponent):\(number + 1) \(trimmed)")
      }
    }
  }
}
