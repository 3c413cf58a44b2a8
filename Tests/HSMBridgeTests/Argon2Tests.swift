import Custody
import Foundation
import HSMBridge
import Testing

private struct Argon2VectorFile: Decodable {
  struct Vector: Decodable {
    var section: String
    var variant: String
    var version: Int
    var memoryKiB: UInt32
    var passes: UInt32
    var lanes: UInt32
    var tagLength: Int
    var password: String
    var salt: String
    var secret: String
    var associatedData: String
    var tag: String
  }
  var vectors: [Vector]
}

@Suite struct Argon2Tests {
  @Test func rfc9106VectorsPass() throws {
    let url = try #require(Bundle.module.url(forResource: "Vectors/argon2-rfc9106", withExtension: "json"))
    let file = try JSONDecoder().decode(Argon2VectorFile.self, from: Data(contentsOf: url))
    #expect(file.vectors.map(\.variant) == ["argon2d", "argon2i", "argon2id"])
    for vector in file.vectors {
      let variant = try #require(Argon2.Variant(rawValue: vector.variant))
      #expect(vector.version == 0x13)
      let tag = try Argon2.hash(
        variant, password: SecretBytes(try #require(Hex.decode(vector.password))),
        salt: try #require(Hex.decode(vector.salt)),
        parameters: Argon2.Parameters(t: vector.passes, m: vector.memoryKiB, p: vector.lanes),
        secret: SecretBytes(try #require(Hex.decode(vector.secret))),
        associatedData: try #require(Hex.decode(vector.associatedData)), length: vector.tagLength)
      #expect(tag.withUnsafeBytes { Hex.encode($0) } == vector.tag, "RFC 9106 section \(vector.section)")
    }
  }

  @Test func custosParametersAreTheDesignOnes() {
    #expect(Argon2.Parameters.custos == Argon2.Parameters(t: 3, m: 65536, p: 4))
  }

  @Test func refusedParametersNameTheProblem() throws {
    let password = SecretBytes(utf8: "password")
    #expect(throws: HSMBridgeError.self) {
      _ = try Argon2.hash(password: password, salt: [1, 2, 3], parameters: Argon2.Parameters(t: 1, m: 64, p: 1))
    }
    do {
      _ = try Argon2.hash(
        password: password, salt: [UInt8](repeating: 1, count: 16), parameters: Argon2.Parameters(t: 0, m: 64, p: 1))
      Issue.record("t=0 was accepted")
    } catch let error as HSMBridgeError {
      #expect(error.code == .argon2Failed)
      #expect(error.reason.contains("t=0"))
    }
  }
}
