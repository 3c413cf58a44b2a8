import Crypto
import Custody
import Foundation
import HSMBridge
import Yams

/// The actions a ceremony step can take, with their parameters, what they record, and which
/// actions must have run before them.
public enum CeremonyAction: String, CaseIterable, Sendable {
  /// Every officer proves possession of their token (signs with their PIN); the device enrols
  /// them with their roles and public keys.
  case enrolOfficers = "enrol-officers"
  /// Creates the device (atomically: nothing is left if a later step fails).
  case createDevice = "create-device"
  /// 32 bytes from the token's RNG become the activation secret; every partition's SO and User
  /// PIN is re-set to one derived from it.
  case generateActivationSecret = "generate-activation-secret"
  /// Generates a key of the attribute policy table in a partition.
  case generateKey = "generate-key"
  /// Writes the vault's first root state into the custody partition.
  case initializeRootState = "initialize-root-state"
  /// Splits the activation secret among the unseal key holders, one encrypted share file each,
  /// and zeroes it.
  case splitActivationSecret = "split-activation-secret"
  /// Makes the Crypto User credential, hands it over once and keeps only its Argon2id verifier.
  case enrolCryptoUser = "enrol-crypto-user"
  /// A quorum of unseal key holders activates the device from their shares.
  case verifyActivation = "verify-activation"
  /// Reads every attribute of every object and compares it with the attribute policy.
  case checkAttributePolicy = "check-attribute-policy"

  /// Parameters (`with:`) the action takes, by name, and whether each is a list.
  var parameters: [String: ParameterKind] {
    switch self {
    case .createDevice: ["partitions": .strings]
    case .generateKey: ["partition": .string, "key": .string]
    case .splitActivationSecret: ["threshold": .int, "shares": .int]
    default: [:]
    }
  }

  /// What the action writes into the transcript; a script's `records:` must name only these.
  var records: Set<String> {
    switch self {
    case .enrolOfficers: ["officers"]
    case .createDevice: ["device", "partitions"]
    case .generateActivationSecret: ["source", "partitions", "pins"]
    case .generateKey: ["partition", "key", "objects", "public-key"]
    case .initializeRootState: ["epoch", "leaf-count", "root", "objects"]
    case .splitActivationSecret: ["threshold", "holders", "kdf", "secret"]
    case .enrolCryptoUser: ["verifier", "credential-file"]
    case .verifyActivation: ["holders", "partitions"]
    case .checkAttributePolicy: ["partitions", "findings"]
    }
  }

  /// Actions that must come earlier in the script.
  var requires: [CeremonyAction] {
    switch self {
    case .enrolOfficers: []
    case .createDevice: [.enrolOfficers]
    case .generateActivationSecret, .enrolCryptoUser: [.createDevice]
    case .generateKey, .splitActivationSecret, .initializeRootState: [.generateActivationSecret]
    case .verifyActivation: [.splitActivationSecret]
    case .checkAttributePolicy: [.verifyActivation]
    }
  }

  /// The role the step must have.
  var roles: [Role] {
    switch self {
    case .verifyActivation: [.unsealKeyHolder]
    case .generateKey: [.cryptoOfficer]
    case .checkAttributePolicy: [.auditUser, .securityOfficer]
    default: [.securityOfficer]
    }
  }

  enum ParameterKind { case string, strings, int }
}

/// A parameter value of a step.
public enum StepParameter: Hashable, Sendable {
  case string(String)
  case strings([String])
  case int(Int)
}

/// One numbered step of a ceremony.
public struct CeremonyStep: Hashable, Sendable {
  public let number: Int
  public let title: String
  /// The role whose members authorise it.
  public let role: Role
  /// How many distinct members of the role must authorise it.
  public let quorum: Int
  public let action: CeremonyAction
  /// The action's parameters.
  public let parameters: [String: StepParameter]
  /// What the step does, in words, for the people in the room.
  public let does: String
  /// What it records in the transcript.
  public let records: [String]

  func string(_ name: String) -> String? {
    if case .string(let value)? = parameters[name] { return value }
    return nil
  }

  func strings(_ name: String) -> [String]? {
    if case .strings(let value)? = parameters[name] { return value }
    return nil
  }

  func int(_ name: String) -> Int? {
    if case .int(let value)? = parameters[name] { return value }
    return nil
  }
}

/// A ceremony script (`Ceremonies/*.yaml`): numbered steps, each with its role and quorum, the
/// action, and what it records.
///
/// ```yaml
/// ceremony: init-device
/// title: Initialise an emulated HSM device
/// version: 1
/// summary: ...
/// steps:
///   - step: 4
///     title: Generate the master key
///     role: Crypto Officer
///     quorum: 2
///     action: generate-key
///     with: {partition: custody, key: custos.master}
///     does: ...
///     records: [objects]
/// ```
public struct CeremonyScript: Sendable {
  /// The ceremony's name (`init-device`).
  public let name: String
  public let title: String
  public let version: Int
  public let summary: String
  public let steps: [CeremonyStep]
  /// Where the script was read from.
  public let path: String
  /// SHA-256 of the script's bytes, hex: the transcript records which script ran.
  public let sha256: String

  /// Reads and checks a script.
  public static func load(_ path: String) throws -> CeremonyScript {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw CeremonyError(.scriptInvalid, "no ceremony script at \(path)")
    }
    return try parse(String(decoding: data, as: UTF8.self), path: path)
  }

  /// Parses and checks a script's text; every complaint names the line.
  public static func parse(_ text: String, path: String) throws -> CeremonyScript {
    let reader = YAMLReader(file: path, code: .scriptInvalid)
    let root = try reader.root(text)
    let top = try reader.mapping(
      root, "the script", allowed: ["ceremony", "title", "version", "summary", "steps"])
    let name = try reader.string(top["ceremony"], "'ceremony' (the ceremony's name)", in: root)
    let title = try reader.string(top["title"], "'title'", in: root)
    let version = try reader.int(top["version"], "'version'", in: root)
    let summary = try reader.optionalString(top["summary"], "'summary'") ?? ""
    guard let stepsNode = top["steps"] else { throw reader.fail(root, "'steps' is missing") }
    var steps = [CeremonyStep]()
    var seen = Set<CeremonyAction>()
    for node in try reader.sequence(stepsNode, "'steps'") {
      let fields = try reader.mapping(
        node, "a step", allowed: ["step", "title", "role", "quorum", "action", "with", "does", "records"])
      let number = try reader.int(fields["step"], "'step' (its number)", in: node)
      guard number == steps.count + 1 else {
        throw reader.fail(
          node, "step \(number) is out of order: steps are numbered 1, 2, 3, ... and this is the \(steps.count + 1)th")
      }
      let stepTitle = try reader.string(fields["title"], "step \(number)'s 'title'", in: node)
      let roleName = try reader.string(fields["role"], "step \(number)'s 'role'", in: node)
      guard let role = Role(rawValue: roleName) else {
        throw reader.fail(
          fields["role"],
          "step \(number): unknown role '\(roleName)' (roles: \(Role.allCases.map(\.rawValue).joined(separator: ", ")))"
        )
      }
      let quorum = try reader.int(fields["quorum"], "step \(number)'s 'quorum'", in: node)
      guard quorum >= 1 else { throw reader.fail(fields["quorum"], "step \(number): quorum must be at least 1") }
      let actionName = try reader.string(fields["action"], "step \(number)'s 'action'", in: node)
      guard let action = CeremonyAction(rawValue: actionName) else {
        throw reader.fail(
          fields["action"],
          "step \(number): unknown action '\(actionName)' (actions: \(CeremonyAction.allCases.map(\.rawValue).joined(separator: ", ")))"
        )
      }
      guard action.roles.contains(role) else {
        throw reader.fail(
          fields["role"],
          "step \(number): \(action.rawValue) is done by \(action.roles.map(\.rawValue).joined(separator: " or ")), not \(role)"
        )
      }
      for required in action.requires where !seen.contains(required) {
        throw reader.fail(node, "step \(number): \(action.rawValue) needs an earlier \(required.rawValue) step")
      }
      if action == .createDevice && seen.contains(.createDevice) {
        throw reader.fail(node, "step \(number): the device is created once")
      }
      var parameters = [String: StepParameter]()
      if let with = fields["with"] {
        let given = try reader.mapping(with, "step \(number)'s 'with'", allowed: Set(action.parameters.keys))
        for (key, value) in given {
          switch action.parameters[key]! {
          case .string: parameters[key] = .string(try reader.string(value, "step \(number)'s '\(key)'", in: with))
          case .strings: parameters[key] = .strings(try reader.strings(value, "step \(number)'s '\(key)'", in: with))
          case .int: parameters[key] = .int(try reader.int(value, "step \(number)'s '\(key)'", in: with))
          }
        }
      }
      for key in action.parameters.keys.sorted() where parameters[key] == nil {
        throw reader.fail(node, "step \(number): \(action.rawValue) needs 'with: {\(key): ...}'")
      }
      let step = CeremonyStep(
        number: number, title: stepTitle, role: role, quorum: quorum, action: action, parameters: parameters,
        does: try reader.optionalString(fields["does"], "step \(number)'s 'does'") ?? "",
        records: try fields["records"].map { try reader.strings($0, "step \(number)'s 'records'", in: node) } ?? [])
      for record in step.records where !action.records.contains(record) {
        throw reader.fail(
          fields["records"],
          "step \(number): \(action.rawValue) does not record '\(record)' (it records \(action.records.sorted().joined(separator: ", ")))"
        )
      }
      try checkParameters(step, reader: reader, node: node, steps: steps)
      steps.append(step)
      seen.insert(action)
    }
    guard seen.contains(.createDevice) else {
      throw reader.fail(root, "the script has no create-device step; this build runs device-creating ceremonies")
    }
    return CeremonyScript(
      name: name, title: title, version: version, summary: summary, steps: steps, path: path,
      sha256: Hex.encode(SHA256.hash(data: Array(text.utf8))))
  }

  private static func checkParameters(
    _ step: CeremonyStep, reader: YAMLReader, node: Node, steps: [CeremonyStep]
  ) throws {
    switch step.action {
    case .createDevice:
      let partitions = step.strings("partitions") ?? []
      guard !partitions.isEmpty, Set(partitions).count == partitions.count else {
        throw reader.fail(node, "step \(step.number): create-device needs distinct partitions")
      }
    case .generateKey:
      let partition = step.string("partition") ?? ""
      let key = step.string("key") ?? ""
      let created = steps.first { $0.action == .createDevice }?.strings("partitions") ?? []
      guard created.contains(partition) else {
        throw reader.fail(node, "step \(step.number): partition '\(partition)' is not one the device is created with")
      }
      guard !AttributePolicy.rows(key: key, partition: partition).isEmpty else {
        throw reader.fail(
          node, "step \(step.number): the attribute policy has no key '\(key)' in partition '\(partition)'")
      }
      if steps.contains(where: {
        $0.action == .generateKey && $0.string("key") == key && $0.string("partition") == partition
      }) {
        throw reader.fail(node, "step \(step.number): \(key) is generated twice")
      }
    case .splitActivationSecret:
      let threshold = step.int("threshold") ?? 0
      let shares = step.int("shares") ?? 0
      guard threshold >= 2, threshold <= shares, shares <= 16 else {
        throw reader.fail(node, "step \(step.number): need 2 <= threshold <= shares <= 16")
      }
    case .verifyActivation:
      let threshold = steps.first { $0.action == .splitActivationSecret }?.int("threshold") ?? 2
      guard step.quorum >= threshold else {
        throw reader.fail(node, "step \(step.number): the quorum must be at least the split's threshold \(threshold)")
      }
    default:
      break
    }
  }

  /// The partitions the script creates.
  public var partitions: [String] {
    steps.first { $0.action == .createDevice }?.strings("partitions") ?? []
  }
}
