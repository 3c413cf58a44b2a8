import Custody

/// What the attribute policy expects of one attribute of an object.
public enum AttributeExpectation: Hashable, Sendable, CustomStringConvertible {
  /// Readable, with exactly this value.
  case equals(Attribute)
  /// Present but refused to every reader (`CKR_ATTRIBUTE_SENSITIVE`): a secret value.
  case unreadable
  /// Present with a value that differs per object (a public point, a check value, an empty ID).
  case anyValue
  /// The object's class has no such attribute (`CKR_ATTRIBUTE_TYPE_INVALID`).
  case absent

  /// Whether `reading` meets the expectation.
  public func isMet(by reading: AttributeReading) -> Bool {
    switch (self, reading) {
    case (.equals(let expected), .value(let actual)): expected == actual
    case (.unreadable, .sensitive): true
    case (.anyValue, .value): true
    case (.absent, .invalid): true
    default: false
    }
  }

  public var description: String {
    switch self {
    case .equals(let attribute): "\(attribute)"
    case .unreadable: "unreadable (sensitive)"
    case .anyValue: "present"
    case .absent: "absent"
    }
  }
}

/// A departure from the locked-down baseline, with the reason it is needed.
public struct PolicyException: Hashable, Sendable, CustomStringConvertible {
  public let attribute: Attribute
  public let reason: String

  public init(_ attribute: Attribute, _ reason: String) {
    self.attribute = attribute
    self.reason = reason
  }

  public var description: String { "\(attribute): \(reason)" }
}

/// One row of the attribute policy: which objects it covers and every attribute they must have.
public struct ObjectPolicy: Hashable, Sendable, CustomStringConvertible {
  /// How many objects of a partition a row matches.
  public enum Cardinality: Hashable, Sendable {
    /// Exactly this many (1 for a named key, 2 for the root state's two slots).
    case exactly(Int)
    /// Any number, none included (records written by the vault).
    case any

    /// Exactly one: a named key.
    public static let exactlyOne = Cardinality.exactly(1)
  }

  /// What the row describes, which decides its baseline.
  public enum Kind: Hashable, Sendable {
    /// An AES secret key of `bytes` bytes.
    case aesKey(bytes: UInt)
    /// The private half of an EC key pair.
    case ecPrivateKey(ECCurve)
    /// The public half of an EC key pair.
    case ecPublicKey(ECCurve)
    /// A data object, selected by its `CKA_APPLICATION`.
    case data

    public var objectClass: ObjectClass {
      switch self {
      case .aesKey: .secretKey
      case .ecPrivateKey: .privateKey
      case .ecPublicKey: .publicKey
      case .data: .data
      }
    }
  }

  /// The partition the object lives in.
  public let partition: String
  /// The label that selects the object (keys), or nil.
  public let label: String?
  /// The `CKA_APPLICATION` that selects the object (data objects), or nil.
  public let application: String?
  public let kind: Kind
  public let cardinality: Cardinality
  /// What the object is for.
  public let purpose: String
  /// Departures from the locked-down baseline, each with its reason.
  public let exceptions: [PolicyException]

  public init(
    partition: String, label: String? = nil, application: String? = nil, kind: Kind,
    cardinality: Cardinality = .exactlyOne, purpose: String, exceptions: [PolicyException] = []
  ) {
    self.partition = partition
    self.label = label
    self.application = application
    self.kind = kind
    self.cardinality = cardinality
    self.purpose = purpose
    self.exceptions = exceptions
  }

  /// The object's class.
  public var objectClass: ObjectClass { kind.objectClass }

  /// A name for the row in reports: `custos.codesign (CKO_PRIVATE_KEY)`.
  public var name: String { "\(label ?? application ?? "?") (\(objectClass))" }
  public var description: String { "\(partition)/\(name)" }

  /// Whether an object of `objectClass` with `label` and `application` is one this row covers.
  public func selects(objectClass: ObjectClass, label: String?, application: String?) -> Bool {
    guard objectClass == self.objectClass else { return false }
    if let wanted = self.label, wanted != label { return false }
    if let wanted = self.application, wanted != application { return false }
    return true
  }

  /// The expected reading of every audited attribute: the baseline of the row's kind with the
  /// exceptions applied; anything not named there is expected absent.
  public var expectations: [AttributeType: AttributeExpectation] {
    var expected = [AttributeType: AttributeExpectation]()
    for type in AttributePolicy.auditedAttributes { expected[type] = .absent }
    for (type, expectation) in baseline { expected[type] = expectation }
    for exception in exceptions { expected[exception.attribute.type] = .equals(exception.attribute) }
    return expected
  }

  /// The locked-down baseline of the row's kind (DESIGN.md section 4).
  var baseline: [AttributeType: AttributeExpectation] {
    var attributes: [Attribute] = [
      .class(objectClass), .token(true), .private(true), .modifiable(false), .copyable(false), .destroyable(false),
    ]
    var free: [AttributeType] = []
    var secret: [AttributeType] = []
    if let label { attributes.append(.label(label)) } else { free.append(.label) }
    switch kind {
    case .aesKey(let bytes):
      attributes += [
        .keyType(.aes), .valueLength(bytes), .sensitive(true), .alwaysSensitive(true), .extractable(false),
        .neverExtractable(true), .encrypt(false), .decrypt(false), .sign(false), .verify(false), .wrap(false),
        .unwrap(false), .derive(false), .trusted(false), .wrapWithTrusted(false), .local(true),
        .keyGenMechanism(.aesKeyGen),
      ]
      free += [.id, .startDate, .endDate, .checkValue, .allowedMechanisms, .wrapTemplate, .unwrapTemplate]
      secret += [.value]
    case .ecPrivateKey(let curve):
      attributes += [
        .keyType(.ec), .ecParams(curve.parameters), .sensitive(true), .alwaysSensitive(true),
        .extractable(false), .neverExtractable(true), .decrypt(false), .sign(false), .signRecover(false),
        .unwrap(false), .derive(false), .wrapWithTrusted(false), .alwaysAuthenticate(false), .local(true),
        .keyGenMechanism(curve.keyPairGeneration.type),
      ]
      free += [.id, .startDate, .endDate, .subject, .allowedMechanisms, .unwrapTemplate, .publicKeyInfo]
      secret += [.value]
    case .ecPublicKey(let curve):
      attributes += [
        .keyType(.ec), .ecParams(curve.parameters), .encrypt(false), .verify(false), .verifyRecover(false),
        .wrap(false), .derive(false), .trusted(false), .local(true), .keyGenMechanism(curve.keyPairGeneration.type),
      ]
      free += [.id, .startDate, .endDate, .subject, .allowedMechanisms, .wrapTemplate, .ecPoint, .publicKeyInfo]
    case .data:
      if let application { attributes.append(.application(application)) } else { free.append(.application) }
      free += [.objectID, .value]
    }
    var expected = [AttributeType: AttributeExpectation]()
    for attribute in attributes { expected[attribute.type] = .equals(attribute) }
    for type in free { expected[type] = .anyValue }
    for type in secret { expected[type] = .unreadable }
    return expected
  }

  /// The template that creates the object: every settable expected value, `CKA_MODIFIABLE`
  /// last (SoftHSM applies attributes in order, and a usage flag after it would be refused).
  public var template: [Attribute] {
    let expectations = expectations
    var template = [Attribute]()
    for type in AttributePolicy.templateOrder {
      guard case .equals(let attribute) = expectations[type] else { continue }
      if AttributePolicy.computedAttributes.contains(type) { continue }
      if case .ecPrivateKey = kind, type == .ecParams { continue }
      template.append(attribute)
    }
    if case .equals(let modifiable) = expectations[.modifiable] { template.append(modifiable) }
    return template
  }
}

/// The attribute policy of every object Custos creates (DESIGN.md section 4): ONE table, with
/// each exception from the locked-down baseline and its reason. Key generation in ceremonies
/// takes its templates from here, and the checker compares devices against it.
///
/// Baseline of every token key: `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE` true; every usage
/// flag (`CKA_ENCRYPT`, `CKA_DECRYPT`, `CKA_SIGN`, `CKA_VERIFY`, `CKA_WRAP`, `CKA_UNWRAP`,
/// `CKA_DERIVE`, ...) false; `CKA_EXTRACTABLE` false; `CKA_COPYABLE`, `CKA_DESTROYABLE`,
/// `CKA_MODIFIABLE` false.
public enum AttributePolicy {
  static let vaultDerives =
    "the vault derives its working keys from it inside the token (CKM_AES_ECB_ENCRYPT_DATA), and only the vault holds the partition session"
  static let wrapOnlyUnderTrusted =
    "it must leave the token only wrapped under a domain key a Security Officer imported as trusted"

  /// Every row. A new kind of object is one more row.
  public static let table: [ObjectPolicy] = [
    ObjectPolicy(
      partition: "custody", label: "custos.master", kind: .aesKey(bytes: 32),
      purpose: "derives each wallet's sealing key",
      exceptions: [
        PolicyException(.derive(true), vaultDerives),
        PolicyException(
          .extractable(true),
          "backup to offline HSMs and cloning to standbys carry it, wrapped; \(wrapOnlyUnderTrusted)"),
        PolicyException(.neverExtractable(false), "follows from CKA_EXTRACTABLE true"),
        PolicyException(.wrapWithTrusted(true), wrapOnlyUnderTrusted),
      ]),
    ObjectPolicy(
      partition: "custody", label: "custos.sync", kind: .aesKey(bytes: 32),
      purpose: "derives the HMAC key of sync objects; the same value on every HSM of a cluster",
      exceptions: [
        PolicyException(.derive(true), vaultDerives),
        PolicyException(
          .extractable(true),
          "standbys of a cluster must hold the same value, so it is cloned wrapped; \(wrapOnlyUnderTrusted)"),
        PolicyException(.neverExtractable(false), "follows from CKA_EXTRACTABLE true"),
        PolicyException(.wrapWithTrusted(true), wrapOnlyUnderTrusted),
      ]),
    ObjectPolicy(
      partition: "custody", label: "custos.audit", kind: .aesKey(bytes: 32),
      purpose: "derives the MAC key of audit records",
      exceptions: [PolicyException(.derive(true), vaultDerives)]),
    ObjectPolicy(
      partition: "custody", application: "custos.root", kind: .data, cardinality: .exactly(2),
      purpose:
        "the vault's root state {epoch, leaf count, root}: two slots written in turn (CKA_VALUE names the slot, CKA_LABEL holds the state and its integrity tag)",
      exceptions: [
        PolicyException(
          .modifiable(true),
          "every commit rewrites the older slot's CKA_LABEL (a data object's CKA_VALUE is read-only after creation)"),
        PolicyException(
          .destroyable(true), "a slot whose object file was torn by a crash is destroyed and written afresh"),
      ]),
    ObjectPolicy(
      partition: "admin", label: "custos.codesign", kind: .ecPrivateKey(.p256),
      purpose: "signs the measurement of a vault build",
      exceptions: [
        PolicyException(.sign(true), "a Crypto Officer quorum has it sign vault build measurements in ceremonies")
      ]),
    ObjectPolicy(
      partition: "admin", label: "custos.codesign", kind: .ecPublicKey(.p256),
      purpose: "the public half of custos.codesign; signatures are checked in software from CKA_EC_POINT"),
    ObjectPolicy(
      partition: "admin", label: "custos.attest", kind: .ecPrivateKey(.p256),
      purpose: "signs attestations of the loaded vault measurement",
      exceptions: [
        PolicyException(.sign(true), "signs the attestation unseal key holders check before they unseal")
      ]),
    ObjectPolicy(
      partition: "admin", label: "custos.attest", kind: .ecPublicKey(.p256),
      purpose: "the public half of custos.attest; attestations are checked in software from CKA_EC_POINT"),
    ObjectPolicy(
      partition: OfficerToken.partitionName, label: OfficerToken.keyLabel, kind: .ecPrivateKey(.p256),
      purpose: "an officer's identity on their token (the emulated USB token with a PIN pad)",
      exceptions: [
        PolicyException(.sign(true), "signs ceremony step challenges and transcripts after the officer's PIN")
      ]),
    ObjectPolicy(
      partition: OfficerToken.partitionName, label: OfficerToken.keyLabel, kind: .ecPublicKey(.p256),
      purpose: "the public half of an officer's key, enrolled on devices",
      exceptions: [
        PolicyException(.private(false), "read without the officer's PIN to enrol them and to check their signatures")
      ]),
  ]

  /// The rows of one partition.
  public static func rows(partition: String) -> [ObjectPolicy] {
    table.filter { $0.partition == partition }
  }

  /// The rows for the key labelled `label` in `partition` (one for a secret key, two for a pair).
  public static func rows(key label: String, partition: String) -> [ObjectPolicy] {
    table.filter { $0.partition == partition && $0.label == label }
  }

  /// The attributes the checker reads of every object: every attribute HSMBridge names.
  public static let auditedAttributes: [AttributeType] = [
    .class, .token, .private, .label, .application, .value, .objectID, .keyType, .id, .subject, .sensitive,
    .encrypt, .decrypt, .wrap, .unwrap, .sign, .signRecover, .verify, .verifyRecover, .derive, .startDate,
    .endDate, .modulus, .modulusBits, .publicExponent, .privateExponent, .valueLength, .extractable, .local,
    .neverExtractable, .alwaysSensitive, .keyGenMechanism, .modifiable, .copyable, .destroyable, .ecParams,
    .ecPoint, .trusted, .wrapWithTrusted, .checkValue, .alwaysAuthenticate, .allowedMechanisms, .wrapTemplate,
    .unwrapTemplate, .publicKeyInfo,
  ]

  /// Attributes the token sets itself; never part of a template.
  static let computedAttributes: Set<AttributeType> = [
    .local, .alwaysSensitive, .neverExtractable, .keyGenMechanism, .modifiable, .trusted,
  ]

  /// The order attributes take in templates (`CKA_MODIFIABLE` is appended last).
  static let templateOrder: [AttributeType] = [
    .class, .keyType, .label, .application, .valueLength, .ecParams, .token, .private, .sensitive, .extractable,
    .encrypt, .decrypt, .sign, .signRecover, .verify, .verifyRecover, .wrap, .unwrap, .derive, .trusted,
    .wrapWithTrusted, .alwaysAuthenticate, .copyable, .destroyable,
  ]
}
