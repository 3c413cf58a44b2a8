import Custody
import Foundation

/// The one catalogue of attacks the lockdown audit runs: the built-in entries below, plus any a
/// tester adds from a JSON file.
///
/// Each entry is run for real against every object (or partition) it applies to, on the audited
/// device when it cannot change anything, on a snapshot copy when it could (`isDestructive`).
public enum LockdownCatalogue {
  /// What holds instead where a key with `CKA_DERIVE` lets its holder derive an extractable key.
  public static let partitionPINsMitigation =
    "the partition PINs are device-internal secrets, derived (HKDF-SHA256) from the activation secret that only the unsealed vault holds; nobody types them, so only the vault's own session can call C_DeriveKey, and the vault always asks for a sensitive, non-extractable session key"
  /// What holds instead where both PINs let a trusted wrapping key be made and used.
  public static let bothPINsMitigation =
    "it takes both the partition's SO PIN and its User PIN, device-internal secrets derived from the activation secret; Custos makes a trusted key only in the backup ceremony, where a Security Officer imports a backup device's domain key and a Crypto Officer quorum authorises the wrap"
  /// What holds instead where SoftHSM does not apply the allow-list.
  public static let allowListMitigation =
    "a key made so is usable only through the partition's allowed mechanisms (C_EncryptInit, C_DecryptInit, C_SignInit, C_VerifyInit, C_WrapKey and C_DeriveKey enforce the allow-list), and only by whoever holds the partition PIN: the vault"
  static let publicKeyMitigation =
    "encrypting under a public key uses no secret: anyone holding the public value does the same in software, and it neither reveals nor uses a key of the partition"
  static let digestMitigation = "a digest uses no key and reveals nothing its caller did not give it"

  static let rootSlotMitigation =
    "destroying a root-state slot only stops the vault: it never starts a fresh root, so it refuses to serve rather than roll wallets back; and the User PIN this needs is held by the vault alone"

  static let usageOff: [ReturnValue] = [.keyFunctionNotPermitted]
  static let notExtractable: [ReturnValue] = [.keyUnextractable, .keyNotWrappable]

  /// The built-in attacks, in the order they run and are listed.
  public static let builtIn: [LockdownAttack] = [
    LockdownAttack(
      id: "read.value", title: "Read a key's value",
      tries: "C_GetAttributeValue(CKA_VALUE) of every secret and private key",
      why: "every key is CKA_SENSITIVE: its value never leaves the token in clear", operation: .readValue,
      mechanism: .none, expectation: .refused([.attributeSensitive])),
    LockdownAttack(
      id: "use.encrypt", title: "Encrypt with a key",
      tries: "C_EncryptInit with every mechanism the partition offers for encryption, for every secret and public key",
      why: "CKA_ENCRYPT is false on every key: the vault never uses a token key directly", operation: .encryptInit,
      expectation: .refusedUnlessGranted(.encrypt, usageOff, mitigation: nil)),
    LockdownAttack(
      id: "use.decrypt", title: "Decrypt with a key",
      tries: "C_DecryptInit with every mechanism the partition offers for decryption, for every secret and private key",
      why: "CKA_DECRYPT is false on every key", operation: .decryptInit,
      expectation: .refusedUnlessGranted(.decrypt, usageOff, mitigation: nil)),
    LockdownAttack(
      id: "use.sign", title: "Sign or MAC with a key",
      tries: "C_SignInit with every mechanism the partition offers for signing, for every secret and private key",
      why:
        "CKA_SIGN is false on every key except the admin keys the policy table lets sign in ceremonies (custos.codesign, custos.attest)",
      operation: .signInit, expectation: .refusedUnlessGranted(.sign, usageOff, mitigation: nil)),
    LockdownAttack(
      id: "use.verify", title: "Verify with a key",
      tries: "C_VerifyInit with every mechanism the partition offers for verification, for every secret and public key",
      why: "CKA_VERIFY is false on every key: admin signatures are checked in software from CKA_EC_POINT",
      operation: .verifyInit, expectation: .refusedUnlessGranted(.verify, usageOff, mitigation: nil)),
    LockdownAttack(
      id: "wrap.attacker-key", title: "Export a key wrapped under a key the attacker made",
      tries:
        "C_WrapKey of every secret and private key under an attacker-made session key, with every mechanism the partition offers for wrapping",
      why:
        "keys are CKA_EXTRACTABLE false, or (master, sync) CKA_WRAP_WITH_TRUSTED true, which only a trusted key satisfies",
      operation: .wrap, expectation: .refused(notExtractable)),
    LockdownAttack(
      id: "wrap.trusted-only", title: "Export a wrap-with-trusted key under an untrusted key",
      tries: "C_WrapKey of every key the policy makes CKA_WRAP_WITH_TRUSTED under an attacker-made (untrusted) key",
      why: "CKA_WRAP_WITH_TRUSTED true: the token wraps the key only under a key with CKA_TRUSTED true",
      operation: .wrap, target: AttackTarget(policy: [.wrapWithTrusted: true]),
      expectation: .refused([.keyNotWrappable])),
    LockdownAttack(
      id: "clulow.wrap-decrypt", title: "Clulow: wrap under an attacker key, then decrypt",
      tries:
        "an attacker-made key that may both wrap and decrypt (each offered mechanism with both usages): C_WrapKey of the key under it, then C_Decrypt of the wrapped bytes",
      why: "the first step, C_WrapKey, is refused: the key is not extractable, or only under a trusted key",
      operation: .clulowWrapDecrypt, expectation: .refused(notExtractable)),
    LockdownAttack(
      id: "clulow.encrypt-unwrap", title: "Clulow: import a wrapping key of known value, then wrap under it",
      tries:
        "C_Encrypt of a value the attacker knows under an attacker key, C_UnwrapKey of it as a wrapping key (its value read back), then C_WrapKey of the key under that known key",
      why: "the last step, C_WrapKey, is refused: the key is not extractable, or only under a trusted key",
      operation: .clulowEncryptUnwrap, expectation: .refused(notExtractable)),
    LockdownAttack(
      id: "derive.extractable", title: "Derive an extractable key from a key",
      tries:
        "C_DeriveKey from every secret and private key, with every mechanism the partition offers for derivation, into a non-sensitive, extractable session key; then C_GetAttributeValue(CKA_VALUE) of it",
      why:
        "keys without CKA_DERIVE refuse; SoftHSM lets the caller choose a derived key's template, so a key with CKA_DERIVE (master, sync, audit) is an encryption oracle for whoever holds the partition PIN",
      operation: .derive,
      expectation: .refusedUnlessGranted(.derive, usageOff, mitigation: partitionPINsMitigation)),
    LockdownAttack(
      id: "modify.usage-on", title: "Switch a usage flag back on",
      tries: "C_SetAttributeValue of each usage flag the policy table has false (CKA_ENCRYPT, CKA_SIGN, ...) to true",
      why: "CKA_MODIFIABLE is false on every object (set last in every template)", operation: .setAttributes,
      mechanism: .none, template: .usageFlagsOn, expectation: .refused([.actionProhibited])),
    LockdownAttack(
      id: "modify.weaken", title: "Weaken a key's protections",
      tries: "C_SetAttributeValue of CKA_SENSITIVE false, CKA_EXTRACTABLE true, CKA_WRAP_WITH_TRUSTED false",
      why:
        "CKA_MODIFIABLE is false; and PKCS #11 makes these attributes one-way (sensitive stays sensitive, unextractable stays unextractable)",
      operation: .setAttributes, mechanism: .none, template: .weakenProtections,
      target: AttackTarget(classes: [.secretKey, .privateKey]),
      expectation: .refused([.actionProhibited, .attributeReadOnly])),
    LockdownAttack(
      id: "copy.weakened", title: "Copy a key with weaker attributes",
      tries: "C_CopyObject of every secret and private key with CKA_SENSITIVE false, CKA_EXTRACTABLE true",
      why: "CKA_COPYABLE is false on every object", operation: .copy, mechanism: .none,
      template: .fixed([.token(false), .sensitive(false), .extractable(true)]),
      target: AttackTarget(classes: [.secretKey, .privateKey]), expectation: .refused([.actionProhibited])),
    LockdownAttack(
      id: "copy.to-public", title: "Copy a private object to a public one",
      tries: "C_CopyObject of every object with CKA_PRIVATE false, so it shows without a login",
      why: "CKA_COPYABLE is false on every object", operation: .copy, mechanism: .none,
      template: .fixed([.token(false), .private(false)]), expectation: .refused([.actionProhibited])),
    LockdownAttack(
      id: "destroy", title: "Destroy an object", tries: "C_DestroyObject of every object",
      why: "CKA_DESTROYABLE is false on every key", operation: .destroy, mechanism: .none,
      expectation: .refusedUnlessGranted(.destroyable, [.actionProhibited], mitigation: rootSlotMitigation)),
    LockdownAttack(
      id: "enumerate.public", title: "List objects without logging in",
      tries: "C_FindObjects with an empty template from a session nobody logged in to",
      why: "every object is CKA_PRIVATE: without the User PIN nothing shows", operation: .enumeratePublic,
      mechanism: .none, expectation: .nothingVisible),
    LockdownAttack(
      id: "enumerate.so", title: "List objects as the Security Officer",
      tries: "C_FindObjects with an empty template from a session logged in as SO",
      why: "the SO sees only public objects, and every object is CKA_PRIVATE", operation: .enumerateSecurityOfficer,
      mechanism: .none, expectation: .nothingVisible),
    LockdownAttack(
      id: "create.trusted-as-user", title: "Make a trusted wrapping key as the User",
      tries: "C_CreateObject of a session AES key with CKA_TRUSTED true and CKA_WRAP true, logged in as the User",
      why: "only the SO may set CKA_TRUSTED; otherwise the User could make a key that wrap-with-trusted keys accept",
      operation: .createTrusted, mechanism: .none, expectation: .refused([.attributeReadOnly])),
    LockdownAttack(
      id: "trusted-import", title: "Wrap a wrap-with-trusted key under an SO-made trusted key",
      tries:
        "as the SO, C_CreateObject of a trusted RSA public key whose private half the attacker made; as the User, C_WrapKey of each wrap-with-trusted key under it (RSA-OAEP) and C_Decrypt with the private half",
      why:
        "this is the backup path itself (DESIGN.md section 9): the token cannot tell a backup ceremony from an attacker holding both PINs",
      operation: .trustedImport, target: AttackTarget(policy: [.wrapWithTrusted: true]),
      expectation: .notBlocked(mitigation: bothPINsMitigation)),
    LockdownAttack(
      id: "allow-list.use", title: "Use a mechanism outside the partition's allow-list",
      tries:
        "an attacker-made key with every usage, with each mechanism HSMBridge speaks that the allow-list leaves out: a secret key at its first call (C_EncryptInit, C_SignInit, C_WrapKey or C_DeriveKey); a key pair at C_DecryptInit and C_SignInit with its private half, C_VerifyInit and C_WrapKey with its public half",
      why: "SoftHSM applies slots.mechanisms to these calls", operation: .useOutsideAllowList,
      mechanism: .eachOutsideAllowList, expectation: .refused([.mechanismInvalid])),
    LockdownAttack(
      id: "allow-list.public-encrypt", title: "Encrypt under a public key with a mechanism outside the allow-list",
      tries:
        "C_EncryptInit with the public half of an attacker-made RSA key pair, with each RSA encryption mechanism the allow-list leaves out",
      why: "measured: SoftHSM 2.6.1 does not apply slots.mechanisms to encryption with a public key",
      operation: .publicEncryptOutsideAllowList, mechanism: .eachOutsideAllowList,
      expectation: .notBlocked(mitigation: publicKeyMitigation)),
    LockdownAttack(
      id: "allow-list.generate", title: "Generate a key with a mechanism outside the allow-list",
      tries:
        "C_GenerateKey/C_GenerateKeyPair of a session key with each generation mechanism the allow-list leaves out",
      why: "SoftHSM does not apply slots.mechanisms to key generation", operation: .generate,
      mechanism: .eachOutsideAllowList, expectation: .notBlocked(mitigation: allowListMitigation)),
    LockdownAttack(
      id: "allow-list.digest", title: "Digest with a mechanism outside the allow-list",
      tries: "C_Digest with each digest mechanism the allow-list leaves out",
      why: "SoftHSM does not apply slots.mechanisms to digests", operation: .digest,
      mechanism: .eachOutsideAllowList, expectation: .notBlocked(mitigation: digestMitigation)),
  ]

  /// The `format` every attacks file declares.
  public static let fileFormat = "custos-lockdown-attacks"
  /// The version of the attacks file format this build reads.
  public static let fileVersion = 1

  /// Reads a tester's attacks file (format below); every error names the attack and the field.
  ///
  /// ```json
  /// {
  ///   "format": "custos-lockdown-attacks", "version": 1,
  ///   "attacks": [{
  ///     "id": "tester.cbc-master", "title": "...", "tries": "...", "why": "...",
  ///     "operation": "encrypt-init",
  ///     "mechanism": "CKM_AES_CBC",
  ///     "attributes": {"CKA_ENCRYPT": true},
  ///     "target": {"partition": "custody", "label": "custos.master", "class": ["CKO_SECRET_KEY"],
  ///                "policy": {"CKA_DERIVE": true}},
  ///     "expect": {"refused": ["CKR_KEY_FUNCTION_NOT_PERMITTED"]}
  ///   }]
  /// }
  /// ```
  ///
  /// `operation` is one of `AttackOperation`'s names. `mechanism` is a `CKM_` name, `each`
  /// (every mechanism the partition offers for the operation, the default) or
  /// `each-outside-allow-list`. `attributes` (for `set-attributes` and `copy`) maps boolean
  /// `CKA_` names to values, or is `usage-flags-on` or `weaken-protections`. `target` fields are
  /// optional. `expect` is `{"refused": [CKR names]}`, `{"not-blocked": "mitigation"}`,
  /// `{"nothing-visible": true}`, or `{"refused": [...], "unless-policy-grants": "CKA_SIGN"}`
  /// with an optional `"mitigation"`.
  public static func load(file path: String, existing: [LockdownAttack] = builtIn) throws -> [LockdownAttack] {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw HSMBridgeError(.attacksInvalid, "no attacks file at \(path)")
    }
    return try parse(data, path: path, existing: existing)
  }

  /// Parses an attacks file's bytes (see `load(file:)`).
  public static func parse(_ data: Data, path: String, existing: [LockdownAttack] = builtIn) throws -> [LockdownAttack]
  {
    func fail(_ reason: String) -> HSMBridgeError { HSMBridgeError(.attacksInvalid, "\(path): \(reason)") }
    guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
      throw fail("not a JSON object")
    }
    let unknownTop = Set(root.keys).subtracting(["format", "version", "attacks"])
    guard unknownTop.isEmpty else { throw fail("unknown field(s) \(unknownTop.sorted().joined(separator: ", "))") }
    guard root["format"] as? String == fileFormat, (root["version"] as? NSNumber)?.intValue == fileVersion else {
      throw fail("'format' must be \"\(fileFormat)\" and 'version' \(fileVersion)")
    }
    guard let entries = root["attacks"] as? [[String: Any]] else { throw fail("'attacks' must be a list of objects") }
    var ids = Set(existing.map(\.id))
    var attacks = [LockdownAttack]()
    for (index, entry) in entries.enumerated() {
      let name = (entry["id"] as? String).map { "attack '\($0)'" } ?? "attack \(index + 1)"
      func bad(_ reason: String) -> HSMBridgeError { fail("\(name): \(reason)") }
      let allowed: Set<String> = [
        "id", "title", "tries", "why", "operation", "mechanism", "attributes", "target", "expect",
      ]
      let unknown = Set(entry.keys).subtracting(allowed)
      guard unknown.isEmpty else { throw bad("unknown field(s) \(unknown.sorted().joined(separator: ", "))") }
      func text(_ key: String) throws -> String {
        guard let value = entry[key] as? String, !value.trimmingCharacters(in: .whitespaces).isEmpty else {
          throw bad("'\(key)' must be a non-empty string")
        }
        return value
      }
      let id = try text("id")
      guard ids.insert(id).inserted else { throw bad("the id is already in the catalogue") }
      guard let operationName = entry["operation"] as? String, let operation = AttackOperation(rawValue: operationName)
      else {
        throw bad(
          "'operation' must be one of \(AttackOperation.allCases.map(\.rawValue).joined(separator: ", "))")
      }
      let mechanism = try parseMechanism(entry["mechanism"], operation: operation, bad: bad)
      let template = try parseTemplate(entry["attributes"], operation: operation, bad: bad)
      let target = try parseTarget(entry["target"], bad: bad)
      let expectation = try parseExpectation(entry["expect"], bad: bad)
      attacks.append(
        LockdownAttack(
          id: id, title: try text("title"), tries: try text("tries"), why: try text("why"), operation: operation,
          mechanism: mechanism, template: template, target: target, expectation: expectation, source: path))
    }
    return attacks
  }

  private static func parseMechanism(
    _ value: Any?, operation: AttackOperation, bad: (String) -> HSMBridgeError
  ) throws -> AttackMechanism {
    let takesMechanism: Set<AttackOperation> = [
      .encryptInit, .decryptInit, .signInit, .verifyInit, .wrap, .derive, .clulowWrapDecrypt, .clulowEncryptUnwrap,
      .trustedImport, .useOutsideAllowList, .publicEncryptOutsideAllowList, .generate, .digest,
    ]
    guard let value else {
      if !takesMechanism.contains(operation) { return .none }
      return [.useOutsideAllowList, .publicEncryptOutsideAllowList, .generate, .digest].contains(operation)
        ? .eachOutsideAllowList : .eachOffered
    }
    guard takesMechanism.contains(operation) else { throw bad("'\(operation)' takes no 'mechanism'") }
    guard let text = value as? String else {
      throw bad("'mechanism' must be a CKM_ name, each or each-outside-allow-list")
    }
    switch text {
    case "each":
      guard operation.usage != nil || [.clulowWrapDecrypt, .clulowEncryptUnwrap, .trustedImport].contains(operation)
      else { throw bad("'\(operation)' has no mechanism usage to take 'each' from; name a mechanism") }
      return .eachOffered
    case "each-outside-allow-list": return .eachOutsideAllowList
    default:
      guard let type = MechanismType(name: text) else { throw bad("unknown mechanism '\(text)'") }
      return .named(type)
    }
  }

  private static func parseTemplate(
    _ value: Any?, operation: AttackOperation, bad: (String) -> HSMBridgeError
  ) throws -> AttackTemplate {
    let takesTemplate = operation == .setAttributes || operation == .copy
    guard let value else {
      if takesTemplate { throw bad("'\(operation)' needs 'attributes'") }
      return .none
    }
    guard takesTemplate else { throw bad("'\(operation)' takes no 'attributes'") }
    if let text = value as? String {
      switch text {
      case "usage-flags-on": return .usageFlagsOn
      case "weaken-protections": return .weakenProtections
      default: throw bad("'attributes' must be an object of CKA_ names, usage-flags-on or weaken-protections")
      }
    }
    guard let map = value as? [String: Any], !map.isEmpty else {
      throw bad("'attributes' must be a non-empty object of boolean CKA_ attributes")
    }
    return .fixed(
      try map.keys.sorted().map { name in
        guard let type = AttributeType(name: name), let flag = map[name] as? Bool,
          let attribute = Attribute.boolean(type, flag)
        else { throw bad("'attributes': \(name) must be a boolean CKA_ attribute with true or false") }
        return attribute
      })
  }

  private static func parseTarget(_ value: Any?, bad: (String) -> HSMBridgeError) throws -> AttackTarget {
    guard let value else { return AttackTarget() }
    guard let map = value as? [String: Any] else { throw bad("'target' must be an object") }
    let unknown = Set(map.keys).subtracting(["partition", "label", "class", "policy"])
    guard unknown.isEmpty else {
      throw bad("'target' has unknown field(s) \(unknown.sorted().joined(separator: ", "))")
    }
    var target = AttackTarget()
    if let partition = map["partition"] {
      guard let text = partition as? String else { throw bad("'target.partition' must be a string") }
      target.partition = text
    }
    if let label = map["label"] {
      guard let text = label as? String else { throw bad("'target.label' must be a string") }
      target.label = text
    }
    if let classes = map["class"] {
      let names = (classes as? [String]) ?? (classes as? String).map { [$0] }
      guard let names, !names.isEmpty else { throw bad("'target.class' must be a CKO_ name or a list of them") }
      target.classes = try names.map {
        guard let objectClass = ObjectClass(name: $0) else { throw bad("'target.class': unknown class '\($0)'") }
        return objectClass
      }
    }
    if let policy = map["policy"] {
      guard let filter = policy as? [String: Any] else { throw bad("'target.policy' must map CKA_ names to booleans") }
      for (name, flag) in filter {
        guard let type = AttributeType(name: name), let bool = flag as? Bool, Attribute.boolean(type, bool) != nil
        else {
          throw bad("'target.policy': \(name) must be a boolean CKA_ attribute with true or false")
        }
        target.policy[type] = bool
      }
    }
    return target
  }

  private static func parseExpectation(_ value: Any?, bad: (String) -> HSMBridgeError) throws -> AttackExpectation {
    guard let map = value as? [String: Any] else {
      throw bad(
        "'expect' must be {\"refused\": [CKR names]}, {\"not-blocked\": \"mitigation\"} or {\"nothing-visible\": true}")
    }
    let unknown = Set(map.keys).subtracting([
      "refused", "not-blocked", "nothing-visible", "unless-policy-grants", "mitigation",
    ])
    guard unknown.isEmpty else {
      throw bad("'expect' has unknown field(s) \(unknown.sorted().joined(separator: ", "))")
    }
    if let mitigation = map["not-blocked"] {
      guard map.count == 1, let text = mitigation as? String, !text.isEmpty else {
        throw bad("'expect.not-blocked' must be the only field, a sentence saying what holds instead")
      }
      return .notBlocked(mitigation: text)
    }
    if let flag = map["nothing-visible"] {
      guard map.count == 1, flag as? Bool == true else { throw bad("'expect.nothing-visible' must be true, alone") }
      return .nothingVisible
    }
    guard let names = map["refused"] as? [String], !names.isEmpty else {
      throw bad("'expect.refused' must be a non-empty list of CKR_ names")
    }
    let codes = try names.map {
      guard let code = ReturnValue(name: $0) else { throw bad("'expect.refused': unknown return value '\($0)'") }
      return code
    }
    if let grant = map["unless-policy-grants"] {
      guard let name = grant as? String, let type = AttributeType(name: name), type.encoding == .bool else {
        throw bad("'expect.unless-policy-grants' must name a boolean CKA_ attribute")
      }
      let mitigation = map["mitigation"] as? String
      if map["mitigation"] != nil && mitigation == nil { throw bad("'expect.mitigation' must be a string") }
      return .refusedUnlessGranted(type, codes, mitigation: mitigation)
    }
    guard map["mitigation"] == nil else { throw bad("'expect.mitigation' goes with 'unless-policy-grants'") }
    return .refused(codes)
  }
}
