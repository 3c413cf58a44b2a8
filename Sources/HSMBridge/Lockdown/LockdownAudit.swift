import Custody
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// The lockdown audit: proves to a tester that no key of an activated device can be used, read,
/// copied, changed or enumerated from outside the vault, by checking three layers.
///
/// - Policy: every attribute of every object of every partition against the attribute policy
///   table (an object the table does not know fails), and each partition's mechanisms against
///   its allow-list.
/// - Attacks: every entry of the catalogue run for real against every object it applies to,
///   with the `CKR_` code observed compared with the expectation. Attacks that could change the
///   device run against a snapshot copy of its directory, opened as a device of its own.
///   Attacker-made keys are session objects.
/// - File system: the device directory and its files not open to others; no key value in
///   plaintext in a token store (a scratch device with keys of known value is scanned); no
///   partition PIN in any file of the device.
public final class LockdownAudit {
  public let device: Device
  public let activation: DeviceActivation
  public let attacks: [LockdownAttack]
  private let logger: Logger

  /// - Parameters:
  ///   - device: the device, open (so locked) by the caller.
  ///   - activation: its partition PINs, from an unseal quorum.
  ///   - attacks: the catalogue to run (the built-in one, plus a tester's).
  public init(
    device: Device, activation: DeviceActivation, attacks: [LockdownAttack] = LockdownCatalogue.builtIn,
    logger: Logger
  ) {
    self.device = device
    self.activation = activation
    self.attacks = attacks
    self.logger = logger
  }

  /// Runs every check. Throws only when the audit itself cannot proceed (a partition that does
  /// not open with the activation's PINs, a file-system failure); every departure found is a
  /// failed check in the report.
  public func run() throws -> LockdownReport {
    var checks = [permissionsCheck()]
    var notApplicable = [String]()
    let work = try Device.makeSiblingDirectory(next: device.directory, purpose: "lockdown")
    defer { try? FileManager.default.removeItem(atPath: work) }

    for entry in device.manifest.partitions {
      let run = try PartitionAttackRun(
        device: device, entry: entry, pins: try activation.pins(entry.name), onSnapshot: false, logger: logger)
      checks += try run.runOnDevice(attacks.filter { !$0.isDestructive })
      notApplicable += run.notApplicable
    }

    let destructive = attacks.filter(\.isDestructive)
    var snapshotNote = "no attack of the catalogue could change the device, so none needed a snapshot"
    if !destructive.isEmpty {
      let snapshotPath = work + "/snapshot"
      try withExtendedLifetime(try device.snapshot(to: snapshotPath, logger: logger)) { snapshot in
        for entry in snapshot.manifest.partitions {
          let run = try PartitionAttackRun(
            device: snapshot, entry: entry, pins: try activation.pins(entry.name), onSnapshot: true, logger: logger)
          checks += try run.runOnSnapshot(destructive)
          notApplicable += run.notApplicable
        }
      }
      snapshotNote =
        "destructive attacks (\(Set(destructive.map(\.id)).sorted().joined(separator: ", "))) ran against a snapshot copy of the device directory at \(snapshotPath), opened as its own device with the same PINs and removed after the audit; they never touched the audited device"
    }

    checks.append(try plaintextCheck(scratch: work + "/scratch"))
    checks.append(pinsCheck())
    logger.info(
      "lockdown audit finished",
      metadata: [
        "hsm.device": "\(device.directory)", "lockdown.checks": "\(checks.count)",
        "lockdown.failed": "\(checks.filter { $0.verdict == .fail }.count)",
      ])
    return LockdownReport(
      device: device.manifest.name, serial: device.manifest.serial, directory: device.directory, snapshot: snapshotNote,
      attacks: attacks.map(\.id), notApplicable: notApplicable, checks: checks)
  }

  // MARK: File system

  private func permissionsCheck() -> LockdownCheck {
    let expected = "the directory 0700, owned by uid \(getuid()); nothing inside open to group or others"
    guard let permissions = try? DevicePermissions.inspect(device.directory) else {
      return LockdownCheck(
        layer: .fileSystem, check: "fs.permissions", subject: device.directory, expected: expected,
        observed: "cannot read the directory's mode", verdict: .fail, onSnapshot: false)
    }
    var observed = "mode \(String(permissions.mode, radix: 8)), owner uid \(permissions.owner)"
    observed +=
      permissions.exposed.isEmpty
      ? "; nothing open to group or others" : "; open to others: \(permissions.exposed.joined(separator: ", "))"
    return LockdownCheck(
      layer: .fileSystem, check: "fs.permissions", subject: device.directory, expected: expected, observed: observed,
      verdict: permissions.isPrivate ? .pass : .fail, onSnapshot: false)
  }

  /// Creates a scratch device with an AES key and an EC private key of known value (sensitive,
  /// private token objects) and a public data object of known value (the control: SoftHSM
  /// stores public objects in clear, so the scan must find it), then scans the token store.
  private func plaintextCheck(scratch directory: String) throws -> LockdownCheck {
    let expected =
      "neither known key value (bytes, hex or HEX) in any token file; the control (a public data object's value) found, proving the scan sees plaintext"
    let userPIN = SecretBytes.random(count: 16).hexEncoded()
    let scratch = try Device.create(
      at: directory, name: "lockdown-scratch",
      partitions: [
        PartitionSetup(
          name: "scratch", soPIN: SecretBytes.random(count: 16).hexEncoded(), userPIN: userPIN,
          allowList: MechanismAllowList.forPartition("default"))
      ], logger: logger)
    let aesValue = SecretBytes.random(count: 32)
    // A P-256 scalar below the group order: its first byte is kept under 0x7F.
    let ecScalar = SecretBytes.random(count: 32).withUnsafeBytes { raw in
      SecretBytes(count: 32) { out in
        for index in 0..<32 { out[index] = raw[index] }
        out[0] = (out[0] & 0x7F) | 0x01
      }
    }
    let control = SecretBytes.random(count: 32)
    do {
      let session = try scratch.partition("scratch").openSession(readWrite: true)
      try session.login(.user, pin: userPIN)
      func value(_ secret: SecretBytes) -> Attribute { .value(secret.withUnsafeBytes { Array($0) }) }
      _ = try session.createObject([
        .class(.secretKey), .keyType(.aes), .label("lockdown.known-aes"), .token(true), .private(true),
        .sensitive(true), .extractable(false), value(aesValue),
      ])
      _ = try session.createObject([
        .class(.privateKey), .keyType(.ec), .label("lockdown.known-ec"), .ecParams(ECCurve.p256.parameters),
        .token(true), .private(true), .sensitive(true), .extractable(false), .sign(true), value(ecScalar),
      ])
      _ = try session.createObject([
        .class(.data), .label("lockdown.control"), .token(true), .private(false), value(control),
      ])
      try session.close()
    } catch {
      return LockdownCheck(
        layer: .fileSystem, check: "fs.plaintext", subject: "scratch token store", expected: expected,
        observed: "could not create the known keys: \(error)", verdict: .fail, onSnapshot: false)
    }
    let store = scratch.tokenDirectory(ofPartition: "scratch")
    let secrets =
      PlaintextScan.needles("the AES key's value", aesValue)
      + PlaintextScan.needles("the EC private key's value", ecScalar)
    let leaks = PlaintextScan.find(secrets, under: store)
    let controlFound = !PlaintextScan.find([PlaintextScan.Needle(name: "control", bytes: control)], under: store)
      .isEmpty
    let files = (FileManager.default.enumerator(atPath: store)?.allObjects.count) ?? 0
    var observed =
      leaks.isEmpty
      ? "no known key value in the \(files) entries of the store"
      : "found " + leaks.map { "\($0.needle) in \($0.file)" }.joined(separator: "; ")
    observed += controlFound ? "; the control was found" : "; the control was NOT found: the scan cannot be trusted"
    return LockdownCheck(
      layer: .fileSystem, check: "fs.plaintext", subject: "scratch token store (AES-256 and P-256 keys of known value)",
      expected: expected, observed: observed, verdict: leaks.isEmpty && controlFound ? .pass : .fail,
      onSnapshot: false)
  }

  /// No partition PIN, as the text SoftHSM is given, in any file of the device directory.
  private func pinsCheck() -> LockdownCheck {
    var needles = [PlaintextScan.Needle]()
    for (name, pins) in activation.partitions.sorted(by: { $0.key < $1.key }) {
      needles.append(PlaintextScan.Needle(name: "\(name) User PIN", bytes: pins.user))
      needles.append(PlaintextScan.Needle(name: "\(name) SO PIN", bytes: pins.securityOfficer))
    }
    let found = PlaintextScan.find(needles, under: device.directory)
    return LockdownCheck(
      layer: .fileSystem, check: "fs.pins", subject: device.directory,
      expected: "no partition PIN in any file of the device directory",
      observed: found.isEmpty
        ? "none of the \(needles.count) PINs found"
        : "found " + found.map { "\($0.needle) in \($0.file)" }.joined(separator: "; "),
      verdict: found.isEmpty ? .pass : .fail, onSnapshot: false)
  }
}

/// What an attack's decisive call did.
enum AttackObservation {
  /// Refused with this error; `after` says what the attacker achieved before it.
  case refused(PKCS11Error, after: String?)
  /// It went through: what happened.
  case succeeded(String)
  /// An enumeration: the objects seen.
  case visible([String])
  /// The attack could not be set up (not a verdict on the token).
  case couldNotRun(String)
}

/// The expectation of one attack against one object, resolved against its policy row.
enum ResolvedExpectation {
  case refused([ReturnValue])
  case permitted(String)
  case nothingVisible

  var text: String {
    switch self {
    case .refused(let codes): "refused with \(codes.map(\.name).joined(separator: " or "))"
    case .permitted(let text): text
    case .nothingVisible: "no object visible"
    }
  }

  func isMet(by observation: AttackObservation) -> Bool {
    switch (self, observation) {
    case (.refused(let codes), .refused(let error, _)): codes.contains(error.code)
    case (.permitted, .succeeded): true
    case (.nothingVisible, .visible(let names)): names.isEmpty
    default: false
    }
  }
}

/// Runs the catalogue against one partition of a device (the audited one, or its snapshot).
final class PartitionAttackRun {
  private let partition: Partition
  private let entry: PartitionManifest
  private let pins: PartitionPINs
  private let onSnapshot: Bool
  private let logger: Logger
  private let allowList: Set<MechanismType>
  private let offered: [(type: MechanismType, usages: Set<String>)]
  private var session: Session?
  private var objects = [AuditedObject]()
  /// Set when the token logged out: SoftHSM then drops the handles of private objects, so they
  /// are found again at the next login.
  private var objectsStale = false
  private var attackerKeys = [AttackerKeyKind: (encrypting: ObjectHandle, decrypting: ObjectHandle)]()
  private var payloadHandle: ObjectHandle?
  private(set) var notApplicable = [String]()
  private var checks = [LockdownCheck]()

  init(device: Device, entry: PartitionManifest, pins: PartitionPINs, onSnapshot: Bool, logger: Logger) throws {
    self.partition = try device.partition(entry.name)
    self.entry = entry
    self.pins = pins
    self.onSnapshot = onSnapshot
    self.logger = logger
    self.allowList = Set(device.allowList(of: entry).mechanisms)
    let partition = self.partition
    self.offered = try partition.mechanisms().map { type in
      (type, Set(try partition.module.mechanismInfo(type, slot: partition.slot).usages))
    }
  }

  deinit { try? session?.close() }

  // MARK: Phases

  /// The audited device: the allow-list and policy checks, then every attack that cannot
  /// change the device (enumerations first, before anyone logs in).
  func runOnDevice(_ attacks: [LockdownAttack]) throws -> [LockdownCheck] {
    checks.append(allowListCheck())
    let mine = attacks.filter { $0.target.partition == nil || $0.target.partition == entry.name }
    let beforeLogin: Set<AttackOperation> = [.enumeratePublic, .enumerateSecurityOfficer]
    for attack in mine where beforeLogin.contains(attack.operation) { run(attack) }
    let report = try AttributePolicy.audit(partition: entry.name, session: try userSession())
    objects = report.objects
    checks += policyChecks(report)
    for attack in mine where !beforeLogin.contains(attack.operation) { run(attack) }
    closeUserSession()
    return checks
  }

  /// The snapshot: the destructive attacks, `destroy` last.
  func runOnSnapshot(_ attacks: [LockdownAttack]) throws -> [LockdownCheck] {
    objects = try AttributePolicy.audit(partition: entry.name, session: try userSession()).objects
    let mine = attacks.filter { $0.target.partition == nil || $0.target.partition == entry.name }
    let order: [AttackOperation: Int] = [.setAttributes: 0, .copy: 0, .trustedImport: 1, .destroy: 2]
    for attack in mine.sorted(by: { order[$0.operation, default: 0] < order[$1.operation, default: 0] }) {
      run(attack)
    }
    closeUserSession()
    return checks
  }

  // MARK: Sessions and attacker keys

  /// The partition's User session (opened and logged in on first use).
  private func userSession() throws -> Session {
    if let session { return session }
    let opened = try partition.openSession(readWrite: true)
    do {
      try opened.login(.user, pin: pins.user)
    } catch let error as PKCS11Error where error.code == .userAlreadyLoggedIn {
    }
    session = opened
    if objectsStale {
      objects = try AttributePolicy.audit(partition: entry.name, session: opened).objects
      objectsStale = false
    }
    return opened
  }

  /// Closes the User session: the token logs out and the attacker's session keys are gone.
  private func closeUserSession() {
    if session != nil { objectsStale = true }
    try? session?.close()
    session = nil
    attackerKeys = [:]
    payloadHandle = nil
  }

  /// A key the attacker makes for `kind` (a session object with every usage): the half that
  /// encrypts, verifies and wraps, and the half that decrypts, signs, unwraps and derives (the
  /// same key for secret keys).
  private func attackerKey(_ kind: AttackerKeyKind) throws -> (encrypting: ObjectHandle, decrypting: ObjectHandle) {
    if let key = attackerKeys[kind] { return key }
    let session = try userSession()
    let key: (encrypting: ObjectHandle, decrypting: ObjectHandle)
    switch kind {
    case .aes:
      let handle = try session.generateKey(
        .aesKeyGen,
        [
          .class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .sensitive(false), .extractable(true),
          .encrypt(true), .decrypt(true), .sign(true), .verify(true), .wrap(true), .unwrap(true), .derive(true),
        ])
      key = (handle, handle)
    case .genericSecret:
      let handle = try session.generateKey(
        .genericSecretKeyGen,
        [
          .class(.secretKey), .keyType(.genericSecret), .valueLength(32), .token(false), .sensitive(false),
          .extractable(true), .sign(true), .verify(true), .derive(true),
        ])
      key = (handle, handle)
    case .rsa:
      let pair = try session.generateKeyPair(
        .rsaPKCSKeyPairGen,
        publicKey: [
          .token(false), .modulusBits(2048), .publicExponent([1, 0, 1]), .encrypt(true), .verify(true), .wrap(true),
        ],
        privateKey: [
          .token(false), .sensitive(false), .extractable(true), .decrypt(true), .sign(true), .unwrap(true),
        ])
      key = (pair.publicKey, pair.privateKey)
    case .ec, .ed25519:
      let curve: ECCurve = kind == .ec ? .p256 : .ed25519
      let pair = try session.generateKeyPair(
        curve.keyPairGeneration, publicKey: [.token(false), .ecParams(curve.parameters), .verify(true)],
        privateKey: [.token(false), .sensitive(false), .extractable(true), .sign(true), .derive(kind == .ec)])
      key = (pair.publicKey, pair.privateKey)
    }
    attackerKeys[kind] = key
    return key
  }

  // MARK: Checks

  private func allowListCheck() -> LockdownCheck {
    let offeredSet = Set(offered.map(\.type))
    let extra = offeredSet.subtracting(allowList).sorted().map(\.name)
    let missing = allowList.subtracting(offeredSet).sorted().map(\.name)
    var observed = "offers exactly those \(offeredSet.count)"
    if !extra.isEmpty || !missing.isEmpty {
      observed =
        "offers \(offeredSet.count)"
        + (extra.isEmpty ? "" : "; beyond the allow-list: \(extra.joined(separator: ", "))")
        + (missing.isEmpty ? "" : "; missing: \(missing.joined(separator: ", "))")
    }
    return LockdownCheck(
      layer: .policy, check: "allow-list", partition: entry.name, subject: "C_GetMechanismList",
      expected: "exactly the \(allowList.count) mechanisms of its allow-list (profile \(entry.profile))",
      observed: observed, verdict: extra.isEmpty && missing.isEmpty ? .pass : .fail, onSnapshot: onSnapshot)
  }

  private func policyChecks(_ report: PolicyReport) -> [LockdownCheck] {
    var checks = [LockdownCheck]()
    let count = AttributePolicy.auditedAttributes.count
    for object in report.objects {
      let findings = report.findings.filter { $0.object == object.handle }
      guard let row = object.policy else {
        checks.append(
          LockdownCheck(
            layer: .policy, check: "policy", partition: entry.name, subject: Self.name(of: object),
            expected: "a row of the attribute policy table for every object",
            observed: "no row of the table covers this object", verdict: .fail, onSnapshot: onSnapshot))
        continue
      }
      let mismatches = findings.compactMap { finding -> String? in
        guard case .attributeMismatch(let type, let expected, let actual) = finding.kind else { return nil }
        let found =
          if case .value(let attribute) = actual { "\(attribute)" } else {
            "\(type) \(AuditedObject.describe(actual, of: type))"
          }
        return "\(found), the table says \(expected)"
      }
      checks.append(
        LockdownCheck(
          layer: .policy, check: "policy", partition: entry.name, subject: row.name,
          expected: "all \(count) audited attributes as the table's row says",
          observed: mismatches.isEmpty ? "all \(count) as the table says" : mismatches.joined(separator: "; "),
          verdict: mismatches.isEmpty ? .pass : .fail, onSnapshot: onSnapshot,
          note: row.exceptions.isEmpty ? nil : row.exceptions.map(\.description).joined(separator: "; ")))
    }
    for finding in report.findings where finding.object == nil {
      let (observed, wanted): (String, Int?) =
        switch finding.kind {
        case .missingObject(let found, let wanted): (found == 0 ? "missing" : "\(found) objects", wanted)
        case .duplicateObject(let count, let wanted): ("\(count) objects", wanted)
        default: (finding.description, nil)
        }
      checks.append(
        LockdownCheck(
          layer: .policy, check: "policy", partition: entry.name, subject: finding.objectName,
          expected: wanted == 1 ? "exactly one object" : "exactly \(wanted ?? 0) objects", observed: observed,
          verdict: .fail, onSnapshot: onSnapshot))
    }
    return checks
  }

  static func name(of object: AuditedObject) -> String {
    object.policy?.name
      ?? "\(object.label ?? object.application ?? "unlabelled") (\(object.objectClass.map(\.name) ?? "no class"))"
  }

  // MARK: Running one attack

  private func run(_ attack: LockdownAttack) {
    if attack.operation.isObjectOperation {
      if objectsStale {
        do { _ = try userSession() } catch {
          notApplicable.append("\(attack.id) on \(entry.name): the User session did not reopen: \(error)")
          return
        }
      }
      let classes = attack.target.classes.isEmpty ? attack.operation.defaultClasses : attack.target.classes
      let targets = objects.filter { object in
        guard let objectClass = object.objectClass, classes.contains(objectClass) else { return false }
        if let label = attack.target.label, object.label != label { return false }
        for (type, value) in attack.target.policy {
          guard let row = object.policy, row.expectations[type] == .equals(Attribute.boolean(type, value)!) else {
            return false
          }
        }
        return true
      }
      guard !targets.isEmpty else {
        notApplicable.append("\(attack.id) on \(entry.name): no object matches (\(attack.target))")
        return
      }
      let variants = mechanismVariants(attack)
      guard let variants else { return }
      for object in targets {
        for mechanism in variants {
          for template in templateVariants(attack, object) {
            let variant = [mechanism?.name, template?.map(\.description).joined(separator: ", ")].compactMap { $0 }
            record(attack, object: object, variant: variant) {
              execute(attack.operation, mechanism: mechanism, template: template, on: object)
            }
          }
        }
      }
    } else {
      guard let variants = mechanismVariants(attack) else { return }
      for mechanism in variants {
        for call in Self.calls(attack.operation, mechanism) {
          record(attack, object: nil, variant: [mechanism?.name, call].compactMap { $0 }) {
            executePartition(attack.operation, mechanism: mechanism, call: call)
          }
        }
      }
    }
  }

  /// The mechanisms an attack runs with on this partition (one check each); `[nil]` when it
  /// takes none; nil (recorded as not applicable) when the partition offers none it can use.
  private func mechanismVariants(_ attack: LockdownAttack) -> [MechanismType?]? {
    let operation = attack.operation
    func usable(_ type: MechanismType, _ usages: Set<String>) -> Bool {
      switch operation {
      case .clulowWrapDecrypt:
        return usages.isSuperset(of: ["wrap", "decrypt"]) && AttackMechanisms.uses[type]?.key != nil
      case .clulowEncryptUnwrap:
        return usages.isSuperset(of: ["encrypt", "unwrap"]) && AttackMechanisms.uses[type]?.key != nil
          && aesWrapMechanism != nil
      case .trustedImport:
        return usages.contains("wrap") && AttackMechanisms.uses[type]?.key == .rsa
      case .useOutsideAllowList:
        return AttackMechanisms.uses[type]?.key != nil
          && !usages.isDisjoint(with: ["encrypt", "decrypt", "sign", "verify", "wrap", "derive"])
      case .publicEncryptOutsideAllowList:
        let key = AttackMechanisms.uses[type]?.key
        return usages.contains("encrypt") && key != nil && key != .aes && key != .genericSecret
      case .generate: return !usages.isDisjoint(with: ["generate", "generate_key_pair"])
      case .digest: return usages.contains("digest")
      default: return operation.usage.map(usages.contains) ?? false
      }
    }
    let found: [MechanismType]
    switch attack.mechanism {
    case .none: return [nil]
    case .named(let type): return [type]
    case .eachOffered:
      found = offered.filter { usable($0.type, $0.usages) }.map(\.type)
    case .eachOutsideAllowList:
      found = AttackMechanisms.spoken.filter { type in
        !allowList.contains(type) && usable(type, AttackMechanisms.uses[type]?.usages ?? [])
      }
    }
    if found.isEmpty {
      let which = attack.mechanism == .eachOutsideAllowList ? "outside its allow-list" : "that the partition offers"
      notApplicable.append("\(attack.id) on \(entry.name): no mechanism \(which) serves \(operation)")
      return nil
    }
    return found
  }

  /// The AES wrapping mechanism the partition offers, for wrapping under a key of known value.
  private var aesWrapMechanism: MechanismType? {
    offered.first { $0.usages.contains("wrap") && AttackMechanisms.uses[$0.type]?.key == .aes }?.type
  }

  /// The attribute sets a `set-attributes` or `copy` attack tries on `object` (one check each).
  private func templateVariants(_ attack: LockdownAttack, _ object: AuditedObject) -> [[Attribute]?] {
    let expectations = object.policy?.expectations ?? [:]
    func policyHas(_ attribute: Attribute) -> Bool { expectations[attribute.type] == .equals(attribute) }
    switch attack.template {
    case .none: return [nil]
    case .fixed(let attributes): return [attributes]
    case .usageFlagsOn:
      let flags: [AttributeType] =
        switch object.objectClass {
        case .secretKey?: [.encrypt, .decrypt, .sign, .verify, .wrap, .unwrap, .derive]
        case .privateKey?: [.decrypt, .sign, .signRecover, .unwrap, .derive]
        case .publicKey?: [.encrypt, .verify, .verifyRecover, .wrap, .derive]
        default: []
        }
      return flags.filter { object.policy == nil || policyHas(.boolean($0, false)!) }.map { [.boolean($0, true)!] }
    case .weakenProtections:
      let weakenings: [(strong: Attribute, weak: Attribute)] = [
        (.sensitive(true), .sensitive(false)), (.extractable(false), .extractable(true)),
        (.wrapWithTrusted(true), .wrapWithTrusted(false)),
      ]
      return weakenings.filter { object.policy == nil || policyHas($0.strong) }.map { [$0.weak] }
    }
  }

  private func record(
    _ attack: LockdownAttack, object: AuditedObject?, variant: [String], _ body: () -> AttackObservation
  ) {
    let (expected, note) = resolve(attack.expectation, row: object?.policy)
    let observation = body()
    var code: String? = nil
    let observed: String
    switch observation {
    case .refused(let error, let after):
      code = error.code.name
      observed = (after.map { "\($0); then " } ?? "") + "\(error.function) refused with \(error.code.name)"
    case .succeeded(let text): observed = text
    case .visible(let names):
      observed = names.isEmpty ? "no object visible" : "\(names.count) visible: \(names.joined(separator: ", "))"
    case .couldNotRun(let reason): observed = "could not run: \(reason)"
    }
    let verdict: LockdownCheck.Verdict = expected.isMet(by: observation) ? .pass : .fail
    if verdict == .fail {
      logger.debug(
        "lockdown check failed",
        metadata: ["lockdown.attack": "\(attack.id)", "hsm.partition": "\(entry.name)"])
    }
    checks.append(
      LockdownCheck(
        layer: .attack, check: attack.id, partition: entry.name,
        subject: object.map(Self.name(of:)) ?? "token",
        variant: variant.isEmpty ? nil : variant.joined(separator: " "), expected: expected.text, observed: observed,
        code: code, verdict: verdict, onSnapshot: onSnapshot, note: note))
  }

  private func resolve(_ expectation: AttackExpectation, row: ObjectPolicy?) -> (ResolvedExpectation, String?) {
    switch expectation {
    case .refused(let codes): return (.refused(codes), nil)
    case .notBlocked(let mitigation): return (.permitted("not blocked by the token (mitigated)"), mitigation)
    case .nothingVisible: return (.nothingVisible, nil)
    case .refusedUnlessGranted(let usage, let codes, let mitigation):
      guard let row, let granted = Attribute.boolean(usage, true), row.expectations[usage] == .equals(granted) else {
        return (.refused(codes), nil)
      }
      let reason = row.exceptions.first { $0.attribute.type == usage }?.reason ?? "the table grants \(usage)"
      if let mitigation {
        return (
          .permitted("not blocked by the token (the policy grants \(usage))"), "\(mitigation) (policy: \(reason))"
        )
      }
      return (.permitted("permitted: the policy grants \(usage)"), reason)
    }
  }

  // MARK: Object operations

  private func execute(
    _ operation: AttackOperation, mechanism: MechanismType?, template: [Attribute]?, on object: AuditedObject
  ) -> AttackObservation {
    let key = object.handle
    let session: Session
    do { session = try userSession() } catch { return .couldNotRun("the User session: \(error)") }
    do {
      switch operation {
      case .readValue:
        switch try session.attributes([.value], of: key)[0] {
        case .sensitive:
          return .refused(PKCS11Error(code: .attributeSensitive, function: "C_GetAttributeValue"), after: nil)
        case .invalid:
          return .refused(PKCS11Error(code: .attributeTypeInvalid, function: "C_GetAttributeValue"), after: nil)
        case .value(let attribute):
          return .succeeded("C_GetAttributeValue returned the value in clear (\(attribute.encoded.count) bytes)")
        }
      case .encryptInit, .decryptInit, .signInit, .verifyInit:
        let call =
          switch operation {
          case .encryptInit: "C_EncryptInit"
          case .decryptInit: "C_DecryptInit"
          case .signInit: "C_SignInit"
          default: "C_VerifyInit"
          }
        return attempt(call, mechanism!, encrypting: key, decrypting: key, session: session)
      case .wrap:
        guard let kind = AttackMechanisms.uses[mechanism!]?.key else {
          return .couldNotRun("no attacker key is known for \(mechanism!.name)")
        }
        let wrapping = try attackerKey(kind).encrypting
        return wrapOut(
          key, under: wrapping, mechanism!, session: session, after: nil, what: "the attacker's \(kind.rawValue) key")
      case .derive:
        return derive(from: key, mechanism!, session: session)
      case .setAttributes:
        try session.setAttributes(template ?? [], of: key)
        return .succeeded("C_SetAttributeValue accepted it")
      case .copy:
        let copy = try session.copyObject(key, changing: template ?? [])
        try? session.destroyObject(copy)
        return .succeeded("C_CopyObject made the copy")
      case .destroy:
        try session.destroyObject(key)
        return .succeeded("C_DestroyObject destroyed it")
      case .clulowWrapDecrypt:
        return clulowWrapDecrypt(key, mechanism!, session: session)
      case .clulowEncryptUnwrap:
        return clulowEncryptUnwrap(key, mechanism!, session: session)
      case .trustedImport:
        closeUserSession()
        return trustedImport(object, mechanism!)
      default:
        return .couldNotRun("\(operation) is not an object operation")
      }
    } catch let error as PKCS11Error {
      return .refused(error, after: nil)
    } catch {
      return .couldNotRun("\(error)")
    }
  }

  /// One key-using call with `mechanism`, completed with harmless data: `C_EncryptInit`,
  /// `C_VerifyInit` and `C_WrapKey` (of a throw-away key) with `encrypting`; `C_DecryptInit`,
  /// `C_SignInit` and `C_DeriveKey` with `decrypting` (the same key for a secret key). The
  /// call's own refusal is the observation; a failure after it means the key was accepted.
  private func attempt(
    _ call: String, _ mechanism: MechanismType, encrypting: ObjectHandle, decrypting: ObjectHandle, session: Session
  ) -> AttackObservation {
    let instance = AttackMechanisms.instance(mechanism)
    let data = [UInt8](repeating: 0x42, count: 32)
    let payload: ObjectHandle?
    do { payload = call == "C_WrapKey" ? try payloadKey(session) : nil } catch {
      return .couldNotRun("making a key to wrap: \(error)")
    }
    do {
      let detail: String
      switch call {
      case "C_EncryptInit":
        detail = "C_Encrypt gave \(try session.encrypt(instance, key: encrypting, data).count) bytes"
      case "C_DecryptInit":
        let clear = try session.decryptSecret(instance, key: decrypting, [UInt8](repeating: 0, count: 256))
        detail = "C_Decrypt gave \(clear.count) bytes"
      case "C_SignInit":
        detail = "C_Sign gave a \(try session.sign(instance, key: decrypting, data).count)-byte signature"
      case "C_VerifyInit":
        let valid = try session.verify(instance, key: encrypting, data, signature: [UInt8](repeating: 0, count: 64))
        detail = "C_Verify said \(valid ? "valid" : "invalid")"
      case "C_WrapKey":
        var wrapped = try session.wrapKey(instance, wrappingKey: encrypting, key: payload!)
        SecretBytes.zero(&wrapped)
        detail = "it wrapped a key"
      default:
        let derived = try session.deriveKey(instance, baseKey: decrypting, AttackMechanisms.extractableDerivedKey)
        try? session.destroyObject(derived)
        detail = "it derived a key"
      }
      return .succeeded("\(call) accepted the key with \(mechanism.name); \(detail)")
    } catch let error as PKCS11Error {
      if error.function == call { return .refused(error, after: nil) }
      return .succeeded(
        "\(call) accepted the key with \(mechanism.name) (then \(error.function) returned \(error.code.name))")
    } catch {
      return .couldNotRun("\(error)")
    }
  }

  /// An extractable session key for attacks that need something to wrap.
  private func payloadKey(_ session: Session) throws -> ObjectHandle {
    if let payloadHandle { return payloadHandle }
    let made = try session.generateKey(
      .aesKeyGen, [.class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .extractable(true)])
    payloadHandle = made
    return made
  }

  /// `C_WrapKey` of `key` under `wrapping`: a refusal, or the key out of the token.
  private func wrapOut(
    _ key: ObjectHandle, under wrapping: ObjectHandle, _ mechanism: MechanismType, session: Session, after: String?,
    what: String
  ) -> AttackObservation {
    do {
      var wrapped = try session.wrapKey(AttackMechanisms.instance(mechanism), wrappingKey: wrapping, key: key)
      defer { SecretBytes.zero(&wrapped) }
      return .succeeded(
        (after.map { "\($0); " } ?? "") + "C_WrapKey let the key out under \(what) (\(wrapped.count) bytes)")
    } catch let error as PKCS11Error {
      return .refused(error, after: after)
    } catch {
      return .couldNotRun("\(error)")
    }
  }

  private func derive(from key: ObjectHandle, _ mechanism: MechanismType, session: Session) -> AttackObservation {
    let derived: ObjectHandle
    do {
      derived = try session.deriveKey(
        AttackMechanisms.instance(mechanism), baseKey: key, AttackMechanisms.extractableDerivedKey)
    } catch let error as PKCS11Error {
      return .refused(error, after: nil)
    } catch {
      return .couldNotRun("\(error)")
    }
    defer { try? session.destroyObject(derived) }
    if case .value(let value)? = try? session.attributes([.value], of: derived).first {
      return .succeeded(
        "C_DeriveKey made a non-sensitive, extractable session key and C_GetAttributeValue read its value in clear (\(value.encoded.count) bytes)"
      )
    }
    return .succeeded("C_DeriveKey made a session key with the attacker's template (its value stayed unreadable)")
  }

  private func clulowWrapDecrypt(
    _ key: ObjectHandle, _ mechanism: MechanismType, session: Session
  )
    -> AttackObservation
  {
    let kind = AttackMechanisms.uses[mechanism]!.key!
    let attacker: (encrypting: ObjectHandle, decrypting: ObjectHandle)
    do { attacker = try attackerKey(kind) } catch { return .couldNotRun("making the attacker's key: \(error)") }
    let instance = AttackMechanisms.instance(mechanism)
    var wrapped: [UInt8]
    do {
      wrapped = try session.wrapKey(instance, wrappingKey: attacker.encrypting, key: key)
    } catch let error as PKCS11Error {
      return .refused(error, after: nil)
    } catch {
      return .couldNotRun("\(error)")
    }
    defer { SecretBytes.zero(&wrapped) }
    do {
      let clear = try session.decryptSecret(instance, key: attacker.decrypting, wrapped)
      return .succeeded(
        "C_WrapKey let the key out under the attacker's \(kind.rawValue) key, and C_Decrypt with it gave the key in clear (\(clear.count) bytes)"
      )
    } catch {
      return .succeeded(
        "C_WrapKey let the key out under the attacker's \(kind.rawValue) key (\(wrapped.count) bytes; C_Decrypt then failed: \(error))"
      )
    }
  }

  private func clulowEncryptUnwrap(
    _ key: ObjectHandle, _ mechanism: MechanismType, session: Session
  )
    -> AttackObservation
  {
    guard let wrapMechanism = aesWrapMechanism, let kind = AttackMechanisms.uses[mechanism]?.key else {
      return .couldNotRun("no AES wrapping mechanism offered")
    }
    let known: ObjectHandle
    let matches: Bool
    do {
      let attacker = try attackerKey(kind)
      let instance = AttackMechanisms.instance(mechanism)
      let value = SecretBytes.random(count: 32)
      let encrypted = try session.encrypt(instance, key: attacker.encrypting, secret: value)
      known = try session.unwrapKey(
        instance, unwrappingKey: attacker.decrypting, wrapped: encrypted,
        [
          .class(.secretKey), .keyType(.aes), .token(false), .sensitive(false), .extractable(true), .wrap(true),
          .unwrap(true), .encrypt(true), .decrypt(true),
        ])
      guard case .value(.value(var readBack))? = try session.attributes([.value], of: known).first else {
        return .couldNotRun("the imported key's value could not be read back")
      }
      matches = SecretBytes(readBack).constantTimeEquals(value)
      SecretBytes.zero(&readBack)
    } catch {
      return .couldNotRun("importing a key of known value: \(error)")
    }
    defer { try? session.destroyObject(known) }
    guard matches else { return .couldNotRun("the imported key's value is not the one the attacker encrypted") }
    return wrapOut(
      key, under: known, wrapMechanism, session: session,
      after: "C_Encrypt and C_UnwrapKey (\(mechanism.name)) imported a wrapping key whose value the attacker knows",
      what: "that key of known value (\(wrapMechanism.name))")
  }

  /// As the SO, make a trusted RSA public key whose private half the attacker made; as the
  /// User, wrap the key under it and decrypt. Runs in its own session (it logs in and out).
  private func trustedImport(_ object: AuditedObject, _ mechanism: MechanismType) -> AttackObservation {
    let instance = AttackMechanisms.instance(mechanism)
    let session: Session
    let trusted: ObjectHandle
    let decrypting: ObjectHandle
    do {
      session = try partition.openSession(readWrite: true)
    } catch {
      return .couldNotRun("opening a session: \(error)")
    }
    defer { try? session.close() }
    do {
      try session.login(.user, pin: pins.user)
      // Public session objects survive the logouts below; the private half stays readable.
      let pair = try session.generateKeyPair(
        .rsaPKCSKeyPairGen,
        publicKey: [.token(false), .private(false), .modulusBits(2048), .publicExponent([1, 0, 1]), .wrap(true)],
        privateKey: [
          .token(false), .private(false), .sensitive(false), .extractable(true), .decrypt(true), .unwrap(true),
        ])
      decrypting = pair.privateKey
      let readings = try session.attributes([.modulus, .publicExponent], of: pair.publicKey)
      guard case .value(.modulus(let modulus)) = readings[0], case .value(.publicExponent(let exponent)) = readings[1]
      else { return .couldNotRun("the attacker's RSA public key could not be read") }
      try session.logout()
      try session.login(.securityOfficer, pin: pins.securityOfficer)
      do {
        trusted = try session.createObject([
          .class(.publicKey), .keyType(.rsa), .token(false), .private(false), .modulus(modulus),
          .publicExponent(exponent), .wrap(true), .encrypt(true), .trusted(true),
        ])
      } catch let error as PKCS11Error {
        try? session.logout()
        return .refused(error, after: nil)
      }
      try session.logout()
      try session.login(.user, pin: pins.user)
    } catch {
      return .couldNotRun("\(error)")
    }
    // The logouts dropped the handles of private objects: find the key again.
    var template: [Attribute] = object.objectClass.map { [.class($0)] } ?? []
    if let label = object.label { template.append(.label(label)) }
    guard let key = (try? session.findObjects(template))?.first else {
      return .couldNotRun("the key was not found again after the Security Officer logged out")
    }
    var wrapped: [UInt8]
    do {
      wrapped = try session.wrapKey(instance, wrappingKey: trusted, key: key)
    } catch let error as PKCS11Error {
      return .refused(error, after: "the SO made a trusted RSA key (C_CreateObject with CKA_TRUSTED accepted)")
    } catch {
      return .couldNotRun("\(error)")
    }
    defer { SecretBytes.zero(&wrapped) }
    let clear = (try? session.decryptSecret(instance, key: decrypting, wrapped))?.count
    return .succeeded(
      "the SO made a trusted RSA key; C_WrapKey let the key out under it"
        + (clear.map { ", and C_Decrypt with the attacker's private half gave it in clear (\($0) bytes)" } ?? ""))
  }

  // MARK: Partition operations

  private func executePartition(
    _ operation: AttackOperation, mechanism: MechanismType?, call: String?
  ) -> AttackObservation {
    do {
      switch operation {
      case .enumeratePublic, .enumerateSecurityOfficer:
        return try enumerate(asSecurityOfficer: operation == .enumerateSecurityOfficer)
      case .createTrusted:
        let session = try userSession()
        do {
          let handle = try session.createObject([
            .class(.secretKey), .keyType(.aes), .token(false), .value(try session.generateRandom(32)), .wrap(true),
            .trusted(true),
          ])
          try? session.destroyObject(handle)
          return .succeeded("C_CreateObject made a User key with CKA_TRUSTED true")
        } catch let error as PKCS11Error {
          return .refused(error, after: nil)
        }
      case .useOutsideAllowList:
        return try useOutsideAllowList(mechanism!, call: call)
      case .publicEncryptOutsideAllowList:
        return try useOutsideAllowList(mechanism!, call: "C_EncryptInit")
      case .generate:
        return try generate(mechanism!)
      case .digest:
        let session = try userSession()
        do {
          let digest = try session.digest(.other(mechanism!), Array("custos lockdown".utf8))
          return .succeeded("C_Digest gave \(digest.count) bytes")
        } catch let error as PKCS11Error {
          return .refused(error, after: nil)
        }
      default:
        return .couldNotRun("\(operation) is not a partition operation")
      }
    } catch {
      return .couldNotRun("\(error)")
    }
  }

  /// `C_FindObjects` from a session nobody logged in to, or logged in as SO.
  private func enumerate(asSecurityOfficer: Bool) throws -> AttackObservation {
    closeUserSession()
    let session = try partition.openSession(readWrite: asSecurityOfficer)
    defer { try? session.close() }
    if asSecurityOfficer {
      try session.login(.securityOfficer, pin: pins.securityOfficer)
    } else if try session.info().state != .readOnlyPublic {
      return .couldNotRun("the partition is logged in elsewhere in this process, so no session is public")
    }
    defer { if asSecurityOfficer { try? session.logout() } }
    do {
      let found = try session.findObjects()
      let names = try found.map { handle -> String in
        let readings = try session.attributes([.class, .label], of: handle)
        return "\(readings[1].attribute.map { "\($0)" } ?? "no label") \(readings[0].attribute.map { "\($0)" } ?? "")"
      }
      return .visible(names)
    } catch let error as PKCS11Error {
      return .refused(error, after: nil)
    }
  }

  /// The calls an attack makes with one mechanism (one check each); `[nil]` for attacks
  /// whose variant is the mechanism alone.
  ///
  /// Outside the allow-list, a symmetric mechanism is tried at its first key-using call; an
  /// asymmetric one at every call of its private half (decrypt, sign) and at verify and wrap
  /// with its public half. Encryption with a public key is the separate attack
  /// `public-encrypt-outside-allow-list`: SoftHSM does not apply the allow-list to it.
  static func calls(_ operation: AttackOperation, _ mechanism: MechanismType?) -> [String?] {
    guard operation == .useOutsideAllowList, let mechanism, let use = AttackMechanisms.uses[mechanism],
      let kind = use.key
    else { return [nil] }
    let order: [(usage: String, call: String)] = [
      ("encrypt", "C_EncryptInit"), ("decrypt", "C_DecryptInit"), ("sign", "C_SignInit"),
      ("verify", "C_VerifyInit"), ("wrap", "C_WrapKey"), ("derive", "C_DeriveKey"),
    ]
    if kind == .aes || kind == .genericSecret {
      return order.first { use.usages.contains($0.usage) }.map { [$0.call] } ?? [nil]
    }
    let calls = order.filter { use.usages.contains($0.usage) && $0.usage != "encrypt" }.map(\.call)
    return calls.isEmpty ? [nil] : calls
  }

  /// An attacker key with every usage, used at `call` with a mechanism the allow-list leaves
  /// out: the call's refusal is the observation.
  private func useOutsideAllowList(_ mechanism: MechanismType, call: String?) throws -> AttackObservation {
    guard let call, let kind = AttackMechanisms.uses[mechanism]?.key else {
      return .couldNotRun("no attacker key is known for \(mechanism.name)")
    }
    let session = try userSession()
    let attacker = try attackerKey(kind)
    return attempt(
      call, mechanism, encrypting: attacker.encrypting, decrypting: attacker.decrypting, session: session)
  }

  /// A session key or key pair generated with `mechanism`.
  private func generate(_ mechanism: MechanismType) throws -> AttackObservation {
    let session = try userSession()
    do {
      var made = [ObjectHandle]()
      switch mechanism {
      case .aesKeyGen:
        made.append(
          try session.generateKey(.aesKeyGen, [.class(.secretKey), .keyType(.aes), .valueLength(32), .token(false)]))
      case .genericSecretKeyGen:
        made.append(
          try session.generateKey(
            .genericSecretKeyGen, [.class(.secretKey), .keyType(.genericSecret), .valueLength(32), .token(false)]))
      case .ecKeyPairGen, .ecEdwardsKeyPairGen:
        let curve: ECCurve = mechanism == .ecKeyPairGen ? .p256 : .ed25519
        let pair = try session.generateKeyPair(
          curve.keyPairGeneration, publicKey: [.token(false), .ecParams(curve.parameters)], privateKey: [.token(false)])
        made += [pair.publicKey, pair.privateKey]
      case .rsaPKCSKeyPairGen:
        let pair = try session.generateKeyPair(
          .rsaPKCSKeyPairGen, publicKey: [.token(false), .modulusBits(2048), .publicExponent([1, 0, 1])],
          privateKey: [.token(false)])
        made += [pair.publicKey, pair.privateKey]
      default:
        made.append(try session.generateKey(.other(mechanism), [.token(false)]))
      }
      for handle in made { try? session.destroyObject(handle) }
      return .succeeded("made a session key with \(mechanism.name)")
    } catch let error as PKCS11Error {
      return .refused(error, after: nil)
    }
  }
}
