import Crypto
import Custody

/// The curve a wallet's keys live on.
public enum Curve: String, Sendable, Hashable, CaseIterable {
  case secp256k1, ed25519
}

/// How a wallet's keys are derived from its seed.
public enum DerivationScheme: String, Sendable, Hashable, CaseIterable {
  /// BIP-32 over secp256k1: hardened and normal children; an invalid child is an error (the
  /// caller moves to the next index, as BIP-32 says).
  case bip32Secp256k1 = "bip32-secp256k1"
  /// SLIP-10 over secp256k1: as BIP-32, but an invalid key is re-derived as SLIP-10 says.
  case slip10Secp256k1 = "slip10-secp256k1"
  /// SLIP-10 over Ed25519: hardened children only.
  case slip10Ed25519 = "slip10-ed25519"

  public var curve: Curve { self == .slip10Ed25519 ? .ed25519 : .secp256k1 }

  /// The HMAC key of the master key derivation.
  var seedKey: [UInt8] { Array((curve == .ed25519 ? "ed25519 seed" : "Bitcoin seed").utf8) }
}

/// Which version bytes an extended key carries.
public enum ExtendedKeyNetwork: String, Sendable, Hashable, CaseIterable {
  /// xprv / xpub.
  case mainnet
  /// tprv / tpub.
  case testnet

  var privateVersion: UInt32 { self == .mainnet ? 0x0488_ADE4 : 0x0435_8394 }
  var publicVersion: UInt32 { self == .mainnet ? 0x0488_B21E : 0x0435_87CF }
}

/// A private node of the key tree: a private key and chain code in zeroing buffers, with the
/// position BIP-32 serialises. It never prints its secrets.
public final class ExtendedPrivateKey: @unchecked Sendable, CustomStringConvertible {
  public let scheme: DerivationScheme
  /// The 32-byte private key (secp256k1 scalar, or Ed25519 seed).
  public let privateKey: SecretBytes
  /// The 32-byte chain code.
  public let chainCode: SecretBytes
  public let depth: UInt8
  /// The first four bytes of HASH160 of the parent's public key; zero for a master key.
  public let parentFingerprint: [UInt8]
  /// The index this key has under its parent; zero for a master key.
  public let childIndex: ChildIndex

  init(
    scheme: DerivationScheme, privateKey: SecretBytes, chainCode: SecretBytes, depth: UInt8,
    parentFingerprint: [UInt8], childIndex: ChildIndex
  ) {
    self.scheme = scheme
    self.privateKey = privateKey
    self.chainCode = chainCode
    self.depth = depth
    self.parentFingerprint = parentFingerprint
    self.childIndex = childIndex
  }

  public var description: String {
    "ExtendedPrivateKey(\(scheme.rawValue), depth \(depth), index \(childIndex), redacted)"
  }
}

/// A public node of a secp256k1 key tree (what an xpub carries). Public data.
public struct ExtendedPublicKey: Hashable, Sendable, CustomStringConvertible {
  public let network: ExtendedKeyNetwork
  public let depth: UInt8
  public let parentFingerprint: [UInt8]
  public let childIndex: ChildIndex
  public let chainCode: [UInt8]
  /// The 33-byte compressed public key.
  public let publicKey: [UInt8]

  /// The Base58Check text (xpub... or tpub...).
  public var text: String {
    Base58.encodeCheck(
      serializeExtendedKey(
        version: network.publicVersion, depth: depth, parentFingerprint: parentFingerprint,
        childIndex: childIndex, chainCode: chainCode, keyData: publicKey))
  }

  /// The first four bytes of HASH160 of the public key.
  public var fingerprint: [UInt8] { Array(Hashes.hash160(publicKey).prefix(4)) }

  public var description: String { text }
}

/// What an extended key's text turned out to be.
public enum ParsedExtendedKey: Sendable {
  case `private`(ExtendedPrivateKey, ExtendedKeyNetwork)
  case `public`(ExtendedPublicKey)
}

func serializeExtendedKey(
  version: UInt32, depth: UInt8, parentFingerprint: [UInt8], childIndex: ChildIndex, chainCode: [UInt8],
  keyData: [UInt8]
) -> [UInt8] {
  bigEndian(version) + [depth] + parentFingerprint + bigEndian(childIndex.rawValue) + chainCode + keyData
}

func bigEndian(_ value: UInt32) -> [UInt8] {
  [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
}

/// BIP-32 and SLIP-10 derivation. Private keys and chain codes stay in zeroing buffers; the
/// HMAC inputs that hold a private key are built in zeroing buffers too.
public struct KeyDerivation: Sendable {
  public let secp: Secp256k1

  public init(secp: Secp256k1) { self.secp = secp }

  // MARK: Private derivation

  /// The master key of `seed` (16 to 64 bytes) under `scheme`.
  public func master(seed: SecretBytes, scheme: DerivationScheme) throws -> ExtendedPrivateKey {
    guard (16...64).contains(seed.count) else {
      throw VaultError(.invalidArgument, "a seed is 16 to 64 bytes, not \(seed.count)")
    }
    let (key, chain) = try masterNode(seed: seed, scheme: scheme)
    return ExtendedPrivateKey(
      scheme: scheme, privateKey: key, chainCode: chain, depth: 0, parentFingerprint: [0, 0, 0, 0],
      childIndex: ChildIndex(rawValue: 0))
  }

  /// The child of `parent` at `index`.
  public func child(of parent: ExtendedPrivateKey, _ index: ChildIndex) throws -> ExtendedPrivateKey {
    guard parent.depth < 255 else { throw VaultError(.invalidPath, "a key at depth 255 has no children") }
    let parentPublic = try publicKey(of: parent)
    let (key, chain) = try childNode(
      key: parent.privateKey, chainCode: parent.chainCode, index: index, scheme: parent.scheme,
      parentPublic: parentPublic)
    return ExtendedPrivateKey(
      scheme: parent.scheme, privateKey: key, chainCode: chain, depth: parent.depth + 1,
      parentFingerprint: fingerprint(ofPublicKey: parentPublic, curve: parent.scheme.curve), childIndex: index)
  }

  /// The key at `path` below the master key of `seed`.
  public func derive(seed: SecretBytes, scheme: DerivationScheme, path: DerivationPath) throws -> ExtendedPrivateKey {
    var key = try master(seed: seed, scheme: scheme)
    for index in path.components { key = try child(of: key, index) }
    return key
  }

  /// The private key at `path` and its public key, without the fingerprints and public keys
  /// of the levels in between that only serialisation needs: the signing path.
  func signingKey(
    seed: SecretBytes, scheme: DerivationScheme, path: DerivationPath
  ) throws -> (
    privateKey: SecretBytes, publicKey: [UInt8]
  ) {
    guard (16...64).contains(seed.count) else {
      throw VaultError(.invalidArgument, "a seed is 16 to 64 bytes, not \(seed.count)")
    }
    var (key, chain) = try masterNode(seed: seed, scheme: scheme)
    for index in path.components {
      var parentPublic: [UInt8]? = nil
      if !index.isHardened && scheme.curve == .secp256k1 {
        parentPublic = try key.withUnsafeBytes { try secp.publicKey(secret: $0) }
      }
      (key, chain) = try childNode(key: key, chainCode: chain, index: index, scheme: scheme, parentPublic: parentPublic)
    }
    return (key, try publicKey(secret: key, curve: scheme.curve))
  }

  /// The public key of `key`: 33-byte compressed for secp256k1, 32 bytes for Ed25519.
  public func publicKey(of key: ExtendedPrivateKey) throws -> [UInt8] {
    try publicKey(secret: key.privateKey, curve: key.scheme.curve)
  }

  /// The first four bytes of HASH160 of the key's public key (for Ed25519, of 0x00 || key, as
  /// SLIP-10's vectors compute it).
  public func fingerprint(of key: ExtendedPrivateKey) throws -> [UInt8] {
    fingerprint(ofPublicKey: try publicKey(of: key), curve: key.scheme.curve)
  }

  func publicKey(secret: SecretBytes, curve: Curve) throws -> [UInt8] {
    switch curve {
    case .secp256k1:
      return try secret.withUnsafeBytes { try secp.publicKey(secret: $0) }
    case .ed25519:
      return try secret.withUnsafeBytes { raw in
        Array(try Curve25519.Signing.PrivateKey(rawRepresentation: raw).publicKey.rawRepresentation)
      }
    }
  }

  func fingerprint(ofPublicKey publicKey: [UInt8], curve: Curve) -> [UInt8] {
    Array(Hashes.hash160(curve == .ed25519 ? [0] + publicKey : publicKey).prefix(4))
  }

  private func masterNode(seed: SecretBytes, scheme: DerivationScheme) throws -> (SecretBytes, SecretBytes) {
    var output = scheme.seedKey.withUnsafeBytes { hmacKey in
      seed.withUnsafeBytes { Hashes.hmacSHA512(key: hmacKey, data: $0) }
    }
    while scheme.curve == .secp256k1
      && !output.withUnsafeBytes({ secp.isValidSecretKey(UnsafeRawBufferPointer(rebasing: $0[0..<32])) })
    {
      guard scheme == .slip10Secp256k1 else {
        throw VaultError(.invalidChildKey, "this seed gives an invalid BIP-32 master key; use another seed")
      }
      // SLIP-10: I = HMAC-SHA512(key, I) until the key is valid.
      output = scheme.seedKey.withUnsafeBytes { hmacKey in
        output.withUnsafeBytes { Hashes.hmacSHA512(key: hmacKey, data: $0) }
      }
    }
    return split(output)
  }

  private func childNode(
    key: SecretBytes, chainCode: SecretBytes, index: ChildIndex, scheme: DerivationScheme, parentPublic: [UInt8]?
  ) throws -> (SecretBytes, SecretBytes) {
    if scheme.curve == .ed25519 && !index.isHardened {
      throw VaultError(
        .invalidPath, "SLIP-10 Ed25519 derives hardened children only; index \(index) is not hardened")
    }
    let indexBytes = bigEndian(index.rawValue)
    // Data = 0x00 || k || ser32(i) (hardened) or serP(K) || ser32(i) (normal): 37 bytes.
    let data = try SecretBytes(count: 37) { buffer in
      if index.isHardened {
        buffer[0] = 0
        key.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: buffer[1..<33]).copyMemory(from: $0) }
      } else {
        guard let parentPublic, parentPublic.count == 33 else {
          throw VaultError(.invalidArgument, "a normal child needs the parent's compressed public key")
        }
        UnsafeMutableRawBufferPointer(rebasing: buffer[0..<33]).copyBytes(from: parentPublic)
      }
      UnsafeMutableRawBufferPointer(rebasing: buffer[33..<37]).copyBytes(from: indexBytes)
    }
    var output = chainCode.withUnsafeBytes { chain in data.withUnsafeBytes { Hashes.hmacSHA512(key: chain, data: $0) } }
    if scheme.curve == .ed25519 { return split(output) }
    while true {
      // child = parse256(IL) + k mod n; invalid when IL >= n or the sum is zero.
      var valid = false
      let child = SecretBytes(count: 32) { buffer in
        key.withUnsafeBytes { buffer.copyMemory(from: $0) }
        valid = output.withUnsafeBytes { raw in
          secp.addTweak(UnsafeRawBufferPointer(rebasing: raw[0..<32]), toSecret: buffer)
        }
      }
      if valid {
        return (child, output.copying(32..<64))
      }
      guard scheme == .slip10Secp256k1 else {
        throw VaultError(.invalidChildKey, "index \(index) gives an invalid BIP-32 child key; use the next index")
      }
      // SLIP-10: I = HMAC-SHA512(c, 0x01 || IR || ser32(i)).
      let retry = SecretBytes(count: 37) { buffer in
        buffer[0] = 1
        output.withUnsafeBytes {
          UnsafeMutableRawBufferPointer(rebasing: buffer[1..<33]).copyMemory(
            from: UnsafeRawBufferPointer(rebasing: $0[32..<64]))
        }
        UnsafeMutableRawBufferPointer(rebasing: buffer[33..<37]).copyBytes(from: indexBytes)
      }
      output = chainCode.withUnsafeBytes { chain in retry.withUnsafeBytes { Hashes.hmacSHA512(key: chain, data: $0) } }
    }
  }

  private func split(_ output: SecretBytes) -> (SecretBytes, SecretBytes) {
    (output.copying(0..<32), output.copying(32..<64))
  }

  // MARK: Public derivation and serialisation

  private func requireSecp256k1(_ key: ExtendedPrivateKey, _ what: String) throws {
    guard key.scheme.curve == .secp256k1 else {
      throw VaultError(.unsupported, "\(what) exist for secp256k1 only, not \(key.scheme.rawValue)")
    }
  }

  /// The extended public key of a secp256k1 key (for export: an xpub lets a watcher derive
  /// the normal children's addresses).
  public func extendedPublicKey(
    of key: ExtendedPrivateKey, network: ExtendedKeyNetwork = .mainnet
  ) throws
    -> ExtendedPublicKey
  {
    try requireSecp256k1(key, "extended public keys")
    return ExtendedPublicKey(
      network: network, depth: key.depth, parentFingerprint: key.parentFingerprint, childIndex: key.childIndex,
      chainCode: key.chainCode.withUnsafeBytes { Array($0) }, publicKey: try publicKey(of: key))
  }

  /// The normal child of an extended public key (CKDpub); hardened children need the private key.
  public func child(of parent: ExtendedPublicKey, _ index: ChildIndex) throws -> ExtendedPublicKey {
    guard !index.isHardened else {
      throw VaultError(.invalidPath, "a hardened child (\(index)) cannot be derived from a public key")
    }
    guard parent.depth < 255 else { throw VaultError(.invalidPath, "a key at depth 255 has no children") }
    let data = parent.publicKey + bigEndian(index.rawValue)
    let output = parent.chainCode.withUnsafeBytes { chain in
      data.withUnsafeBytes { Hashes.hmacSHA512(key: chain, data: $0) }
    }
    let childKey = try output.withUnsafeBytes { raw in
      try secp.addTweak(UnsafeRawBufferPointer(rebasing: raw[0..<32]), toPublicKey: parent.publicKey)
    }
    guard let childKey else {
      throw VaultError(.invalidChildKey, "index \(index) gives an invalid BIP-32 child key; use the next index")
    }
    return ExtendedPublicKey(
      network: parent.network, depth: parent.depth + 1, parentFingerprint: parent.fingerprint, childIndex: index,
      chainCode: output.withUnsafeBytes { Array($0[32..<64]) }, publicKey: childKey)
  }

  /// The xprv/tprv text of a secp256k1 key, in a zeroing buffer (it is a secret).
  public func extendedPrivateKeyText(
    of key: ExtendedPrivateKey, network: ExtendedKeyNetwork = .mainnet
  ) throws
    -> SecretBytes
  {
    try requireSecp256k1(key, "extended private keys")
    var keyData = [0] + key.privateKey.withUnsafeBytes { Array($0) }
    var chain = key.chainCode.withUnsafeBytes { Array($0) }
    var payload = serializeExtendedKey(
      version: network.privateVersion, depth: key.depth, parentFingerprint: key.parentFingerprint,
      childIndex: key.childIndex, chainCode: chain, keyData: keyData)
    defer {
      SecretBytes.zero(&keyData)
      SecretBytes.zero(&chain)
      SecretBytes.zero(&payload)
    }
    return SecretBytes(utf8: Base58.encodeCheck(payload))
  }

  /// Parses an extended key (xprv, xpub, tprv, tpub) with every check BIP-32 names: length,
  /// checksum, known version, key data matching the version, a private key in 1..n-1, a public
  /// key on the curve, and depth 0 only with a zero parent fingerprint and index.
  public func parseExtendedKey(_ text: SecretBytes) throws -> ParsedExtendedKey {
    func refuse(_ why: String) -> VaultError { VaultError(.invalidExtendedKey, "extended key: \(why)") }
    var payload: [UInt8]
    do {
      payload = try text.withUnsafeBytes { try Base58.decodeCheck(String(decoding: $0, as: UTF8.self)) }
    } catch let error as VaultError {
      throw refuse(error.reason)
    }
    defer { SecretBytes.zero(&payload) }
    guard payload.count == 78 else { throw refuse("\(payload.count) bytes, not 78") }
    let version = payload[0..<4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    let depth = payload[4]
    let parentFingerprint = Array(payload[5..<9])
    let childIndex = ChildIndex(rawValue: payload[9..<13].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
    let chainCode = Array(payload[13..<45])
    let keyData = Array(payload[45..<78])
    guard depth != 0 || parentFingerprint == [0, 0, 0, 0] else {
      throw refuse("depth 0 with a non-zero parent fingerprint")
    }
    guard depth != 0 || childIndex.rawValue == 0 else { throw refuse("depth 0 with a non-zero child index") }
    if let network = ExtendedKeyNetwork.allCases.first(where: { $0.privateVersion == version }) {
      guard keyData[0] == 0 else {
        throw refuse(
          keyData[0] == 2 || keyData[0] == 3
            ? "private-key version with public key data" : "private key data must start with 0x00")
      }
      let privateKey = SecretBytes(keyData[1...])
      guard privateKey.withUnsafeBytes({ secp.isValidSecretKey($0) }) else {
        throw refuse("private key is not in 1..n-1")
      }
      let key = ExtendedPrivateKey(
        scheme: .bip32Secp256k1, privateKey: privateKey, chainCode: SecretBytes(chainCode), depth: depth,
        parentFingerprint: parentFingerprint, childIndex: childIndex)
      return .private(key, network)
    }
    if let network = ExtendedKeyNetwork.allCases.first(where: { $0.publicVersion == version }) {
      guard keyData[0] == 2 || keyData[0] == 3 else {
        throw refuse(
          keyData[0] == 0 ? "public-key version with private key data" : "public key must start with 0x02 or 0x03")
      }
      guard (try? secp.parse(keyData)) != nil else { throw refuse("public key is not a point on secp256k1") }
      return .public(
        ExtendedPublicKey(
          network: network, depth: depth, parentFingerprint: parentFingerprint, childIndex: childIndex,
          chainCode: chainCode, publicKey: keyData))
    }
    throw refuse("unknown version bytes \(Hex.encode(payload[0..<4]))")
  }
}
