import Custody
import Testing

@testable import Vault

/// BIP-32 vectors 1-5, SLIP-10 secp256k1 and ed25519 vectors, BIP-86/BIP-84 addresses.
@Suite struct DerivationVectorTests {
  let derivation = KeyDerivation(secp: try! Secp256k1())

  /// BIP-32's "H" notation as a path the strict parser takes.
  func path(_ text: String) throws -> DerivationPath {
    try DerivationPath(parsing: text.replacingOccurrences(of: "H", with: "'"))
  }

  @Test func bip32Vectors1To4() throws {
    var seed: SecretBytes? = nil
    var checked = 0
    for line in try VectorFile.lines("bip32.txt") {
      let fields = line.split(separator: " ").map(String.init)
      switch fields[0] {
      case "seed": seed = SecretBytes(try VectorFile.hex(fields[1]))
      case "chain":
        let key = try derivation.derive(seed: try #require(seed), scheme: .bip32Secp256k1, path: try path(fields[1]))
        let xpub = try derivation.extendedPublicKey(of: key)
        #expect(xpub.text == fields[2], "xpub of \(fields[1])")
        let xprv = try derivation.extendedPrivateKeyText(of: key)
        #expect(xprv.withUnsafeBytes { String(decoding: $0, as: UTF8.self) } == fields[3], "xprv of \(fields[1])")
        // Parsing gives back the same keys.
        guard case .public(let parsedPublic) = try derivation.parseExtendedKey(SecretBytes(utf8: fields[2])) else {
          Issue.record("xpub parsed as private")
          continue
        }
        #expect(parsedPublic == xpub)
        guard case .private(let parsedPrivate, .mainnet) = try derivation.parseExtendedKey(SecretBytes(utf8: fields[3]))
        else {
          Issue.record("xprv parsed as public")
          continue
        }
        #expect(parsedPrivate.privateKey.constantTimeEquals(key.privateKey))
        #expect(try derivation.extendedPublicKey(of: parsedPrivate) == xpub)
        checked += 1
      default: continue
      }
    }
    #expect(checked == 17)
  }

  @Test func bip32PublicDerivationMatchesPrivate() throws {
    // CKDpub of each normal step in vectors 1 and 2 equals the neutered CKDpriv result.
    var seed: SecretBytes? = nil
    var previous: (path: DerivationPath, xpub: ExtendedPublicKey)? = nil
    var checked = 0
    for line in try VectorFile.lines("bip32.txt") {
      let fields = line.split(separator: " ").map(String.init)
      if fields[0] == "seed" {
        seed = SecretBytes(try VectorFile.hex(fields[1]))
        previous = nil
      }
      guard fields[0] == "chain" else { continue }
      let current = try path(fields[1])
      let key = try derivation.derive(seed: try #require(seed), scheme: .bip32Secp256k1, path: current)
      let xpub = try derivation.extendedPublicKey(of: key)
      if let previous, let last = current.components.last, !last.isHardened {
        #expect(try derivation.child(of: previous.xpub, last) == xpub)
        checked += 1
      }
      if let last = current.components.last, last.isHardened, let previous {
        #expect(throws: VaultError.self) { try derivation.child(of: previous.xpub, last) }
      }
      previous = (current, xpub)
    }
    #expect(checked == 6)
  }

  @Test func bip32Vector5InvalidExtendedKeys() throws {
    var checked = 0
    for line in try VectorFile.lines("bip32.txt") where line.hasPrefix("invalid ") {
      let fields = line.split(separator: " ", maxSplits: 2).map(String.init)
      #expect(throws: VaultError.self, "accepted: \(fields[2])") {
        _ = try derivation.parseExtendedKey(SecretBytes(utf8: fields[1]))
      }
      do {
        _ = try derivation.parseExtendedKey(SecretBytes(utf8: fields[1]))
      } catch let error as VaultError {
        #expect(error.code == .invalidExtendedKey)
        // The error never repeats the key text.
        #expect(!error.description.contains(fields[1]))
      }
      checked += 1
    }
    #expect(checked == 16)
  }

  @Test func slip10Vectors() throws {
    var curve = ""
    var seed: SecretBytes? = nil
    var checked = 0
    for line in try VectorFile.lines("slip10.txt") {
      let fields = line.split(separator: " ").map(String.init)
      switch fields[0] {
      case "curve": curve = fields[1]
      case "seed": seed = SecretBytes(try VectorFile.hex(fields[1]))
      case "chain":
        let scheme: DerivationScheme = curve == "ed25519" ? .slip10Ed25519 : .slip10Secp256k1
        let key = try derivation.derive(seed: try #require(seed), scheme: scheme, path: try path(fields[1]))
        let label = "\(curve) \(fields[1])"
        #expect(Hex.encode(key.parentFingerprint) == fields[2], "fingerprint \(label)")
        #expect(key.chainCode.withUnsafeBytes { Hex.encode($0) } == fields[3], "chain code \(label)")
        #expect(key.privateKey.withUnsafeBytes { Hex.encode($0) } == fields[4], "private key \(label)")
        let publicKey = try derivation.publicKey(of: key)
        #expect(Hex.encode(scheme.curve == .ed25519 ? [0] + publicKey : publicKey) == fields[5], "public key \(label)")
        checked += 1
      default: continue
      }
    }
    #expect(checked == 24)
  }

  @Test func ed25519RefusesNormalChildren() throws {
    let seed = SecretBytes(try VectorFile.hex("000102030405060708090a0b0c0d0e0f"))
    #expect(throws: VaultError.self) {
      _ = try derivation.derive(seed: seed, scheme: .slip10Ed25519, path: try DerivationPath(parsing: "m/0'/1"))
    }
    do {
      _ = try derivation.derive(seed: seed, scheme: .slip10Ed25519, path: try DerivationPath(parsing: "m/44'/501'/0"))
    } catch let error as VaultError {
      #expect(error.code == .invalidPath)
      #expect(error.reason.contains("hardened"))
    }
  }

  @Test func signingPathAgreesWithFullDerivation() throws {
    let seed = SecretBytes(
      try VectorFile.hex(
        "fffcf9f6f3f0edeae7e4e1dedbd8d5d2cfccc9c6c3c0bdbab7b4b1aeaba8a5a29f9c999693908d8a8784817e7b7875726f6c696663605d5a5754514e4b484542"
      ))
    for (scheme, text) in [
      (DerivationScheme.bip32Secp256k1, "m/44'/60'/0'/0/7"), (.slip10Secp256k1, "m/0/2147483647'/1"),
      (.slip10Ed25519, "m/44'/501'/3'/0'"),
    ] {
      let path = try DerivationPath(parsing: text)
      let full = try derivation.derive(seed: seed, scheme: scheme, path: path)
      let lean = try derivation.signingKey(seed: seed, scheme: scheme, path: path)
      #expect(lean.privateKey.constantTimeEquals(full.privateKey))
      #expect(lean.publicKey == (try derivation.publicKey(of: full)))
    }
  }

  @Test func bip86AndBip84Addresses() throws {
    let lines = try VectorFile.lines("bip86-bip84.txt")
    let root = lines.first { $0.hasPrefix("root ") }!.split(separator: " ").map(String.init)
    guard case .private(let rootKey, .mainnet) = try derivation.parseExtendedKey(SecretBytes(utf8: root[1])) else {
      Issue.record("root is not an xprv")
      return
    }
    #expect(try derivation.extendedPublicKey(of: rootKey).text == root[2])
    func derive(_ text: String) throws -> ExtendedPrivateKey {
      var key = rootKey
      for index in try DerivationPath(parsing: text).components { key = try derivation.child(of: key, index) }
      return key
    }
    var checked = 0
    for line in lines {
      let f = line.split(separator: " ").map(String.init)
      switch f[0] {
      case "account":
        let key = try derive(f[1])
        #expect(
          try derivation.extendedPrivateKeyText(of: key).withUnsafeBytes { String(decoding: $0, as: UTF8.self) } == f[2]
        )
        #expect(try derivation.extendedPublicKey(of: key).text == f[3])
        checked += 1
      case "p2tr":
        let key = try derive(f[1])
        #expect(
          try derivation.extendedPrivateKeyText(of: key).withUnsafeBytes { String(decoding: $0, as: UTF8.self) } == f[2]
        )
        #expect(try derivation.extendedPublicKey(of: key).text == f[3])
        let publicKey = try derivation.publicKey(of: key)
        #expect(Hex.encode(publicKey.dropFirst()) == f[4], "internal key \(f[1])")
        let outputKey = try derivation.secp.taprootOutputKey(internalKey: Array(publicKey.dropFirst()))
        #expect(Hex.encode(outputKey) == f[5], "output key \(f[1])")
        let address = try ChainAddress.bitcoinP2TR(publicKey: publicKey, network: .mainnet, secp: derivation.secp)
        #expect(address == f[7])
        #expect(Hex.encode(try SegwitAddress(decoding: address, expectedHRP: "bc").scriptPubKey) == f[6])
        checked += 1
      case "p2wpkh":
        let publicKey = try derivation.publicKey(of: try derive(f[1]))
        #expect(Hex.encode(publicKey) == f[2])
        #expect(try ChainAddress.bitcoinP2WPKH(publicKey: publicKey, network: .mainnet, secp: derivation.secp) == f[3])
        checked += 1
      default: continue
      }
    }
    #expect(checked == 7)
  }
}
