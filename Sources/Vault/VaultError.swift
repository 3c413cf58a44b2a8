import HSMBridge

/// A failure of the vault: bad input it refused, its state in the token, a sealed seed that does
/// not open, a signature that failed its own check. Never carries secret material. PKCS #11
/// failures underneath are kept in `pkcs11`; refused Merkle changes are `MerkleError`.
public struct VaultError: Error, Hashable, Sendable, CustomStringConvertible {
  /// What kind of failure this is. Extensible: new codes are added as static members.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public var description: String { name }

    /// An argument the vault refuses (a wallet hash of the wrong size, a seed length out of range).
    public static let invalidArgument = Code("invalidArgument")
    /// A derivation path that does not parse, or does not suit the scheme.
    public static let invalidPath = Code("invalidPath")
    /// An extended key (xprv/xpub) that does not parse or is not valid.
    public static let invalidExtendedKey = Code("invalidExtendedKey")
    /// A derivation step produced an invalid key (BIP-32: use the next index).
    public static let invalidChildKey = Code("invalidChildKey")
    /// A key or point that is not valid on its curve.
    public static let invalidKey = Code("invalidKey")
    /// A sealed-seed blob that is not in the documented format (magic, version, lengths).
    public static let sealedSeedMalformed = Code("sealedSeedMalformed")
    /// A sealed-seed blob that does not open under the given wallet hash: another wallet's blob,
    /// changed wallet data, or damaged bytes (the AES-GCM tag does not match).
    public static let sealedSeedDoesNotOpen = Code("sealedSeedDoesNotOpen")
    /// The token has no usable `custos.master` key.
    public static let masterKeyMissing = Code("masterKeyMissing")
    /// A call into the token failed for another reason.
    public static let tokenFailure = Code("tokenFailure")
    /// A signature the vault made did not verify against the derived public key; nothing left.
    public static let signatureCheckFailed = Code("signatureCheckFailed")
    /// A signing or address request that does not fit the key (curve, message size).
    public static let unsupported = Code("unsupported")
    /// An address or encoded string that does not decode.
    public static let invalidEncoding = Code("invalidEncoding")
    /// The partition holds no root state (never initialised).
    public static let rootStateMissing = Code("rootStateMissing")
    /// Root-state objects exist where a fresh partition was expected.
    public static let rootStateExists = Code("rootStateExists")
    /// No root-state slot is valid, or the slots contradict each other.
    public static let rootStateCorrupt = Code("rootStateCorrupt")
    /// A commit that is not the next epoch.
    public static let epochOutOfOrder = Code("epochOutOfOrder")
    /// Writing the token (or flushing it to disk) failed.
    public static let tokenWrite = Code("tokenWrite")
  }

  public let code: Code
  /// A sentence naming what was wrong. Never contains secret material.
  public let reason: String
  /// The PKCS #11 failure underneath, when there was one (call and CKR code).
  public let pkcs11: PKCS11Error?

  public init(_ code: Code, _ reason: String, pkcs11: PKCS11Error? = nil) {
    self.code = code
    self.reason = reason
    self.pkcs11 = pkcs11
  }

  public var description: String {
    if let pkcs11 { return "\(code): \(reason) (\(pkcs11))" }
    return "\(code): \(reason)"
  }
}
