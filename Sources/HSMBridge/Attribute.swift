internal import CPKCS11
import Custody

/// An attribute type (`CKA_`), named by its constant.
public struct AttributeType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
  public let rawValue: UInt
  public init(rawValue: UInt) { self.rawValue = rawValue }
  init(_ raw: Int32) { self.rawValue = UInt(raw) }
  init(_ raw: UInt) { self.rawValue = raw }

  /// The `CKA_` name, or the value in hex for vendor and unknown types.
  public var name: String { attributeNames[rawValue] ?? "CKA_\(hex(rawValue))" }

  /// The type named `name` (`CKA_SENSITIVE`), if the specification's table knows it.
  public init?(name: String) {
    guard let entry = attributeNames.first(where: { $0.value == name }) else { return nil }
    self.rawValue = entry.key
  }
  public var description: String { name }

  public static let `class` = AttributeType(UInt(CKA_CLASS))
  public static let token = AttributeType(UInt(CKA_TOKEN))
  public static let `private` = AttributeType(UInt(CKA_PRIVATE))
  public static let label = AttributeType(UInt(CKA_LABEL))
  public static let application = AttributeType(UInt(CKA_APPLICATION))
  public static let value = AttributeType(UInt(CKA_VALUE))
  public static let keyType = AttributeType(UInt(CKA_KEY_TYPE))
  public static let id = AttributeType(UInt(CKA_ID))
  public static let sensitive = AttributeType(UInt(CKA_SENSITIVE))
  public static let encrypt = AttributeType(UInt(CKA_ENCRYPT))
  public static let decrypt = AttributeType(UInt(CKA_DECRYPT))
  public static let wrap = AttributeType(UInt(CKA_WRAP))
  public static let unwrap = AttributeType(UInt(CKA_UNWRAP))
  public static let sign = AttributeType(UInt(CKA_SIGN))
  public static let signRecover = AttributeType(UInt(CKA_SIGN_RECOVER))
  public static let verify = AttributeType(UInt(CKA_VERIFY))
  public static let verifyRecover = AttributeType(UInt(CKA_VERIFY_RECOVER))
  public static let derive = AttributeType(UInt(CKA_DERIVE))
  public static let modulus = AttributeType(UInt(CKA_MODULUS))
  public static let modulusBits = AttributeType(UInt(CKA_MODULUS_BITS))
  public static let publicExponent = AttributeType(UInt(CKA_PUBLIC_EXPONENT))
  public static let privateExponent = AttributeType(UInt(CKA_PRIVATE_EXPONENT))
  public static let valueLength = AttributeType(UInt(CKA_VALUE_LEN))
  public static let extractable = AttributeType(UInt(CKA_EXTRACTABLE))
  public static let local = AttributeType(UInt(CKA_LOCAL))
  public static let neverExtractable = AttributeType(UInt(CKA_NEVER_EXTRACTABLE))
  public static let alwaysSensitive = AttributeType(UInt(CKA_ALWAYS_SENSITIVE))
  public static let keyGenMechanism = AttributeType(UInt(CKA_KEY_GEN_MECHANISM))
  public static let modifiable = AttributeType(UInt(CKA_MODIFIABLE))
  public static let copyable = AttributeType(UInt(CKA_COPYABLE))
  public static let destroyable = AttributeType(UInt(CKA_DESTROYABLE))
  public static let ecParams = AttributeType(UInt(CKA_EC_PARAMS))
  public static let ecPoint = AttributeType(UInt(CKA_EC_POINT))
  public static let trusted = AttributeType(UInt(CKA_TRUSTED))
  public static let wrapWithTrusted = AttributeType(UInt(CKA_WRAP_WITH_TRUSTED))
  public static let checkValue = AttributeType(UInt(CKA_CHECK_VALUE))
  public static let alwaysAuthenticate = AttributeType(UInt(CKA_ALWAYS_AUTHENTICATE))
  public static let startDate = AttributeType(UInt(CKA_START_DATE))
  public static let endDate = AttributeType(UInt(CKA_END_DATE))
  public static let subject = AttributeType(UInt(CKA_SUBJECT))
  public static let objectID = AttributeType(UInt(CKA_OBJECT_ID))
  public static let allowedMechanisms = AttributeType(UInt(CKA_ALLOWED_MECHANISMS))
  public static let wrapTemplate = AttributeType(UInt(CKA_WRAP_TEMPLATE))
  public static let unwrapTemplate = AttributeType(UInt(CKA_UNWRAP_TEMPLATE))
  public static let publicKeyInfo = AttributeType(UInt(CKA_PUBLIC_KEY_INFO))

  /// How a value of this type is encoded.
  enum Encoding { case bool, ulong, bytes, utf8, objectClass, keyType, mechanism }

  var encoding: Encoding {
    switch self {
    case .token, .private, .sensitive, .encrypt, .decrypt, .wrap, .unwrap, .sign, .signRecover,
      .verify, .verifyRecover, .derive, .extractable, .local, .neverExtractable, .alwaysSensitive,
      .modifiable, .copyable, .destroyable, .trusted, .wrapWithTrusted, .alwaysAuthenticate:
      .bool
    case .modulusBits, .valueLength: .ulong
    case .label, .application: .utf8
    case .class: .objectClass
    case .keyType: .keyType
    case .keyGenMechanism: .mechanism
    default: .bytes
    }
  }

  /// The boolean attributes that govern what may be done with an object or key.
  public static let booleanAttributes: [AttributeType] = [
    .token, .private, .sensitive, .encrypt, .decrypt, .wrap, .unwrap, .sign, .signRecover, .verify,
    .verifyRecover, .derive, .extractable, .local, .neverExtractable, .alwaysSensitive, .modifiable,
    .copyable, .destroyable, .trusted, .wrapWithTrusted, .alwaysAuthenticate,
  ]
}

/// An object class (`CKO_`).
public struct ObjectClass: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
  public let rawValue: UInt
  public init(rawValue: UInt) { self.rawValue = rawValue }
  public var name: String { objectClassNames[rawValue] ?? "CKO_\(hex(rawValue))" }

  /// The class named `name` (`CKO_SECRET_KEY`), if the specification's table knows it.
  public init?(name: String) {
    guard let entry = objectClassNames.first(where: { $0.value == name }) else { return nil }
    self.rawValue = entry.key
  }
  public var description: String { name }

  public static let data = ObjectClass(rawValue: UInt(CKO_DATA))
  public static let certificate = ObjectClass(rawValue: UInt(CKO_CERTIFICATE))
  public static let publicKey = ObjectClass(rawValue: UInt(CKO_PUBLIC_KEY))
  public static let privateKey = ObjectClass(rawValue: UInt(CKO_PRIVATE_KEY))
  public static let secretKey = ObjectClass(rawValue: UInt(CKO_SECRET_KEY))
}

/// A key type (`CKK_`).
public struct KeyType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
  public let rawValue: UInt
  public init(rawValue: UInt) { self.rawValue = rawValue }
  public var name: String { keyTypeNames[rawValue] ?? "CKK_\(hex(rawValue))" }
  public var description: String { name }

  public static let rsa = KeyType(rawValue: UInt(CKK_RSA))
  public static let ec = KeyType(rawValue: UInt(CKK_EC))
  public static let ecEdwards = KeyType(rawValue: UInt(CKK_EC_EDWARDS))
  public static let aes = KeyType(rawValue: UInt(CKK_AES))
  public static let genericSecret = KeyType(rawValue: UInt(CKK_GENERIC_SECRET))
}

/// One attribute with its value, as used in templates and read back from objects.
public enum Attribute: Hashable, Sendable, CustomStringConvertible {
  case `class`(ObjectClass)
  case keyType(KeyType)
  case label(String)
  case application(String)
  case id([UInt8])
  /// `CKA_VALUE`. For secret keys only ever set in tests and audits with throw-away values.
  case value([UInt8])
  case valueLength(UInt)
  case modulusBits(UInt)
  case publicExponent([UInt8])
  case modulus([UInt8])
  /// DER of the curve's OID or name (see `ECCurve`).
  case ecParams([UInt8])
  /// DER OCTET STRING holding the public point.
  case ecPoint([UInt8])
  case keyGenMechanism(MechanismType)
  case checkValue([UInt8])
  case token(Bool)
  case `private`(Bool)
  case sensitive(Bool)
  case extractable(Bool)
  case encrypt(Bool)
  case decrypt(Bool)
  case sign(Bool)
  case signRecover(Bool)
  case verify(Bool)
  case verifyRecover(Bool)
  case wrap(Bool)
  case unwrap(Bool)
  case derive(Bool)
  case modifiable(Bool)
  case copyable(Bool)
  case destroyable(Bool)
  case trusted(Bool)
  case wrapWithTrusted(Bool)
  case local(Bool)
  case neverExtractable(Bool)
  case alwaysSensitive(Bool)
  case alwaysAuthenticate(Bool)
  /// Any other attribute, as raw bytes.
  case other(AttributeType, [UInt8])

  /// The attribute's type.
  public var type: AttributeType {
    switch self {
    case .class: .class
    case .keyType: .keyType
    case .label: .label
    case .application: .application
    case .id: .id
    case .value: .value
    case .valueLength: .valueLength
    case .modulusBits: .modulusBits
    case .publicExponent: .publicExponent
    case .modulus: .modulus
    case .ecParams: .ecParams
    case .ecPoint: .ecPoint
    case .keyGenMechanism: .keyGenMechanism
    case .checkValue: .checkValue
    case .token: .token
    case .private: .private
    case .sensitive: .sensitive
    case .extractable: .extractable
    case .encrypt: .encrypt
    case .decrypt: .decrypt
    case .sign: .sign
    case .signRecover: .signRecover
    case .verify: .verify
    case .verifyRecover: .verifyRecover
    case .wrap: .wrap
    case .unwrap: .unwrap
    case .derive: .derive
    case .modifiable: .modifiable
    case .copyable: .copyable
    case .destroyable: .destroyable
    case .trusted: .trusted
    case .wrapWithTrusted: .wrapWithTrusted
    case .local: .local
    case .neverExtractable: .neverExtractable
    case .alwaysSensitive: .alwaysSensitive
    case .alwaysAuthenticate: .alwaysAuthenticate
    case .other(let type, _): type
    }
  }

  /// The value of a boolean attribute, nil for others.
  public var boolValue: Bool? {
    switch self {
    case .token(let v), .private(let v), .sensitive(let v), .extractable(let v), .encrypt(let v),
      .decrypt(let v), .sign(let v), .signRecover(let v), .verify(let v), .verifyRecover(let v),
      .wrap(let v), .unwrap(let v), .derive(let v), .modifiable(let v), .copyable(let v),
      .destroyable(let v), .trusted(let v), .wrapWithTrusted(let v), .local(let v),
      .neverExtractable(let v), .alwaysSensitive(let v), .alwaysAuthenticate(let v):
      v
    default: nil
    }
  }

  /// A boolean attribute of `type` with `value`; nil when `type` is not boolean.
  public static func boolean(_ type: AttributeType, _ value: Bool) -> Attribute? {
    guard type.encoding == .bool else { return nil }
    return Attribute(type: type, bytes: [value ? 1 : 0])
  }

  /// The value as PKCS #11 stores it.
  var encoded: [UInt8] {
    func ulong(_ value: UInt) -> [UInt8] { withUnsafeBytes(of: CK_ULONG(value)) { Array($0) } }
    switch self {
    case .class(let value): return ulong(value.rawValue)
    case .keyType(let value): return ulong(value.rawValue)
    case .keyGenMechanism(let value): return ulong(value.rawValue)
    case .valueLength(let value), .modulusBits(let value): return ulong(value)
    case .label(let text), .application(let text): return Array(text.utf8)
    case .id(let bytes), .value(let bytes), .publicExponent(let bytes), .modulus(let bytes),
      .ecParams(let bytes), .ecPoint(let bytes), .checkValue(let bytes), .other(_, let bytes):
      return bytes
    default: return [boolValue == true ? 1 : 0]
    }
  }

  /// Decodes the raw value of `type`; falls back to `.other` for a value of unexpected size.
  init(type: AttributeType, bytes: [UInt8]) {
    func ulong() -> UInt? {
      guard bytes.count == MemoryLayout<CK_ULONG>.size else { return nil }
      return UInt(bytes.withUnsafeBytes { $0.loadUnaligned(as: CK_ULONG.self) })
    }
    switch type.encoding {
    case .bool:
      guard bytes.count == 1 else {
        self = .other(type, bytes)
        return
      }
      let v = bytes[0] != 0
      switch type {
      case .token: self = .token(v)
      case .private: self = .private(v)
      case .sensitive: self = .sensitive(v)
      case .extractable: self = .extractable(v)
      case .encrypt: self = .encrypt(v)
      case .decrypt: self = .decrypt(v)
      case .sign: self = .sign(v)
      case .signRecover: self = .signRecover(v)
      case .verify: self = .verify(v)
      case .verifyRecover: self = .verifyRecover(v)
      case .wrap: self = .wrap(v)
      case .unwrap: self = .unwrap(v)
      case .derive: self = .derive(v)
      case .modifiable: self = .modifiable(v)
      case .copyable: self = .copyable(v)
      case .destroyable: self = .destroyable(v)
      case .trusted: self = .trusted(v)
      case .wrapWithTrusted: self = .wrapWithTrusted(v)
      case .local: self = .local(v)
      case .neverExtractable: self = .neverExtractable(v)
      case .alwaysSensitive: self = .alwaysSensitive(v)
      case .alwaysAuthenticate: self = .alwaysAuthenticate(v)
      default: self = .other(type, bytes)
      }
    case .ulong:
      guard let value = ulong() else {
        self = .other(type, bytes)
        return
      }
      self = type == .valueLength ? .valueLength(value) : .modulusBits(value)
    case .objectClass:
      self = ulong().map { .class(ObjectClass(rawValue: $0)) } ?? .other(type, bytes)
    case .keyType:
      self = ulong().map { .keyType(KeyType(rawValue: $0)) } ?? .other(type, bytes)
    case .mechanism:
      self = ulong().map { .keyGenMechanism(MechanismType(rawValue: $0)) } ?? .other(type, bytes)
    case .utf8:
      let text = String(decoding: bytes, as: UTF8.self)
      self = type == .label ? .label(text) : .application(text)
    case .bytes:
      switch type {
      case .id: self = .id(bytes)
      case .value: self = .value(bytes)
      case .publicExponent: self = .publicExponent(bytes)
      case .modulus: self = .modulus(bytes)
      case .ecParams: self = .ecParams(bytes)
      case .ecPoint: self = .ecPoint(bytes)
      case .checkValue: self = .checkValue(bytes)
      default: self = .other(type, bytes)
      }
    }
  }

  /// Never prints `CKA_VALUE` bytes, which may be secret.
  public var description: String {
    switch self {
    case .value(let bytes): "CKA_VALUE=<\(bytes.count) bytes>"
    case .class(let value): "CKA_CLASS=\(value)"
    case .keyType(let value): "CKA_KEY_TYPE=\(value)"
    case .keyGenMechanism(let value): "CKA_KEY_GEN_MECHANISM=\(value)"
    case .label(let text), .application(let text): "\(type)='\(text)'"
    case .valueLength(let value), .modulusBits(let value): "\(type)=\(value)"
    default:
      if let bool = boolValue { "\(type)=\(bool)" } else { "\(type)=\(Hex.encode(encoded))" }
    }
  }
}

/// What reading one attribute of an object gave.
public enum AttributeReading: Hashable, Sendable {
  /// The attribute and its value.
  case value(Attribute)
  /// The token refuses to reveal it (`CKR_ATTRIBUTE_SENSITIVE`).
  case sensitive
  /// The object has no such attribute (`CKR_ATTRIBUTE_TYPE_INVALID`).
  case invalid

  /// The attribute, if it was readable.
  public var attribute: Attribute? {
    if case .value(let attribute) = self { return attribute }
    return nil
  }
}

/// A handle to an object, valid in the module instance that gave it.
public struct ObjectHandle: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
  public let rawValue: UInt
  public init(rawValue: UInt) { self.rawValue = rawValue }
  public var description: String { "object \(rawValue)" }
}

/// Named elliptic curves by the DER of their OID, for `CKA_EC_PARAMS`.
public enum ECCurve: String, Sendable, CaseIterable {
  case p256 = "P-256"
  case secp256k1
  case ed25519 = "Ed25519"

  /// The DER encoding of the curve's object identifier.
  public var parameters: [UInt8] {
    switch self {
    case .p256: [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]
    case .secp256k1: [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x0A]
    case .ed25519: [0x06, 0x03, 0x2B, 0x65, 0x70]
    }
  }

  /// The key-pair generation mechanism for keys on this curve.
  public var keyPairGeneration: Mechanism {
    self == .ed25519 ? .ecEdwardsKeyPairGen : .ecKeyPairGen
  }

  /// The curve named by `parameters`, if known.
  public init?(parameters: [UInt8]) {
    guard let curve = ECCurve.allCases.first(where: { $0.parameters == parameters }) else {
      return nil
    }
    self = curve
  }
}

/// Template helpers: encode to a contiguous C array only inside the scope of `body`.
func withCTemplate<R>(
  _ template: [Attribute], _ body: (UnsafeMutablePointer<CK_ATTRIBUTE>?, CK_ULONG) throws -> R
) rethrows -> R {
  var values = template.map(\.encoded)
  defer { for index in values.indices { SecretBytes.zero(&values[index]) } }
  var storage = [UInt8](values.joined())
  defer { SecretBytes.zero(&storage) }
  return try storage.withUnsafeMutableBytes { raw in
    var attributes = [CK_ATTRIBUTE]()
    attributes.reserveCapacity(template.count)
    var offset = 0
    for (attribute, value) in zip(template, values) {
      let pointer = value.isEmpty ? nil : raw.baseAddress.map { $0 + offset }
      attributes.append(
        CK_ATTRIBUTE(
          type: CK_ATTRIBUTE_TYPE(attribute.type.rawValue), pValue: pointer,
          ulValueLen: CK_ULONG(value.count)))
      offset += value.count
    }
    return try attributes.withUnsafeMutableBufferPointer {
      try body($0.baseAddress, CK_ULONG($0.count))
    }
  }
}
