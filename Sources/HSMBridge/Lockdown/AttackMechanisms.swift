import Custody

/// The kinds of key an attacker makes (always session objects) to run an attack.
enum AttackerKeyKind: String, Hashable, Sendable {
  case aes = "AES-256"
  case genericSecret = "generic secret"
  case rsa = "RSA-2048"
  case ec = "EC P-256"
  case ed25519 = "Ed25519"
}

/// What the audit knows of each mechanism HSMBridge speaks (`softhsm/default.mechanisms`):
/// what it is for, which attacker key it takes, and its parameters.
enum AttackMechanisms {
  struct Use {
    /// `C_GetMechanismInfo` usage names.
    let usages: Set<String>
    /// The key an attacker needs for it, nil for generation and digests.
    let key: AttackerKeyKind?
  }

  static let uses: [MechanismType: Use] = [
    .aesKeyGen: Use(usages: ["generate"], key: nil),
    .genericSecretKeyGen: Use(usages: ["generate"], key: nil),
    .ecKeyPairGen: Use(usages: ["generate_key_pair"], key: nil),
    .ecEdwardsKeyPairGen: Use(usages: ["generate_key_pair"], key: nil),
    .rsaPKCSKeyPairGen: Use(usages: ["generate_key_pair"], key: nil),
    .aesECBEncryptData: Use(usages: ["derive"], key: .aes),
    .aesCBCEncryptData: Use(usages: ["derive"], key: .aes),
    .aesGCM: Use(usages: ["encrypt", "decrypt"], key: .aes),
    .aesECB: Use(usages: ["encrypt", "decrypt"], key: .aes),
    .aesCBC: Use(usages: ["encrypt", "decrypt"], key: .aes),
    .aesCBCPad: Use(usages: ["encrypt", "decrypt", "wrap", "unwrap"], key: .aes),
    .aesKeyWrap: Use(usages: ["wrap", "unwrap"], key: .aes),
    .aesKeyWrapPad: Use(usages: ["wrap", "unwrap"], key: .aes),
    .sha256HMAC: Use(usages: ["sign", "verify"], key: .genericSecret),
    .sha512HMAC: Use(usages: ["sign", "verify"], key: .genericSecret),
    .sha256: Use(usages: ["digest"], key: nil),
    .sha512: Use(usages: ["digest"], key: nil),
    .ecdsa: Use(usages: ["sign", "verify"], key: .ec),
    .eddsa: Use(usages: ["sign", "verify"], key: .ed25519),
    .rsaPKCS: Use(usages: ["encrypt", "decrypt", "sign", "verify", "wrap", "unwrap"], key: .rsa),
    .rsaPKCSOAEP: Use(usages: ["encrypt", "decrypt", "wrap", "unwrap"], key: .rsa),
    .sha256RSAPKCS: Use(usages: ["sign", "verify"], key: .rsa),
  ]

  /// Every mechanism HSMBridge speaks: the `default` allow-list profile.
  static var spoken: [MechanismType] { MechanismAllowList.forPartition("default").mechanisms }

  /// The mechanism with valid parameters (zero IVs, SHA-1 OAEP as SoftHSM supports, 32 bytes
  /// of derivation data), so a refusal is about the key, never about the parameters.
  static func instance(_ type: MechanismType) -> Mechanism {
    let iv = [UInt8](repeating: 0, count: 16)
    let data = [UInt8](repeating: 0x5A, count: 32)
    switch type {
    case .aesGCM: return .aesGCM(iv: [UInt8](repeating: 0, count: 12), aad: [])
    case .aesCBC: return .aesCBC(iv: iv)
    case .aesCBCPad: return .aesCBCPad(iv: iv)
    case .rsaPKCSOAEP: return .rsaPKCSOAEP(hash: .sha1)
    case .aesECBEncryptData: return .aesECBEncryptData(data)
    case .aesCBCEncryptData: return .aesCBCEncryptData(iv: iv, data: data)
    default: return .other(type)
    }
  }

  /// The template of a derived key an attacker would like: a session AES key that is neither
  /// sensitive nor unextractable.
  static let extractableDerivedKey: [Attribute] = [
    .class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .sensitive(false), .extractable(true),
    .encrypt(true), .decrypt(true),
  ]
}
