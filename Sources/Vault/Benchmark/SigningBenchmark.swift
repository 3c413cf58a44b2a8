import CSecp256k1
import Crypto
import Custody
import HSMBridge
import Logging

/// Measures the vault's signing path per stage and whole, against the raw primitives it is
/// made of, measured in the same run: the token's derive + AES-GCM, HMAC-SHA512, point
/// multiplications, sign, verify. `custos bench sign` prints it.
public struct SigningBenchmark {
  /// One measured operation: mean microseconds per call in the fastest of the rounds.
  public struct Figure: Sendable, Hashable {
    public let name: String
    public let microseconds: Double
  }

  /// The figures of one signature algorithm.
  public struct CurveReport: Sendable {
    public let algorithm: SignatureAlgorithm
    public let path: String
    /// open, derive, sign, verify, re-seal.
    public let stages: [Figure]
    /// `WalletVault.sign`: open + derive + sign + verify, as the server calls it.
    public let whole: Figure
    /// The raw primitives the whole path is made of, with how many of each it uses.
    public let raw: [(figure: Figure, count: Int)]

    /// Sum of the raw parts, each times its count.
    public var rawSum: Double { raw.reduce(0) { $0 + $1.figure.microseconds * Double($1.count) } }
    /// Whole path over the sum of its raw parts (target <= 1.5).
    public var ratio: Double { whole.microseconds / rawSum }
    public var signaturesPerSecond: Double { 1_000_000 / whole.microseconds }
  }

  let vault: WalletVault
  let session: Session
  let iterations: Int
  let rounds: Int

  /// A benchmark of `vault` (over `session`): each figure is the fastest of `rounds` means over
  /// `iterations` calls.
  public init(vault: WalletVault, session: Session, iterations: Int, rounds: Int = 5) {
    self.vault = vault
    self.session = session
    self.iterations = iterations
    self.rounds = rounds
  }

  func measure(_ name: String, _ body: () throws -> Void) rethrows -> Figure {
    for _ in 0..<max(1, iterations / 10) { try body() }  // warm-up
    var means = [Double]()
    let clock = ContinuousClock()
    for _ in 0..<rounds {
      let start = clock.now
      for _ in 0..<iterations { try body() }
      let elapsed = clock.now - start
      let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
      means.append(seconds * 1e6 / Double(iterations))
    }
    // The fastest round: the one least disturbed by other work on a shared machine.
    return Figure(name: name, microseconds: means.min()!)
  }

  /// Runs the benchmark for ECDSA, taproot Schnorr and Ed25519 along 5-level paths.
  public func run() throws -> [CurveReport] {
    let walletHash = Hashes.sha256(Array("custos bench wallet".utf8))
    let newHash = Hashes.sha256(Array("custos bench wallet v2".utf8))
    let sealed = try vault.createWallet(walletHash: walletHash)
    var reports = [CurveReport]()
    for (algorithm, scheme, pathText) in [
      (SignatureAlgorithm.ecdsaSecp256k1, DerivationScheme.bip32Secp256k1, "m/44'/60'/0'/0/0"),
      (.schnorrTaproot, .bip32Secp256k1, "m/86'/0'/0'/0/0"),
      (.ed25519, .slip10Ed25519, "m/44'/501'/0'/0'/0'"),
    ] {
      let path = try DerivationPath(parsing: pathText)
      let location = WalletKeyLocation(sealedSeed: sealed, walletHash: walletHash, scheme: scheme, path: path)
      let message = Hashes.sha256(Array("bench message".utf8))
      let seed = try vault.sealer.open(sealed, walletHash: walletHash)
      let (privateKey, publicKey) = try vault.derivation.signingKey(seed: seed, scheme: scheme, path: path)
      let auxiliary = [UInt8](repeating: 0x42, count: 32)
      let signature = try vault.signer.produce(
        message, algorithm: algorithm, privateKey: privateKey, publicKey: publicKey, auxiliary: auxiliary)

      let stages = [
        try measure("open sealed seed (token)") { _ = try vault.sealer.open(sealed, walletHash: walletHash) },
        try measure("derive \(path.components.count) levels") {
          _ = try vault.derivation.signingKey(seed: seed, scheme: scheme, path: path)
        },
        try measure("sign") {
          _ = try vault.signer.produce(
            message, algorithm: algorithm, privateKey: privateKey, publicKey: publicKey, auxiliary: auxiliary)
        },
        try measure("verify") { try vault.signer.check(signature, message: message, derivedPublicKey: publicKey) },
        try measure("re-seal (token)") { _ = try vault.reseal(sealed, from: walletHash, to: newHash) },
      ]
      let whole = try measure("whole: WalletVault.sign") {
        _ = try vault.sign(message, algorithm: algorithm, at: location)
      }
      let raw = try rawParts(
        algorithm: algorithm, path: path, sealed: sealed, walletHash: walletHash, privateKey: privateKey,
        publicKey: publicKey, message: message, signature: signature.signature)
      reports.append(CurveReport(algorithm: algorithm, path: pathText, stages: stages, whole: whole, raw: raw))
    }
    return reports
  }

  /// The raw primitives, called directly (HSMBridge, swift-crypto, libsecp256k1), each with the
  /// number of times the whole path uses it.
  func rawParts(
    algorithm: SignatureAlgorithm, path: DerivationPath, sealed: SealedSeed, walletHash: [UInt8],
    privateKey: SecretBytes, publicKey: [UInt8], message: [UInt8], signature: [UInt8]
  ) throws -> [(figure: Figure, count: Int)] {
    let master = try SeedSealer.findMasterKey(in: session)
    let template: [Attribute] = [
      .class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .sensitive(true), .extractable(false),
      .encrypt(true), .decrypt(true),
    ]
    let gcm = Mechanism.aesGCM(iv: sealed.nonce, aad: SealedSeed.domainTag + walletHash, tagBits: 128)
    var parts = [(figure: Figure, count: Int)]()
    parts.append(
      (
        try measure("token: derive key + AES-GCM decrypt + destroy") {
          let key = try session.deriveKey(.aesECBEncryptData(walletHash), baseKey: master, template)
          _ = try session.decryptSecret(gcm, key: key, sealed.ciphertext)
          try session.destroyObject(key)
        }, 1
      ))
    let hmacKey = SymmetricKey(data: [UInt8](repeating: 7, count: 32))
    let hmacData = [UInt8](repeating: 9, count: 37)
    parts.append(
      (
        measure("HMAC-SHA512 (swift-crypto)") { _ = HMAC<SHA512>.authenticationCode(for: hmacData, using: hmacKey) },
        path.components.count + 1
      ))
    let context = vault.secp.context
    var secret = privateKey.withUnsafeBytes { Array($0) }
    defer { SecretBytes.zero(&secret) }
    switch algorithm {
    case .ecdsaSecp256k1, .schnorrBIP340, .schnorrTaproot:
      var point = secp256k1_pubkey()
      let normalLevels = path.components.filter { !$0.isHardened }.count
      parts.append(
        (
          measure("point multiplication k*G (libsecp256k1)") {
            _ = secp256k1_ec_pubkey_create(context, &point, secret)
          }, normalLevels + 1
        ))
      var scalar = secret
      let tweak = [UInt8](repeating: 3, count: 32)
      parts.append(
        (
          measure("scalar addition (libsecp256k1)") { _ = secp256k1_ec_seckey_tweak_add(context, &scalar, tweak) },
          path.components.count
        ))
      SecretBytes.zero(&scalar)
    case .ed25519:
      parts.append(
        (
          try measure("Ed25519 public key (swift-crypto)") {
            _ = try Curve25519.Signing.PrivateKey(rawRepresentation: secret).publicKey
          }, 1
        ))
    }
    switch algorithm {
    case .ecdsaSecp256k1:
      var recoverable = secp256k1_ecdsa_recoverable_signature()
      parts.append(
        (
          measure("ECDSA sign (libsecp256k1)") {
            _ = secp256k1_ecdsa_sign_recoverable(context, &recoverable, message, secret, nil, nil)
          }, 1
        ))
      var recoverableCopy = recoverable
      var recoveredPoint = secp256k1_pubkey()
      parts.append(
        (
          measure("ECDSA public key recovery: the signature check (libsecp256k1)") {
            _ = secp256k1_ecdsa_recover(context, &recoveredPoint, &recoverableCopy, message)
          }, 1
        ))
    case .schnorrBIP340, .schnorrTaproot:
      parts.append((try measure("token RNG, 32 bytes (aux randomness)") { _ = try session.generateRandom(32) }, 1))
      var output = [UInt8](repeating: 0, count: 64)
      let auxiliary = [UInt8](repeating: 0x42, count: 32)
      let tweak = Secp256k1.taprootTweak(internalKey: Array(publicKey.dropFirst()))
      parts.append(
        (
          measure("Schnorr sign incl. keypair + taproot tweak (libsecp256k1)") {
            var keypair = secp256k1_keypair()
            _ = secp256k1_keypair_create(context, &keypair, secret)
            if algorithm == .schnorrTaproot { _ = secp256k1_keypair_xonly_tweak_add(context, &keypair, tweak) }
            _ = secp256k1_schnorrsig_sign32(context, &output, message, &keypair, auxiliary)
          }, 1
        ))
      if algorithm == .schnorrTaproot {
        let internalKey = Array(publicKey.dropFirst())
        parts.append(
          (
            try measure("taproot output key Q = P + tG, for the check (libsecp256k1)") {
              _ = try vault.secp.taprootOutputKey(internalKey: internalKey)
            }, 1
          ))
      }
      var xOnly = secp256k1_xonly_pubkey()
      let outputKey =
        algorithm == .schnorrTaproot
        ? try vault.secp.taprootOutputKey(internalKey: Array(publicKey.dropFirst())) : Array(publicKey.dropFirst())
      _ = secp256k1_xonly_pubkey_parse(context, &xOnly, outputKey)
      parts.append(
        (
          measure("Schnorr verify (libsecp256k1)") {
            _ = secp256k1_schnorrsig_verify(context, signature, message, 32, &xOnly)
          }, 1
        ))
    case .ed25519:
      parts.append(
        (
          try measure("Ed25519 sign (swift-crypto)") {
            _ = try Curve25519.Signing.PrivateKey(rawRepresentation: secret).signature(for: message)
          }, 1
        ))
      let verifier = try Curve25519.Signing.PublicKey(rawRepresentation: publicKey)
      parts.append(
        (measure("Ed25519 verify (swift-crypto)") { _ = verifier.isValidSignature(signature, for: message) }, 1))
    }
    return parts
  }
}
