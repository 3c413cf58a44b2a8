import Custody
import Foundation
import HSMBridge
import Logging
import Vault

#if canImport(Glibc)
import Glibc
#endif

/// What a completed ceremony produced.
public struct CeremonyOutcome: Sendable {
  /// The device directory.
  public let device: String
  public let serial: String
  /// The transcript's JSON lines (the record of authority).
  public let transcript: String
  /// Its readable Markdown record.
  public let record: String
  /// The hash of the transcript's last line.
  public let head: String
  /// Officers who signed the completed ceremony.
  public let signers: [String]
  /// Files written outside the device: share files and the credential file.
  public let outputs: [String]
}

/// Runs a ceremony script step by step: asks each step's quorum to authorise it with their
/// officer tokens, has the device verify every signature against the enrolled public keys, does
/// the step's action, and records everything in a hash-chained transcript that every officer
/// who took part signs at the end.
///
/// A ceremony that creates a device builds it in a temporary directory and moves it into place
/// only when every step succeeded; on any failure nothing is left behind: no device, no share
/// file, no credential file.
public final class CeremonyEngine {
  public let script: CeremonyScript
  public let participants: Participants
  /// The device directory the ceremony creates.
  public let deviceDirectory: String
  public let deviceName: String
  public let rehearsal: Bool
  private let prompter: CeremonyPrompter
  private let logger: Logger
  private let clock: () -> Date

  public init(
    script: CeremonyScript, participants: Participants, deviceDirectory: String, deviceName: String? = nil,
    rehearsal: Bool, prompter: CeremonyPrompter, logger: Logger, clock: @escaping () -> Date = Date.init
  ) {
    self.script = script
    self.participants = participants
    self.deviceDirectory = URL(fileURLWithPath: deviceDirectory).standardizedFileURL.path
    self.deviceName = deviceName ?? URL(fileURLWithPath: deviceDirectory).lastPathComponent
    self.rehearsal = rehearsal
    self.prompter = prompter
    self.logger = logger
    self.clock = clock
  }

  /// Runs the whole ceremony. Throws `CeremonyError` naming the step and the reason.
  public func run() throws -> CeremonyOutcome {
    try participants.checkSecrets(rehearsal: rehearsal)
    try preflight()
    let state = RunState(transcript: TranscriptWriter(ceremony: script.name, clock: clock))
    do {
      return try run(state)
    } catch {
      // Nothing the ceremony wrote outside the device survives a failure (Device.create
      // removes the device itself).
      for path in state.outputs { try? FileManager.default.removeItem(atPath: path) }
      state.release()
      if let error = error as? CeremonyError { throw error }
      throw CeremonyError(.actionFailed, "\(error)")
    }
  }

  // MARK: Preparation

  private func step(_ action: CeremonyAction) -> CeremonyStep? { script.steps.first { $0.action == action } }

  private func preflight() throws {
    let fileManager = FileManager.default
    if let create = step(.createDevice) {
      guard !fileManager.fileExists(atPath: deviceDirectory) else {
        throw CeremonyError(
          .alreadyExists, step: create,
          "\(deviceDirectory) already exists; a device is never created over one (it was left untouched)")
      }
      let parent = (deviceDirectory as NSString).deletingLastPathComponent
      guard fileManager.fileExists(atPath: parent) else {
        throw CeremonyError(.actionFailed, step: create, "the parent directory \(parent) does not exist")
      }
    }
    if let split = step(.splitActivationSecret) {
      let count = split.int("shares") ?? 0
      guard participants.holders.count == count else {
        throw CeremonyError(
          .participantsInvalid, step: split,
          "the secret is split into \(count) shares but \(participants.path) names \(participants.holders.count) unseal key holders"
        )
      }
      for holder in participants.holders where fileManager.fileExists(atPath: holder.share) {
        throw CeremonyError(
          .alreadyExists, step: split,
          "\(holder.name)'s share file \(holder.share) already exists; a share is never overwritten")
      }
    }
    if let enrol = step(.enrolCryptoUser), fileManager.fileExists(atPath: participants.cryptoUserCredential) {
      throw CeremonyError(
        .alreadyExists, step: enrol,
        "the Crypto User credential file \(participants.cryptoUserCredential) already exists; it is never overwritten")
    }
  }

  private func run(_ state: RunState) throws -> CeremonyOutcome {
    prompter.say("Ceremony \(script.name): \(script.title)\(rehearsal ? " (rehearsal)" : "")")
    prompter.say("  device \(deviceDirectory), \(script.steps.count) steps")
    state.tokens = try participants.openTokens(rehearsal: rehearsal, logger: logger)
    state.enrolment.officers = participants.officers.map { officer in
      let token = state.tokens[officer.name]!
      return EnrolledOfficer(
        name: officer.name, roles: officer.roles, publicKey: token.publicKey, tokenSerial: token.tokenSerial)
    }
    var start = state.transcript.entry(.ceremonyStarted)
    start.title = script.title
    start.participants = state.enrolment.officers.map {
      TranscriptParticipant(
        name: $0.name, roles: $0.roles, publicKey: $0.publicKey, keyID: $0.keyID, tokenSerial: $0.tokenSerial)
    }
    start.holders = participants.holders.map(\.name)
    start.records = [
      "script": .string(script.path), "script-sha256": .string(script.sha256),
      "script-version": .int(script.version), "device-directory": .string(deviceDirectory),
      "rehearsal": .bool(rehearsal),
    ]
    try state.transcript.append(start)
    try runSteps(from: 0, state)
    guard let device = state.device, let transcript = state.transcriptPath, let record = state.recordPath else {
      throw CeremonyError(.actionFailed, "the ceremony ended without a device")
    }
    state.release()
    prompter.say("Ceremony \(script.name) completed: device \(device.directory) (serial \(device.manifest.serial))")
    prompter.say("  transcript \(transcript)")
    return CeremonyOutcome(
      device: device.directory, serial: device.manifest.serial, transcript: transcript, record: record,
      head: state.transcript.head, signers: state.signers, outputs: state.outputs)
  }

  private func runSteps(from first: Int, _ state: RunState) throws {
    var index = first
    while index < script.steps.count {
      let step = script.steps[index]
      prompter.say(
        "Step \(step.number)/\(script.steps.count): \(step.title) [\(step.role)\(step.quorum > 1 ? " x\(step.quorum)" : "")]"
      )
      logger.info(
        "ceremony step", metadata: ["ceremony.name": "\(script.name)", "ceremony.step": "\(step.number)"])
      try within(step) { try authorise(step, state) }
      if step.action == .createDevice {
        try createDevice(step, state, continuing: index + 1)
        return
      }
      let records = try within(step) { try perform(step, state) }
      try complete(step, records: records, state)
      index += 1
    }
  }

  /// Runs `body`, turning any failure into a `CeremonyError` that names `step`.
  private func within<R>(_ step: CeremonyStep, _ body: () throws -> R) throws -> R {
    do {
      return try body()
    } catch let error as CeremonyError {
      if error.step == nil { throw CeremonyError(error.code, step: step, error.reason) }
      throw error
    } catch let error as HSMBridgeError {
      let code: CeremonyError.Code =
        switch error.code {
        case .wrongPassword: .wrongPassword
        case .notEnoughShares: .missingQuorum
        case .deviceExists: .alreadyExists
        default: .actionFailed
        }
      throw CeremonyError(code, step: step, error.reason)
    } catch {
      throw CeremonyError(.actionFailed, step: step, "\(error)")
    }
  }

  private func complete(_ step: CeremonyStep, records: [String: JSONValue], _ state: RunState) throws {
    var entry = state.transcript.entry(.stepCompleted)
    entry.step = step.number
    entry.title = step.title
    entry.action = step.action.rawValue
    entry.records = records
    try state.transcript.append(entry)
    if state.device != nil, state.enrolmentChanged {
      try state.device!.writeEnrolment(state.enrolment)
      state.enrolmentChanged = false
    }
  }

  // MARK: Authorisation

  private func checkQuorum(_ chosen: [String], _ step: CeremonyStep, noun: String) throws {
    var seen = Set<String>()
    for name in chosen where !seen.insert(name).inserted {
      throw CeremonyError(
        .reusedParticipant, step: step,
        "\(name) was presented twice; a quorum of \(step.quorum) needs \(step.quorum) distinct \(noun)")
    }
    guard chosen.count >= step.quorum else {
      throw CeremonyError(
        .missingQuorum, step: step,
        "the quorum is \(step.quorum) distinct \(noun); \(chosen.count) presented (\(chosen.isEmpty ? "nobody" : chosen.joined(separator: ", ")))"
      )
    }
  }

  private func authorise(_ step: CeremonyStep, _ state: RunState) throws {
    let challenge = Challenge.step(
      ceremony: script.name, step: step.number, action: step.action.rawValue, head: state.transcript.head)
    var entry = state.transcript.entry(.stepAuthorised)
    entry.step = step.number
    entry.title = step.title
    entry.role = step.role
    entry.quorum = step.quorum
    entry.action = step.action.rawValue
    entry.challenge = challenge
    if step.role == .unsealKeyHolder {
      let chosen = try prompter.holders(for: step, candidates: participants.holders.map(\.name))
      try checkQuorum(chosen, step, noun: "unseal key holders")
      for name in chosen where participants.holder(name) == nil {
        throw CeremonyError(.unknownParticipant, step: step, "\(name) is not an unseal key holder of this ceremony")
      }
      entry.holders = chosen
      state.actingHolders = chosen
    } else {
      let candidates = state.enrolment.officers.filter { $0.roles.contains(step.role) }.map(\.name)
      let chosen = try prompter.officers(for: step, candidates: candidates)
      try checkQuorum(chosen, step, noun: "\(step.role)s")
      var signatures = [TranscriptSignature]()
      for name in chosen {
        let signature = try sign(
          Array(challenge.utf8), by: name, purpose: "authorise step \(step.number)", step: step, state)
        do {
          try state.enrolment.checkAuthorisation(
            role: step.role, officer: name, challenge: Array(challenge.utf8), signature: signature)
        } catch let error as HSMBridgeError {
          let holdsRole = state.enrolment.officer(named: name)?.roles.contains(step.role) ?? false
          throw CeremonyError(
            holdsRole ? .signatureInvalid : .wrongRole, step: step, "the device refused: \(error.reason)")
        }
        signatures.append(
          TranscriptSignature(
            officer: name, keyID: state.enrolment.officer(named: name)!.keyID, signature: Hex.encode(signature),
            time: state.transcript.now()))
        state.tookPart(name)
      }
      entry.signatures = signatures
    }
    try state.transcript.append(entry)
  }

  /// `officer`'s token signs `message` after their PIN.
  private func sign(
    _ message: [UInt8], by officer: String, purpose: String, step: CeremonyStep, _ state: RunState
  ) throws -> [UInt8] {
    guard let token = state.tokens[officer] else {
      throw CeremonyError(
        .unknownParticipant, step: step, "\(officer) is not an enrolled officer of this ceremony")
    }
    let pin = try prompter.pin(of: officer, for: purpose)
    do {
      return try token.sign(message, pin: pin)
    } catch let error as HSMBridgeError where error.code == .officerRefused {
      throw CeremonyError(.wrongPIN, step: step, error.reason)
    }
  }

  // MARK: Actions

  private func perform(_ step: CeremonyStep, _ state: RunState) throws -> [String: JSONValue] {
    switch step.action {
    case .enrolOfficers: return try enrolOfficers(step, state)
    case .createDevice: throw CeremonyError(.actionFailed, step: step, "the device is created once")
    case .generateActivationSecret: return try generateActivationSecret(step, state)
    case .generateKey: return try generateKey(step, state)
    case .initializeRootState: return try initializeRootState(step, state)
    case .splitActivationSecret: return try splitActivationSecret(step, state)
    case .enrolCryptoUser: return try enrolCryptoUser(step, state)
    case .verifyActivation: return try verifyActivation(step, state)
    case .checkAttributePolicy: return try checkAttributePolicy(step, state)
    }
  }

  private func enrolOfficers(_ step: CeremonyStep, _ state: RunState) throws -> [String: JSONValue] {
    var officers = [JSONValue]()
    for officer in state.enrolment.officers {
      let challenge = Challenge.enrolment(
        ceremony: script.name, officer: officer.name, keyID: officer.keyID, head: state.transcript.head)
      var entry = state.transcript.entry(.officerEnrolled)
      entry.step = step.number
      entry.challenge = challenge
      let signature = try sign(
        Array(challenge.utf8), by: officer.name, purpose: "prove you hold your token", step: step, state)
      guard OfficerSignature.isValid(signature, over: Array(challenge.utf8), publicKey: Hex.decode(officer.publicKey)!)
      else {
        throw CeremonyError(.signatureInvalid, step: step, "\(officer.name)'s proof of possession does not verify")
      }
      entry.signatures = [
        TranscriptSignature(
          officer: officer.name, keyID: officer.keyID, signature: Hex.encode(signature), time: state.transcript.now())
      ]
      try state.transcript.append(entry)
      state.tookPart(officer.name)
      officers.append(
        .object([
          "name": .string(officer.name), "roles": .array(officer.roles.map { .string($0.rawValue) }),
          "key-id": .string(officer.keyID), "public-key": .string(officer.publicKey),
          "token-serial": .string(officer.tokenSerial),
        ]))
      prompter.say(
        "  enrolled \(officer.name) as \(officer.roles.map(\.rawValue).joined(separator: ", ")) (key \(officer.keyID))")
    }
    return ["officers": .array(officers)]
  }

  private func createDevice(_ step: CeremonyStep, _ state: RunState, continuing next: Int) throws {
    let partitions = step.strings("partitions") ?? []
    // Transient PINs: the partitions exist for milliseconds with these, until the activation
    // secret is generated by the token's RNG and the PINs re-set to its derivations.
    var setups = [PartitionSetup]()
    for name in partitions {
      let pins = PartitionPINs(partition: name, securityOfficer: Self.transientPIN(), user: Self.transientPIN())
      state.transientPINs[name] = pins
      setups.append(PartitionSetup(name: name, soPIN: pins.securityOfficer, userPIN: pins.user))
    }
    let device = try within(step) {
      try Device.create(at: deviceDirectory, name: deviceName, partitions: setups, logger: logger) { staged in
        defer { state.releasePartitions() }
        state.device = staged
        state.enrolment.device = staged.manifest.serial
        state.enrolmentChanged = true
        try self.complete(
          step,
          records: [
            "device": .object([
              "name": .string(staged.manifest.name), "serial": .string(staged.manifest.serial),
              "directory": .string(self.deviceDirectory),
            ]),
            "partitions": .array(
              staged.manifest.partitions.map { partition in
                .object([
                  "name": .string(partition.name), "token-serial": .string(partition.tokenSerial),
                  "profile": .string(partition.profile),
                  "mechanisms": .array(partition.mechanisms.map { .string($0) }),
                ])
              }),
          ], state)
        self.prompter.say(
          "  device \(staged.manifest.name), serial \(staged.manifest.serial), partitions \(partitions.joined(separator: ", "))"
        )
        try self.runSteps(from: next, state)
        try self.finish(staged, state)
      }
    }
    state.device = device
    state.transcriptPath = device.directory + "/" + state.transcriptName!
    state.recordPath = device.directory + "/" + state.recordName!
  }

  private static func transientPIN() -> SecretBytes {
    SecretBytes.random(count: 32).hexEncoded()
  }

  private func generateActivationSecret(_ step: CeremonyStep, _ state: RunState) throws -> [String: JSONValue] {
    let device = state.device!
    let names = device.manifest.partitions.map(\.name)
    let source = names[0]
    let secret = try SecretBytes(count: ActivationSecret.length) { buffer in
      try state.session(source).generateRandom(into: buffer)
    }
    let pins = ActivationSecret.partitionPINs(from: secret, partitions: names)
    for name in names {
      let session = try state.session(name)
      let transient = state.transientPINs[name]!
      let derived = pins[name]!
      try session.login(.securityOfficer, pin: transient.securityOfficer)
      try session.setPIN(old: transient.securityOfficer, new: derived.securityOfficer)
      try session.logout()
      try session.login(.user, pin: transient.user)
      try session.setPIN(old: transient.user, new: derived.user)
      try session.logout()
    }
    state.transientPINs = [:]
    state.secret = secret
    state.pins = pins
    prompter.say(
      "  activation secret generated in \(source)'s token; PINs of \(names.joined(separator: ", ")) derived from it")
    return [
      "source": .string("\(ActivationSecret.length) bytes from the RNG of partition \(source)'s token"),
      "partitions": .array(names.map { .string($0) }),
      "pins": .string(
        "the SO and User PIN of every partition re-set to HKDF-SHA256 derivations of the activation secret; never shown"
      ),
    ]
  }

  private func generateKey(_ step: CeremonyStep, _ state: RunState) throws -> [String: JSONValue] {
    let partition = step.string("partition")!
    let key = step.string("key")!
    guard let pins = state.pins[partition] else {
      throw CeremonyError(
        .actionFailed, step: step, "partition \(partition) has no PINs (the activation secret is gone)")
    }
    let session = try state.userSession(partition, pin: pins.user)
    let created = try AttributePolicy.generateKey(key, partition: partition, session: session)
    var objects = [JSONValue]()
    var publicKey: JSONValue = .null
    for (row, handle) in created {
      let readings = try session.attributes(AttributePolicy.auditedAttributes, of: handle)
      var attributes = [String: JSONValue]()
      for (type, reading) in zip(AttributePolicy.auditedAttributes, readings) {
        switch reading {
        case .value(let attribute): attributes[type.name] = .string(Self.text(attribute))
        case .sensitive: attributes[type.name] = .string("(sensitive: unreadable)")
        case .invalid: break
        }
        if case .value(.ecPoint(let der)) = reading, der.count == 67 {
          publicKey = .string(Hex.encode(der.dropFirst(2)))
        }
      }
      objects.append(
        .object([
          "handle": .int(Int(handle.rawValue)), "class": .string(row.objectClass.name), "label": .string(key),
          "attributes": .object(attributes),
        ]))
    }
    prompter.say(
      "  generated \(key) in \(partition): \(created.map { "\($0.policy.objectClass) handle \($0.handle.rawValue)" }.joined(separator: ", "))"
    )
    return ["partition": .string(partition), "key": .string(key), "objects": .array(objects), "public-key": publicKey]
  }

  private func initializeRootState(_ step: CeremonyStep, _ state: RunState) throws -> [String: JSONValue] {
    let partition = "custody"
    guard let pins = state.pins[partition] else {
      throw CeremonyError(
        .actionFailed, step: step, "partition \(partition) has no PINs (the activation secret is gone)")
    }
    let session = try state.userSession(partition, pin: pins.user)
    let store = try RootStateStore.initialize(session: session, logger: logger)
    let objects = try session.findObjects([.class(.data), .application(RootStateStore.application)])
    prompter.say(
      "  root state: epoch \(store.state.epoch), \(store.state.leafCount) leaf, root \(store.state.root.hex) (\(objects.count) slots)"
    )
    return [
      "epoch": .int(Int(store.state.epoch)), "leaf-count": .int(Int(store.state.leafCount)),
      "root": .string(store.state.root.hex), "objects": .int(objects.count),
    ]
  }

  /// An attribute's value as the transcript shows it.
  private static func text(_ attribute: Attribute) -> String {
    if let value = attribute.boolValue { return "\(value)" }
    let description = attribute.description
    guard let equals = description.firstIndex(of: "=") else { return description }
    return String(description[description.index(after: equals)...])
  }

  private func splitActivationSecret(_ step: CeremonyStep, _ state: RunState) throws -> [String: JSONValue] {
    let device = state.device!
    let threshold = step.int("threshold")!
    let count = step.int("shares")!
    guard let secret = state.secret else {
      throw CeremonyError(.actionFailed, step: step, "there is no activation secret to split")
    }
    let source = device.manifest.partitions[0].name
    let random = try state.session(source)
    let shares = try Shamir.split(secret, threshold: threshold, count: count) { try random.generateRandom(into: $0) }
    var holders = [JSONValue]()
    for (holder, share) in zip(participants.holders, shares) {
      let password = try prompter.newSharePassword(of: holder.name)
      let file = try UnsealShareFile.seal(
        share, holder: holder.name, device: device.manifest.serial, threshold: threshold, count: count,
        password: password, salt: try random.generateRandom(16), nonce: try random.generateRandom(12))
      try FileManager.default.createDirectory(
        atPath: (holder.share as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
        attributes: [.posixPermissions: 0o700])
      state.outputs.append(holder.share)
      try file.write(to: holder.share)
      state.enrolment.unsealHolders.append(EnrolledUnsealHolder(name: holder.name, shareIndex: Int(share.index)))
      holders.append(
        .object([
          "name": .string(holder.name), "share-index": .int(Int(share.index)), "share-file": .string(holder.share),
        ]))
      prompter.say("  share \(share.index) of \(count) sealed for \(holder.name): \(holder.share)")
    }
    state.enrolment.activation = ActivationRecord(
      threshold: threshold, shares: count, partitions: device.manifest.partitions.map(\.name),
      check: ActivationSecret.checkValue(of: secret))
    state.enrolmentChanged = true
    // The secret and everything derived from it leave memory: sessions log out, PINs and the
    // secret are released (SecretBytes zeroes itself).
    state.logoutAll()
    state.pins = [:]
    state.secret = nil
    prompter.say("  activation secret zeroed; \(threshold) of the \(count) unseal key holders are needed to activate")
    return [
      "threshold": .int(threshold), "holders": .array(holders),
      "kdf": .object([
        "algorithm": .string("argon2id"), "t": .int(Int(Argon2.Parameters.custos.t)),
        "m": .int(Int(Argon2.Parameters.custos.m)), "p": .int(Int(Argon2.Parameters.custos.p)),
        "cipher": .string("AES-256-GCM"),
      ]),
      "secret": .string("zeroed after splitting; every partition session logged out"),
    ]
  }

  private func enrolCryptoUser(_ step: CeremonyStep, _ state: RunState) throws -> [String: JSONValue] {
    let device = state.device!
    let random = try state.session(device.manifest.partitions[0].name)
    let seed = try SecretBytes(count: 32) { try random.generateRandom(into: $0) }
    let credential = try CryptoUserCredential.make(fromRandom: seed)
    let verifier = try CredentialVerifier.make(for: credential, salt: try random.generateRandom(16))
    let path = participants.cryptoUserCredential
    try FileManager.default.createDirectory(
      atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
      attributes: [.posixPermissions: 0o700])
    state.outputs.append(path)
    try Self.writeSecret(credential, to: path)
    state.enrolment.cryptoUser = verifier
    state.enrolmentChanged = true
    prompter.say("  Crypto User credential written once to \(path); the device keeps only its Argon2id verifier")
    return [
      "verifier": .object([
        "algorithm": .string(verifier.kdf.algorithm), "t": .int(Int(verifier.kdf.t)),
        "m": .int(Int(verifier.kdf.m)), "p": .int(Int(verifier.kdf.p)),
      ]),
      "credential-file": .string(path),
    ]
  }

  /// Writes a secret and a newline to a new file (0600); never replaces one.
  static func writeSecret(_ secret: SecretBytes, to path: String) throws {
    let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    guard descriptor >= 0 else {
      throw CeremonyError(.alreadyExists, "cannot create \(path): \(String(cString: strerror(errno)))")
    }
    defer { close(descriptor) }
    let written = secret.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
    guard written == secret.count, write(descriptor, "\n", 1) == 1, fsync(descriptor) == 0 else {
      throw CeremonyError(.actionFailed, "cannot write \(path): \(String(cString: strerror(errno)))")
    }
  }

  private func verifyActivation(_ step: CeremonyStep, _ state: RunState) throws -> [String: JSONValue] {
    let device = state.device!
    let shares = try state.actingHolders.map { name in
      UnsealShare(path: participants.holder(name)!.share, password: try prompter.sharePassword(of: name))
    }
    let activation = try device.activate(shares: shares)
    try device.checkActivation(activation)
    state.activation = activation
    prompter.say(
      "  \(activation.holders.joined(separator: " and ")) activated the device: every partition's PINs log in")
    return [
      "holders": .array(activation.holders.map { .string($0) }),
      "partitions": .array(device.manifest.partitions.map { .string($0.name) }),
    ]
  }

  private func checkAttributePolicy(_ step: CeremonyStep, _ state: RunState) throws -> [String: JSONValue] {
    let device = state.device!
    guard let activation = state.activation else {
      throw CeremonyError(.actionFailed, step: step, "the device is not activated")
    }
    var partitions = [JSONValue]()
    var findings = [PolicyFinding]()
    for name in device.manifest.partitions.map(\.name) {
      let session = try state.userSession(name, pin: try activation.pins(name).user)
      let report = try AttributePolicy.audit(partition: name, session: session)
      findings += report.findings
      partitions.append(
        .object([
          "partition": .string(name), "objects": .int(report.objects.count),
          "checked": .array(report.objects.map { .string($0.policy?.name ?? "\($0.handle)") }),
          "attributes-read": .int(report.objects.count * AttributePolicy.auditedAttributes.count),
        ]))
    }
    state.logoutAll()
    state.activation = nil
    guard findings.isEmpty else {
      throw CeremonyError(
        .actionFailed, step: step,
        "the device departs from the attribute policy: \(findings.map(\.description).joined(separator: "; "))")
    }
    prompter.say("  every attribute of every object matches the attribute policy")
    return ["partitions": .array(partitions), "findings": .int(0)]
  }

  // MARK: Completion

  private func finish(_ device: Device, _ state: RunState) throws {
    let stamp = Self.fileStamp(clock())
    let base = "transcripts/\(script.name)-\(stamp)"
    state.transcriptName = base + ".jsonl"
    state.recordName = base + ".md"
    state.enrolment.transcripts.append(base + ".jsonl")
    try device.writeEnrolment(state.enrolment)
    var completed = state.transcript.entry(.ceremonyCompleted)
    completed.records = [
      "device-serial": .string(device.manifest.serial), "steps": .int(script.steps.count),
      "enrolment": .string(Enrolment.fileName),
      "signers": .array(state.signers.map { .string($0) }),
    ]
    let head = try state.transcript.append(completed)
    prompter.say("Sign-off: every officer who took part signs the chain head \(head)")
    for name in state.signers {
      let challenge = Challenge.signOff(ceremony: script.name, head: head)
      var entry = state.transcript.entry(.signOff)
      entry.head = head
      entry.challenge = challenge
      guard let token = state.tokens[name] else { continue }
      let pin = try prompter.pin(of: name, for: "sign the transcript")
      let signature: [UInt8]
      do {
        signature = try token.sign(Array(challenge.utf8), pin: pin)
      } catch let error as HSMBridgeError {
        throw CeremonyError(.wrongPIN, "sign-off: \(error.reason)")
      }
      entry.signatures = [
        TranscriptSignature(
          officer: name, keyID: EnrolledOfficer.keyID(of: token.publicKey), signature: Hex.encode(signature),
          time: state.transcript.now())
      ]
      try state.transcript.append(entry)
    }
    let directory = device.directory + "/transcripts"
    try FileManager.default.createDirectory(
      atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    let markdown = TranscriptMarkdown.render(
      state.transcript.entries, head: state.transcript.head,
      jsonLinesName: (state.transcriptName! as NSString).lastPathComponent, title: script.title)
    try Data(state.transcript.text.utf8).write(to: URL(fileURLWithPath: device.directory + "/" + state.transcriptName!))
    try Data(markdown.utf8).write(to: URL(fileURLWithPath: device.directory + "/" + state.recordName!))
    // The transcript as written must verify before the device is moved into place.
    do {
      _ = try TranscriptVerifier.verify(path: device.directory + "/" + state.transcriptName!)
    } catch let error as TranscriptError {
      throw CeremonyError(.actionFailed, "the transcript does not verify: \(error)")
    }
  }

  static func fileStamp(_ date: Date) -> String {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = TimeZone(identifier: "UTC")
    formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
    return formatter.string(from: date)
  }
}

/// Everything a run holds while it goes: tokens, the device being built, open partitions, and
/// the secrets of the moment (released as soon as a step no longer needs them).
private final class RunState {
  let transcript: TranscriptWriter
  var tokens: [String: OfficerToken] = [:]
  var enrolment = Enrolment(device: "")
  var enrolmentChanged = false
  var device: Device?
  var partitions: [String: Partition] = [:]
  var sessions: [String: Session] = [:]
  var loggedIn: Set<String> = []
  var transientPINs: [String: PartitionPINs] = [:]
  var pins: [String: PartitionPINs] = [:]
  var secret: SecretBytes?
  var activation: DeviceActivation?
  var actingHolders: [String] = []
  var outputs: [String] = []
  private(set) var signers: [String] = []
  var transcriptName: String?
  var recordName: String?
  var transcriptPath: String?
  var recordPath: String?

  init(transcript: TranscriptWriter) { self.transcript = transcript }

  func tookPart(_ officer: String) {
    if !signers.contains(officer) { signers.append(officer) }
  }

  /// A read-write session on `partition` of the device being built (not logged in).
  func session(_ name: String) throws -> Session {
    if let session = sessions[name] { return session }
    let partition = try partitions[name] ?? device!.partition(name)
    partitions[name] = partition
    let session = try partition.openSession(readWrite: true)
    sessions[name] = session
    return session
  }

  /// The session on `partition`, logged in as its User.
  func userSession(_ name: String, pin: SecretBytes) throws -> Session {
    let session = try session(name)
    if !loggedIn.contains(name) {
      try session.login(.user, pin: pin)
      loggedIn.insert(name)
    }
    return session
  }

  func logoutAll() {
    for name in loggedIn { try? sessions[name]?.logout() }
    loggedIn = []
  }

  /// Closes every session and lets go of every partition (as `Device.create` requires).
  func releasePartitions() {
    logoutAll()
    for session in sessions.values { try? session.close() }
    sessions = [:]
    partitions = [:]
  }

  /// Lets go of everything, secrets first.
  func release() {
    secret = nil
    pins = [:]
    transientPINs = [:]
    activation = nil
    releasePartitions()
    tokens = [:]
  }
}
