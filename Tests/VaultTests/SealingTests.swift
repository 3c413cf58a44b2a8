import Custody
import Foundation
import HSMBridge
import TestSupport
import Testing

@testable import Vault

@Suite(.serialized) struct SealingTests {
  @Test func masterKeyHasThePolicyAttributes() throws {
    let fixture = try VaultFixture()
    let key = try SeedSealer.findMasterKey(in: fixture.session)
    let readings = try fixture.session.attributes(
      [
        .token, .private, .sensitive, .extractable, .wrapWithTrusted, .derive, .encrypt, .decrypt, .sign, .wrap,
        .unwrap, .modifiable, .copyable, .destroyable, .value,
      ], of: key)
    #expect(
      readings == [
        .value(.token(true)), .value(.private(true)), .value(.sensitive(true)), .value(.extractable(true)),
        .value(.wrapWithTrusted(true)), .value(.derive(true)), .value(.encrypt(false)), .value(.decrypt(false)),
        .value(.sign(false)), .value(.wrap(false)), .value(.unwrap(false)), .value(.modifiable(false)),
        .value(.copyable(false)), .value(.destroyable(false)), .sensitive,
      ])
    // Not modifiable: its usage flags cannot be switched back on.
    #expect(throws: PKCS11Error.self) { try fixture.session.setAttributes([.encrypt(true)], of: key) }
  }

  @Test func sealsAndOpensAndLeavesNoSessionKeyBehind() throws {
    let fixture = try VaultFixture()
    let before = try fixture.session.findObjects().count
    let hash = VaultFixture.walletHash("wallet 1")
    for length in [32, 48, 64] {
      let seed = try fixture.sealer.generateSeed(length: length)
      let sealed = try fixture.sealer.seal(seed, walletHash: hash)
      #expect(sealed.bytes.count == 33 + length)
      #expect(Array(sealed.bytes.prefix(5)) == Array("CSSD".utf8) + [1])
      #expect(try fixture.sealer.open(sealed, walletHash: hash).constantTimeEquals(seed))
      // The stored blob parses back to the same thing.
      #expect(try SealedSeed(bytes: sealed.bytes) == sealed)
    }
    // Every derived sealing key was destroyed: the session sees as many objects as before.
    #expect(try fixture.session.findObjects().count == before)
    // Two seals of one seed differ (fresh nonce each time).
    let seed = try fixture.sealer.generateSeed(length: 32)
    #expect(try fixture.sealer.seal(seed, walletHash: hash) != fixture.sealer.seal(seed, walletHash: hash))
  }

  @Test func sealingKeyIsSensitiveNonExtractableAndEncryptDecryptOnly() throws {
    let fixture = try VaultFixture()
    try fixture.sealer.withSealingKey(VaultFixture.walletHash("w")) { key in
      let readings = try fixture.session.attributes(
        [.token, .sensitive, .extractable, .encrypt, .decrypt, .derive, .sign, .wrap, .unwrap, .value], of: key)
      #expect(
        readings == [
          .value(.token(false)), .value(.sensitive(true)), .value(.extractable(false)), .value(.encrypt(true)),
          .value(.decrypt(true)), .value(.derive(false)), .value(.sign(false)), .value(.wrap(false)),
          .value(.unwrap(false)), .sensitive,
        ])
    }
  }

  @Test func sealingKeyIsDestroyedEvenOnError() throws {
    let fixture = try VaultFixture()
    let before = try fixture.session.findObjects().count
    struct Boom: Error {}
    #expect(throws: Boom.self) {
      try fixture.sealer.withSealingKey(VaultFixture.walletHash("w")) { _ in throw Boom() }
    }
    let sealed = try fixture.vault.createWallet(walletHash: VaultFixture.walletHash("a"))
    #expect(throws: VaultError.self) { _ = try fixture.sealer.open(sealed, walletHash: VaultFixture.walletHash("b")) }
    #expect(try fixture.session.findObjects().count == before)
  }

  @Test func anotherWalletsHashDoesNotOpen() throws {
    let fixture = try VaultFixture()
    let mine = VaultFixture.walletHash("wallet A")
    let theirs = VaultFixture.walletHash("wallet B")
    let sealed = try fixture.vault.createWallet(walletHash: mine)
    expectDoesNotOpen(fixture, sealed, theirs)
  }

  @Test func resealMovesTheSeedToTheNewWalletData() throws {
    let fixture = try VaultFixture()
    let old = VaultFixture.walletHash("wallet data v1")
    let new = VaultFixture.walletHash("wallet data v2")
    let sealed = try fixture.vault.createWallet(walletHash: old, seedLength: 64)
    let seed = try fixture.sealer.open(sealed, walletHash: old)
    let resealed = try fixture.vault.reseal(sealed, from: old, to: new)
    #expect(try fixture.sealer.open(resealed, walletHash: new).constantTimeEquals(seed))
    // After the change of wallet data, the new blob does not open under the old hash...
    expectDoesNotOpen(fixture, resealed, old)
    // ...and a reseal from the wrong old hash is refused without producing anything.
    #expect(throws: VaultError.self) { _ = try fixture.vault.reseal(resealed, from: old, to: new) }
    // The same key comes out before and after the reseal.
    let path = try DerivationPath(parsing: "m/44'/60'/0'/0/0")
    let before = try fixture.vault.publicKey(
      at: .init(sealedSeed: sealed, walletHash: old, scheme: .bip32Secp256k1, path: path))
    let after = try fixture.vault.publicKey(
      at: .init(sealedSeed: resealed, walletHash: new, scheme: .bip32Secp256k1, path: path))
    #expect(before == after)
  }

  @Test func everyFlippedByteIsRefusedClearly() throws {
    let fixture = try VaultFixture()
    let hash = VaultFixture.walletHash("wallet")
    let sealed = try fixture.vault.createWallet(walletHash: hash)
    for index in sealed.bytes.indices {
      var bytes = sealed.bytes
      bytes[index] ^= 0x01
      do {
        let tampered = try SealedSeed(bytes: bytes)
        _ = try fixture.sealer.open(tampered, walletHash: hash)
        Issue.record("a blob with byte \(index) flipped opened")
      } catch let error as VaultError {
        switch index {
        case 0..<4:
          #expect(error.code == .sealedSeedMalformed && error.reason.contains("CSSD"), "byte \(index)")
        case 4:
          #expect(error.code == .sealedSeedMalformed && error.reason.contains("version"), "byte \(index)")
        default:
          #expect(error.code == .sealedSeedDoesNotOpen, "byte \(index)")
          #expect(error.pkcs11 == PKCS11Error(code: .generalError, function: "C_Decrypt"))
        }
      }
    }
    // A padded blob has a valid layout (a longer seed) but does not open.
    #expect(throws: VaultError.self) {
      _ = try fixture.sealer.open(try SealedSeed(bytes: sealed.bytes + [0]), walletHash: hash)
    }
    // Truncated blobs are refused before the token sees them.
    for bytes in [Array(sealed.bytes.dropLast()), [], Array(sealed.bytes.prefix(5))] {
      let error = #expect(throws: VaultError.self) { _ = try SealedSeed(bytes: bytes) }
      #expect(error?.code == .sealedSeedMalformed)
    }
    // The original still opens: nothing was changed by the failures.
    #expect(try fixture.sealer.open(sealed, walletHash: hash).count == 32)
  }

  @Test func badArgumentsAreRefused() throws {
    let fixture = try VaultFixture()
    for length in [0, 16, 31, 65] {
      #expect(throws: VaultError.self) {
        _ = try fixture.vault.createWallet(walletHash: VaultFixture.walletHash("w"), seedLength: length)
      }
    }
    for hash in [[], [UInt8](repeating: 1, count: 31), [UInt8](repeating: 1, count: 33)] {
      #expect(throws: VaultError.self) { _ = try fixture.vault.createWallet(walletHash: hash) }
    }
  }

  @Test func aTokenWithoutMasterKeyIsRefused() throws {
    let test = try TestDevice(partitions: ["custody"], profile: "custody")
    let session = try test.userSession("custody")
    do {
      _ = try WalletVault(session: session, logger: testLogger)
      Issue.record("a vault opened without custos.master")
    } catch let error as VaultError {
      #expect(error.code == .masterKeyMissing)
    }
  }

  func expectDoesNotOpen(_ fixture: VaultFixture, _ sealed: SealedSeed, _ hash: [UInt8]) {
    do {
      _ = try fixture.sealer.open(sealed, walletHash: hash)
      Issue.record("a sealed seed opened under the wrong wallet hash")
    } catch let error as VaultError {
      #expect(error.code == .sealedSeedDoesNotOpen)
      #expect(error.reason.contains("does not open"))
      #expect(error.pkcs11?.function == "C_Decrypt")
      #expect(error.description.contains("CKR_GENERAL_ERROR"))
    } catch {
      Issue.record("unexpected error \(error)")
    }
  }
}
