import Custody
import HSMBridge
import TestSupport
import Testing

@testable import Vault

/// A throw-away device with a custody partition (its real allow-list), `custos.master`
/// generated with the policy attributes, and a vault over a user session.
struct VaultFixture {
  let test: TestDevice
  let session: Session
  let vault: WalletVault

  init() throws {
    test = try TestDevice(partitions: ["custody"], profile: "custody")
    session = try test.userSession("custody")
    _ = try SeedSealer.generateMasterKey(in: session)
    vault = try WalletVault(session: session, logger: testLogger)
  }

  /// The same sealer the vault uses, for tests that look inside.
  var sealer: SeedSealer { vault.sealer }

  static func walletHash(_ label: String) -> [UInt8] { Hashes.sha256(Array(label.utf8)) }
}
