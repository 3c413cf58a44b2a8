import Custody

/// One named attack of the lockdown catalogue: what it tries, why it must fail, and the outcome
/// the audit expects when it runs it for real against every object (or partition) it applies to.
///
/// Built-in attacks live in `LockdownCatalogue.builtIn`; testers add their own in a JSON file
/// (`LockdownCatalogue.load(file:)`) with exactly the same fields, so both run through the same
/// engine and show in the same report.
public struct LockdownAttack: Hashable, Sendable, CustomStringConvertible {
  /// A short, unique, dotted name (`wrap.attacker-key`), shown in reports.
  public let id: String
  /// One line saying what the attack is.
  public let title: String
  /// What it tries, in PKCS #11 terms.
  public let tries: String
  /// Why it must fail (or, for what the token does not block, what holds instead).
  public let why: String
  /// The PKCS #11 operation the attack performs.
  public let operation: AttackOperation
  /// The mechanism the operation uses.
  public let mechanism: AttackMechanism
  /// For `set-attributes` and `copy`: the attributes the attacker asks for.
  public let template: AttackTemplate
  /// Which objects (or partitions) the attack runs against.
  public let target: AttackTarget
  /// The outcome its checks must observe to pass.
  public let expectation: AttackExpectation
  /// Where the attack came from: `built-in` or the file it was read from.
  public let source: String

  /// An attack; the defaults suit an operation run with each mechanism the partition offers,
  /// against every object of its natural classes.
  public init(
    id: String, title: String, tries: String, why: String, operation: AttackOperation,
    mechanism: AttackMechanism = .eachOffered, template: AttackTemplate = .none, target: AttackTarget = AttackTarget(),
    expectation: AttackExpectation, source: String = "built-in"
  ) {
    self.id = id
    self.title = title
    self.tries = tries
    self.why = why
    self.operation = operation
    self.mechanism = mechanism
    self.template = template
    self.target = target
    self.expectation = expectation
    self.source = source
  }

  /// Whether the attack could change the device if the token let it through: it then runs
  /// against a snapshot copy of the device, never the audited one.
  public var isDestructive: Bool { operation.isDestructive }

  public var description: String { "\(id): \(title)" }
}

/// What an attack does. Object operations run once per object the target selects (and per
/// mechanism or attribute variant); partition operations once per partition.
public enum AttackOperation: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
  /// `C_GetAttributeValue(CKA_VALUE)` of the key.
  case readValue = "read-value"
  /// `C_EncryptInit` with the key.
  case encryptInit = "encrypt-init"
  /// `C_DecryptInit` with the key.
  case decryptInit = "decrypt-init"
  /// `C_SignInit` with the key.
  case signInit = "sign-init"
  /// `C_VerifyInit` with the key.
  case verifyInit = "verify-init"
  /// `C_WrapKey` of the key under a wrapping key the attacker made (a session object).
  case wrap
  /// `C_DeriveKey` from the key into an extractable, non-sensitive session key, then
  /// `C_GetAttributeValue(CKA_VALUE)` of the derived key.
  case derive
  /// `C_SetAttributeValue` of the template on the key (destructive).
  case setAttributes = "set-attributes"
  /// `C_CopyObject` of the key with the template (destructive).
  case copy
  /// `C_DestroyObject` of the key (destructive).
  case destroy
  /// Clulow's wrap/decrypt pair: wrap the key under an attacker key that may also decrypt, then
  /// decrypt the wrapped bytes to get the key in clear.
  case clulowWrapDecrypt = "clulow-wrap-decrypt"
  /// Clulow's encrypt/unwrap pair: encrypt a value the attacker knows, unwrap it as a wrapping
  /// key of known value, then wrap the key under it.
  case clulowEncryptUnwrap = "clulow-encrypt-unwrap"
  /// The Security Officer makes a trusted wrapping key whose private half the attacker holds;
  /// the User wraps the key under it and decrypts (destructive: logs in as SO).
  case trustedImport = "trusted-import"
  /// `C_FindObjects` from a session nobody logged in to.
  case enumeratePublic = "enumerate-public"
  /// `C_FindObjects` from a Security Officer session.
  case enumerateSecurityOfficer = "enumerate-so"
  /// `C_CreateObject` of a session key with `CKA_TRUSTED` true, logged in as the User.
  case createTrusted = "create-trusted"
  /// An attacker-made key used with each mechanism HSMBridge speaks that the partition's
  /// allow-list leaves out (`C_EncryptInit`, `C_SignInit`, `C_WrapKey`, `C_DeriveKey`).
  case useOutsideAllowList = "use-outside-allow-list"
  /// `C_EncryptInit` with the public half of an attacker-made key pair, with each asymmetric
  /// encryption mechanism the allow-list leaves out.
  case publicEncryptOutsideAllowList = "public-encrypt-outside-allow-list"
  /// `C_GenerateKey`/`C_GenerateKeyPair` of a session key (with the mechanism, or each key
  /// generation mechanism outside the allow-list).
  case generate
  /// `C_Digest` (with the mechanism, or each digest outside the allow-list).
  case digest

  /// Whether the operation runs once per object (else once per partition).
  public var isObjectOperation: Bool {
    switch self {
    case .enumeratePublic, .enumerateSecurityOfficer, .createTrusted, .useOutsideAllowList,
      .publicEncryptOutsideAllowList, .generate, .digest:
      false
    default: true
    }
  }

  /// Whether the operation could change the device if the token let it through.
  public var isDestructive: Bool {
    switch self {
    case .setAttributes, .copy, .destroy, .trustedImport: true
    default: false
    }
  }

  /// The mechanism usage (`C_GetMechanismInfo` flag name) that "each offered mechanism" means
  /// for this operation; nil when it takes no mechanism from the partition's list.
  var usage: String? {
    switch self {
    case .encryptInit: "encrypt"
    case .decryptInit: "decrypt"
    case .signInit: "sign"
    case .verifyInit: "verify"
    case .wrap: "wrap"
    case .derive: "derive"
    default: nil
    }
  }

  /// The object classes the operation applies to when the target does not say.
  var defaultClasses: [ObjectClass] {
    switch self {
    case .readValue, .decryptInit, .signInit, .derive, .wrap, .clulowWrapDecrypt, .clulowEncryptUnwrap,
      .trustedImport:
      [.secretKey, .privateKey]
    case .encryptInit, .verifyInit: [.secretKey, .publicKey]
    case .setAttributes, .copy, .destroy: [.secretKey, .privateKey, .publicKey, .data]
    default: []
    }
  }

  public var description: String { rawValue }
}

/// The mechanism an attack uses.
public enum AttackMechanism: Hashable, Sendable, CustomStringConvertible {
  /// Every mechanism the partition offers for the operation (by its `C_GetMechanismInfo`
  /// flags), one check each.
  case eachOffered
  /// Every mechanism HSMBridge speaks that the partition's allow-list leaves out.
  case eachOutsideAllowList
  /// This one mechanism, offered or not.
  case named(MechanismType)
  /// The operation needs none.
  case none

  public var description: String {
    switch self {
    case .eachOffered: "each offered"
    case .eachOutsideAllowList: "each outside the allow-list"
    case .named(let type): type.name
    case .none: "-"
    }
  }
}

/// The attributes a `set-attributes` or `copy` attack asks for.
public enum AttackTemplate: Hashable, Sendable, CustomStringConvertible {
  case none
  /// Exactly these attributes, in one call.
  case fixed([Attribute])
  /// Each usage flag (`CKA_ENCRYPT`, `CKA_SIGN`, ...) of the object's class that the policy
  /// table has false, switched on one at a time.
  case usageFlagsOn
  /// Each protection the policy table gives the object weakened one at a time:
  /// `CKA_SENSITIVE` false, `CKA_EXTRACTABLE` true, `CKA_WRAP_WITH_TRUSTED` false.
  case weakenProtections

  public var description: String {
    switch self {
    case .none: "-"
    case .fixed(let attributes): attributes.map(\.description).joined(separator: ", ")
    case .usageFlagsOn: "each usage flag the policy has false, set true"
    case .weakenProtections: "CKA_SENSITIVE false / CKA_EXTRACTABLE true / CKA_WRAP_WITH_TRUSTED false"
    }
  }
}

/// Which objects (or partitions) an attack runs against. Empty fields select everything.
public struct AttackTarget: Hashable, Sendable, CustomStringConvertible {
  /// Only this partition.
  public var partition: String?
  /// Only objects with this `CKA_LABEL`.
  public var label: String?
  /// Only these classes (empty: the operation's natural classes, e.g. secret and private keys
  /// for `read-value`).
  public var classes: [ObjectClass]
  /// Only objects whose row of the attribute policy expects these boolean values (e.g.
  /// `CKA_WRAP_WITH_TRUSTED` true). An object no row covers never matches a non-empty filter.
  public var policy: [AttributeType: Bool]

  /// A selector; every field left empty selects everything.
  public init(
    partition: String? = nil, label: String? = nil, classes: [ObjectClass] = [], policy: [AttributeType: Bool] = [:]
  ) {
    self.partition = partition
    self.label = label
    self.classes = classes
    self.policy = policy
  }

  public var description: String {
    var parts = [String]()
    if let partition { parts.append("partition \(partition)") }
    if let label { parts.append("label \(label)") }
    if !classes.isEmpty { parts.append(classes.map(\.name).joined(separator: "|")) }
    for (type, value) in policy.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
      parts.append("policy \(type)=\(value)")
    }
    return parts.isEmpty ? "every applicable object" : parts.joined(separator: ", ")
  }
}

/// The outcome an attack must have for its check to pass.
public enum AttackExpectation: Hashable, Sendable, CustomStringConvertible {
  /// The token refuses it with one of these codes.
  case refused([ReturnValue])
  /// The token does not block it; `mitigation` is what holds instead. The check passes when
  /// the attack does go through as documented (and fails if the token's behaviour changed).
  case notBlocked(mitigation: String)
  /// Nothing is visible (`C_FindObjects` finds no object).
  case nothingVisible
  /// Refused with one of the codes, unless the object's row of the policy table grants the
  /// usage attribute (an exception with its reason): then the token permits it, and
  /// `mitigation`, when given, is what holds instead.
  case refusedUnlessGranted(AttributeType, [ReturnValue], mitigation: String?)

  public var description: String {
    switch self {
    case .refused(let codes): "refused with \(codes.map(\.name).joined(separator: " or "))"
    case .notBlocked(let mitigation): "not blocked by the token; instead: \(mitigation)"
    case .nothingVisible: "no object visible"
    case .refusedUnlessGranted(let usage, let codes, let mitigation):
      "refused with \(codes.map(\.name).joined(separator: " or ")), unless the policy table grants \(usage) "
        + (mitigation.map { "(then not blocked by the token; instead: \($0))" } ?? "(then permitted, for its reason)")
    }
  }
}
