internal import CPKCS11
import Custody

/// A mechanism type (`CKM_`), named by its constant.
public struct MechanismType: RawRepresentable, Hashable, Sendable, CustomStringConvertible, Comparable {
  public let rawValue: UInt
  public init(rawValue: UInt) { self.rawValue = rawValue }
  init(_ raw: UInt) { self.rawValue = raw }

  /// The type named `name` (`CKM_AES_GCM`), if the specification's table knows it.
  public init?(name: String) {
    guard let entry = mechanismNames.first(where: { $0.value == name }) else { return nil }
    self.rawValue = entry.key
  }

  /// The `CKM_` name, or the value in hex for vendor and unknown types.
  public var name: String { mechanismNames[rawValue] ?? "CKM_\(hex(rawValue))" }
  public var description: String { name }
  public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

  public static let aesKeyGen = MechanismType(UInt(CKM_AES_KEY_GEN))
  public static let genericSecretKeyGen = MechanismType(UInt(CKM_GENERIC_SECRET_KEY_GEN))
  public static let ecKeyPairGen = MechanismType(UInt(CKM_EC_KEY_PAIR_GEN))
  public static let ecEdwardsKeyPairGen = MechanismType(UInt(CKM_EC_EDWARDS_KEY_PAIR_GEN))
  public static let rsaPKCSKeyPairGen = MechanismType(UInt(CKM_RSA_PKCS_KEY_PAIR_GEN))
  public static let aesECBEncryptData = MechanismType(UInt(CKM_AES_ECB_ENCRYPT_DATA))
  public static let aesCBCEncryptData = MechanismType(UInt(CKM_AES_CBC_ENCRYPT_DATA))
  public static let aesGCM = MechanismType(UInt(CKM_AES_GCM))
  public static let aesECB = MechanismType(UInt(CKM_AES_ECB))
  public static let aesCBC = MechanismType(UInt(CKM_AES_CBC))
  public static let aesCBCPad = MechanismType(UInt(CKM_AES_CBC_PAD))
  public static let aesKeyWrap = MechanismType(UInt(CKM_AES_KEY_WRAP))
  public static let aesKeyWrapPad = MechanismType(UInt(CKM_AES_KEY_WRAP_PAD))
  public static let sha256HMAC = MechanismType(UInt(CKM_SHA256_HMAC))
  public static let sha512HMAC = MechanismType(UInt(CKM_SHA512_HMAC))
  public static let sha256 = MechanismType(UInt(CKM_SHA256))
  public static let sha512 = MechanismType(UInt(CKM_SHA512))
  public static let ecdsa = MechanismType(UInt(CKM_ECDSA))
  public static let ecdsaSHA256 = MechanismType(UInt(CKM_ECDSA_SHA256))
  public static let eddsa = MechanismType(UInt(CKM_EDDSA))
  public static let rsaPKCS = MechanismType(UInt(CKM_RSA_PKCS))
  public static let rsaPKCSOAEP = MechanismType(UInt(CKM_RSA_PKCS_OAEP))
  public static let sha256RSAPKCS = MechanismType(UInt(CKM_SHA256_RSA_PKCS))
}

/// The hash functions that parameterise RSA-OAEP.
public enum OAEPHash: Sendable, Hashable {
  case sha1, sha256

  var mechanism: CK_MECHANISM_TYPE {
    self == .sha1 ? CK_MECHANISM_TYPE(CKM_SHA_1) : CK_MECHANISM_TYPE(CKM_SHA256)
  }
  var mgf: CK_RSA_PKCS_MGF_TYPE {
    self == .sha1 ? CK_RSA_PKCS_MGF_TYPE(CKG_MGF1_SHA1) : CK_RSA_PKCS_MGF_TYPE(CKG_MGF1_SHA256)
  }
}

/// A mechanism with its parameters, as passed to an operation.
public enum Mechanism: Sendable, Hashable {
  case aesKeyGen
  case genericSecretKeyGen
  case ecKeyPairGen
  case ecEdwardsKeyPairGen
  case rsaPKCSKeyPairGen
  /// Derives a key whose value is AES-ECB(base key, `data`); `data` is a multiple of 16 bytes.
  case aesECBEncryptData([UInt8])
  /// Derives a key whose value is AES-CBC(base key, `iv`, `data`).
  case aesCBCEncryptData(iv: [UInt8], data: [UInt8])
  /// AES-GCM with a 12-byte `iv`, additional authenticated `aad` and a tag of `tagBits`.
  case aesGCM(iv: [UInt8], aad: [UInt8], tagBits: Int = 128)
  case aesECB
  case aesCBC(iv: [UInt8])
  case aesCBCPad(iv: [UInt8])
  case aesKeyWrap
  case aesKeyWrapPad
  case sha256HMAC
  case sha512HMAC
  case sha256
  case sha512
  /// Raw ECDSA over a digest the caller computed; the signature is r || s.
  case ecdsa
  case ecdsaSHA256
  /// Pure EdDSA (Ed25519 without pre-hashing or context).
  case eddsa
  case rsaPKCS
  /// RSA-OAEP with MGF1 of the same hash and an optional label.
  case rsaPKCSOAEP(hash: OAEPHash, label: [UInt8] = [])
  case sha256RSAPKCS
  /// Any mechanism that takes no parameter.
  case other(MechanismType)

  /// The mechanism's type.
  public var type: MechanismType {
    switch self {
    case .aesKeyGen: .aesKeyGen
    case .genericSecretKeyGen: .genericSecretKeyGen
    case .ecKeyPairGen: .ecKeyPairGen
    case .ecEdwardsKeyPairGen: .ecEdwardsKeyPairGen
    case .rsaPKCSKeyPairGen: .rsaPKCSKeyPairGen
    case .aesECBEncryptData: .aesECBEncryptData
    case .aesCBCEncryptData: .aesCBCEncryptData
    case .aesGCM: .aesGCM
    case .aesECB: .aesECB
    case .aesCBC: .aesCBC
    case .aesCBCPad: .aesCBCPad
    case .aesKeyWrap: .aesKeyWrap
    case .aesKeyWrapPad: .aesKeyWrapPad
    case .sha256HMAC: .sha256HMAC
    case .sha512HMAC: .sha512HMAC
    case .sha256: .sha256
    case .sha512: .sha512
    case .ecdsa: .ecdsa
    case .ecdsaSHA256: .ecdsaSHA256
    case .eddsa: .eddsa
    case .rsaPKCS: .rsaPKCS
    case .rsaPKCSOAEP: .rsaPKCSOAEP
    case .sha256RSAPKCS: .sha256RSAPKCS
    case .other(let type): type
    }
  }

  /// Builds the C mechanism and its parameter structure, valid only inside `body`.
  func withCMechanism<R>(_ body: (UnsafeMutablePointer<CK_MECHANISM>) throws -> R) throws -> R {
    var mechanism = CK_MECHANISM(
      mechanism: CK_MECHANISM_TYPE(type.rawValue), pParameter: nil, ulParameterLen: 0)
    func withParameter<P>(_ parameter: inout P) throws -> R {
      try withUnsafeMutablePointer(to: &parameter) { pointer in
        mechanism.pParameter = UnsafeMutableRawPointer(pointer)
        mechanism.ulParameterLen = CK_ULONG(MemoryLayout<P>.size)
        return try body(&mechanism)
      }
    }
    func withBytes(
      _ bytes: [UInt8], _ inner: (UnsafeMutablePointer<UInt8>?, Int) throws -> R
    )
      throws -> R
    {
      var copy = bytes
      defer { SecretBytes.zero(&copy) }
      return try copy.withUnsafeMutableBufferPointer { try inner($0.baseAddress, $0.count) }
    }
    switch self {
    case .aesECBEncryptData(let data):
      return try withBytes(data) { pointer, count in
        var parameter = CK_KEY_DERIVATION_STRING_DATA(pData: pointer, ulLen: CK_ULONG(count))
        return try withParameter(&parameter)
      }
    case .aesCBCEncryptData(let iv, let data):
      return try withBytes(data) { pointer, count in
        var parameter = CK_AES_CBC_ENCRYPT_DATA_PARAMS()
        withUnsafeMutableBytes(of: &parameter.iv) { raw in
          for (index, byte) in iv.prefix(raw.count).enumerated() { raw[index] = byte }
        }
        parameter.pData = pointer
        parameter.length = CK_ULONG(count)
        return try withParameter(&parameter)
      }
    case .aesGCM(let iv, let aad, let tagBits):
      return try withBytes(iv) { ivPointer, ivCount in
        try withBytes(aad) { aadPointer, aadCount in
          // SoftHSM checks ulParameterLen == sizeof(CK_GCM_PARAMS) (the 2.40 layout with ulIvBits).
          var parameter = CK_GCM_PARAMS(
            pIv: ivPointer, ulIvLen: CK_ULONG(ivCount), ulIvBits: CK_ULONG(ivCount * 8),
            pAAD: aadPointer, ulAADLen: CK_ULONG(aadCount), ulTagBits: CK_ULONG(tagBits))
          return try withParameter(&parameter)
        }
      }
    case .aesCBC(let iv), .aesCBCPad(let iv):
      return try withBytes(iv) { pointer, count in
        mechanism.pParameter = UnsafeMutableRawPointer(pointer)
        mechanism.ulParameterLen = CK_ULONG(count)
        return try body(&mechanism)
      }
    case .rsaPKCSOAEP(let hash, let label):
      return try withBytes(label) { pointer, count in
        var parameter = CK_RSA_PKCS_OAEP_PARAMS(
          hashAlg: hash.mechanism, mgf: hash.mgf,
          source: CK_RSA_PKCS_OAEP_SOURCE_TYPE(CKZ_DATA_SPECIFIED),
          pSourceData: count == 0 ? nil : UnsafeMutableRawPointer(pointer),
          ulSourceDataLen: CK_ULONG(count))
        return try withParameter(&parameter)
      }
    default:
      return try body(&mechanism)
    }
  }
}
