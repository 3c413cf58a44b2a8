import Testing

@testable import Vault

@Suite struct DerivationPathTests {
  @Test func parsesHardenedAndNormalComponents() throws {
    let path = try DerivationPath(parsing: "m/44'/60'/0'/0/0")
    #expect(path.components == [.hardened(44), .hardened(60), .hardened(0), .normal(0), .normal(0)])
    #expect(path.description == "m/44'/60'/0'/0/0")
    #expect(try DerivationPath(parsing: "m/44h/60h/0h/0/0") == path)
    #expect(try DerivationPath(parsing: "m").components.isEmpty)
    #expect(
      try DerivationPath(parsing: "m/2147483647'/2147483647").components == [
        .hardened(2_147_483_647), .normal(2_147_483_647),
      ])
    #expect(try DerivationPath(parsing: "m/0").components == [.normal(0)])
  }

  @Test(arguments: [
    "", "44'/0'", "M/0", "/0", "m/", "m//0", "m/0/", "m/2147483648", "m/2147483648'", "m/4294967296",
    "m/99999999999999999999", "m/-1", "m/+1", "m/ 1", "m/1 ", "m/1''", "m/1H", "m/h", "m/'", "m/01", "m/0x10",
    "m/1/a", "n/1", "m\\1",
  ])
  func refusesMalformedPaths(text: String) throws {
    let error = #expect(throws: VaultError.self) { _ = try DerivationPath(parsing: text) }
    #expect(error?.code == .invalidPath)
    #expect(error?.reason.contains("'\(text)'") == true)
  }

  @Test func refusesMoreThan255Levels() throws {
    let deep = "m" + String(repeating: "/0", count: 256)
    #expect(throws: VaultError.self) { _ = try DerivationPath(parsing: deep) }
    #expect(try DerivationPath(parsing: "m" + String(repeating: "/0", count: 255)).components.count == 255)
  }
}
