import Crypto
import Custody
import Foundation
import HSMBridge
import TestSupport
import Testing

@testable import Vault

@Suite(.serialized) struct VaultSigningTests {
  static let ethereumPath = "m/44'/60'/0'/0/0"
  static let bitcoinPath = "m/86'/0'/0'/0/0"
  static let solanaPath = "m/44'/501'/0'/0'"

  func location(
    _ sealed: SealedSeed, _ hash: [UInt8], _ scheme: DerivationScheme, _ path: String
  ) throws
    -> WalletKeyLocation
  {
    WalletKeyLocation(sealedSeed: sealed, walletHash: hash, scheme: scheme, path: try DerivationPath(parsing: path))
  }

  @Test func signaturesVerifyUnderTheExportedKeysAndAddresses() throws {
    let fixture = try VaultFixture()
    let hash = VaultFixture.walletHash("wallet")
    let sealed = try fixture.vault.createWallet(walletHash: hash)
    let secp = try Secp256k1()

    // Ethereum: ECDSA with recovery id; the recovered key's address is the vault's address.
    let eth = try location(sealed, hash, .bip32Secp256k1, Self.ethereumPath)
    let digest = Keccak256.hash(Array("a transaction".utf8))
    let ecdsa = try fixture.vault.sign(digest, algorithm: .ecdsaSecp256k1, at: eth)
    let exported = try fixture.vault.publicKey(at: eth)
    #expect(ecdsa.publicKey == exported.publicKey)
    #expect(secp.verifyECDSA(signature: ecdsa.signature, digest: digest, publicKey: exported.publicKey))
    let recovered = try #require(
      secp.recoverECDSA(signature: ecdsa.signature, recoveryID: ecdsa.recoveryID!, digest: digest))
    #expect(try ChainAddress.ethereum(publicKey: recovered, secp: secp) == fixture.vault.address(.ethereum, at: eth))
    // The xpub exported one level up derives the same key publicly (normal last step).
    let parent = try fixture.vault.publicKey(at: try location(sealed, hash, .bip32Secp256k1, "m/44'/60'/0'/0"))
    let derived = try KeyDerivation(secp: secp).child(of: parent.extendedPublicKey!, .normal(0))
    #expect(derived == exported.extendedPublicKey)

    // Bitcoin taproot: the signature verifies under the P2TR address's output key.
    let btc = try location(sealed, hash, .bip32Secp256k1, Self.bitcoinPath)
    let sighash = Hashes.sha256(Array("sighash".utf8))
    let schnorr = try fixture.vault.sign(sighash, algorithm: .schnorrTaproot, at: btc)
    let address = try fixture.vault.address(.bitcoinP2TR(.mainnet), at: btc)
    let program = try SegwitAddress(decoding: address, expectedHRP: "bc").program
    #expect(program == schnorr.publicKey)
    #expect(secp.verifySchnorr(signature: schnorr.signature, message: sighash, publicKey: program))
    // Plain BIP-340 under the untweaked key.
    let plain = try fixture.vault.sign(sighash, algorithm: .schnorrBIP340, at: btc)
    #expect(plain.publicKey == Array(try fixture.vault.publicKey(at: btc).publicKey.dropFirst()))
    #expect(secp.verifySchnorr(signature: plain.signature, message: sighash, publicKey: plain.publicKey))
    // P2WPKH of the same key.
    let segwit = try fixture.vault.address(.bitcoinP2WPKH(.testnet), at: btc)
    #expect(
      try SegwitAddress(decoding: segwit, expectedHRP: "tb").program
        == Hashes.hash160(try fixture.vault.publicKey(at: btc).publicKey))

    // Solana: Ed25519 under the key the address encodes.
    let sol = try location(sealed, hash, .slip10Ed25519, Self.solanaPath)
    let message = Array("a Solana message".utf8)
    let ed = try fixture.vault.sign(message, algorithm: .ed25519, at: sol)
    let solAddress = try fixture.vault.address(.solana, at: sol)
    #expect(Base58.decode(solAddress) == ed.publicKey)
    #expect(
      try Curve25519.Signing.PublicKey(rawRepresentation: ed.publicKey).isValidSignature(ed.signature, for: message))
  }

  @Test func mismatchedRequestsAreRefused() throws {
    let fixture = try VaultFixture()
    let hash = VaultFixture.walletHash("wallet")
    let sealed = try fixture.vault.createWallet(walletHash: hash)
    let eth = try location(sealed, hash, .bip32Secp256k1, Self.ethereumPath)
    let sol = try location(sealed, hash, .slip10Ed25519, Self.solanaPath)
    let cases: [(String, () throws -> Void)] = [
      ("ed25519 on a secp256k1 wallet", { _ = try fixture.vault.sign([1], algorithm: .ed25519, at: eth) }),
      (
        "ECDSA on an ed25519 wallet",
        { _ = try fixture.vault.sign([UInt8](repeating: 1, count: 32), algorithm: .ecdsaSecp256k1, at: sol) }
      ),
      ("ECDSA of a non-digest", { _ = try fixture.vault.sign([1, 2, 3], algorithm: .ecdsaSecp256k1, at: eth) }),
      ("Solana address of a secp256k1 key", { _ = try fixture.vault.address(.solana, at: eth) }),
      ("Ethereum address of an ed25519 key", { _ = try fixture.vault.address(.ethereum, at: sol) }),
      (
        "normal index under ed25519",
        { _ = try fixture.vault.address(.solana, at: try location(sealed, hash, .slip10Ed25519, "m/44'/501'/0'/0")) }
      ),
      (
        "wrong wallet hash",
        {
          _ = try fixture.vault.sign(
            [UInt8](repeating: 1, count: 32), algorithm: .ecdsaSecp256k1,
            at: try location(sealed, VaultFixture.walletHash("other"), .bip32Secp256k1, Self.ethereumPath))
        }
      ),
    ]
    for (name, call) in cases {
      #expect(throws: VaultError.self, "\(name)") { try call() }
    }
  }

  /// The seed and every private key the vault derived must appear nowhere outside it: not in
  /// the partition's token files, not in anything the vault API returned.
  @Test func noSeedOrPrivateKeyBytesInTheTokenStoreOrInReturnedValues() throws {
    let fixture = try VaultFixture()
    var returned = [[UInt8]]()
    var secrets = [(String, [UInt8])]()
    let derivation = KeyDerivation(secp: try Secp256k1())
    for (number, length) in [32, 64].enumerated() {
      let hash = VaultFixture.walletHash("wallet \(number)")
      let sealed = try fixture.vault.createWallet(walletHash: hash, seedLength: length)
      let newHash = VaultFixture.walletHash("wallet \(number) v2")
      let resealed = try fixture.vault.reseal(sealed, from: hash, to: newHash)
      returned += [sealed.bytes, resealed.bytes]
      // The test looks inside through the documented format, as only the vault could.
      let seed = try fixture.sealer.open(resealed, walletHash: newHash)
      secrets.append(("seed \(number)", seed.withUnsafeBytes { Array($0) }))
      for (scheme, path, algorithm, kinds) in [
        (DerivationScheme.bip32Secp256k1, Self.ethereumPath, SignatureAlgorithm.ecdsaSecp256k1, [AddressKind.ethereum]),
        (.bip32Secp256k1, Self.bitcoinPath, .schnorrTaproot, [.bitcoinP2TR(.mainnet), .bitcoinP2WPKH(.mainnet)]),
        (.slip10Ed25519, Self.solanaPath, .ed25519, [.solana]),
      ] {
        let at = try location(resealed, newHash, scheme, path)
        let key = try derivation.derive(seed: seed, scheme: scheme, path: at.path)
        secrets.append(("private key \(path)", key.privateKey.withUnsafeBytes { Array($0) }))
        let exported = try fixture.vault.publicKey(at: at)
        returned += [exported.publicKey, exported.chainCode, exported.fingerprint]
        if let xpub = exported.extendedPublicKey { returned.append(Array(xpub.text.utf8)) }
        let signature = try fixture.vault.sign([UInt8](repeating: 0x5A, count: 32), algorithm: algorithm, at: at)
        returned += [signature.signature, signature.publicKey, signature.der ?? []]
        for kind in kinds { returned.append(Array(try fixture.vault.address(kind, at: at).utf8)) }
      }
    }
    // Errors are returned values too.
    do {
      _ = try fixture.sealer.open(try SealedSeed(bytes: returned[0]), walletHash: VaultFixture.walletHash("x"))
    } catch { returned.append(Array("\(error)".utf8)) }

    // The token store on disk.
    let tokens = fixture.test.device.tokenDirectory(ofPartition: "custody")
    var files = [(String, [UInt8])]()
    let walker = try #require(FileManager.default.enumerator(atPath: tokens))
    for case let relative as String in walker {
      if let data = FileManager.default.contents(atPath: tokens + "/" + relative) {
        files.append((relative, Array(data)))
      }
    }
    #expect(files.count >= 2, "the scan found the token files")
    #expect(secrets.count == 8)
    for (name, secret) in secrets {
      // Any 16-byte window of the secret is enough to count as a leak.
      let probes = stride(from: 0, through: secret.count - 16, by: 8).map { Array(secret[$0..<($0 + 16)]) }
      for probe in probes {
        for (file, bytes) in files { #expect(!contains(bytes, probe), "\(name) found in token file \(file)") }
        for value in returned { #expect(!contains(value, probe), "\(name) found in a returned value") }
        // Nor as hex text (logs, JSON).
        let hex = Array(Hex.encode(probe).utf8)
        for value in returned { #expect(!contains(value, hex), "\(name) found as hex in a returned value") }
      }
    }
  }

  func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
    guard !needle.isEmpty, haystack.count >= needle.count else { return false }
    for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
      if haystack[start..<(start + needle.count)].elementsEqual(needle) { return true }
    }
    return false
  }
}
