import Custody
import Foundation
import HSMBridge
import Logging
import Yams

/// Who takes part in a ceremony: officers with their roles and tokens, unseal key holders with
/// their share files, and where the Crypto User credential goes.
///
/// ```yaml
/// officers:
///   - {name: alice, roles: [Security Officer], token: officers/alice, pin: "..."}
/// unseal-holders:
///   - {name: frank, share: shares/frank.share, password: "..."}
/// crypto-user:
///   credential: crypto-user.credential
/// acting:            # optional: who acts at a step (default: the first enrolled in its role)
///   4: [bob, carol]
/// ```
///
/// PINs and passwords belong in the file only for rehearsals; a real run prompts for them on
/// the terminal. Relative paths resolve against the base directory (the rehearsal directory in
/// a rehearsal, the current directory otherwise).
public struct Participants: Sendable {
  public struct Officer: Sendable {
    public let name: String
    public let roles: [Role]
    /// The officer token's directory.
    public let token: String
    /// Rehearsals only.
    public let pin: SecretBytes?
  }

  public struct UnsealHolder: Sendable {
    public let name: String
    /// Where their share file is written.
    public let share: String
    /// Rehearsals only: the password that encrypts the share.
    public let password: SecretBytes?
    /// Rehearsals only: the password typed when unsealing, if it differs (to rehearse a
    /// mistyped password). Defaults to `password`.
    public let unsealPassword: SecretBytes?
  }

  public let officers: [Officer]
  public let holders: [UnsealHolder]
  /// Where the Crypto User credential is written, once.
  public let cryptoUserCredential: String
  /// Who acts at a step, by step number.
  public let acting: [Int: [String]]
  /// The file read.
  public let path: String
  /// The directory relative paths resolve against.
  public let baseDirectory: String

  /// Reads a participants file; relative paths resolve against `baseDirectory`.
  public static func load(_ path: String, baseDirectory: String) throws -> Participants {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw CeremonyError(.participantsInvalid, "no participants file at \(path)")
    }
    return try parse(String(decoding: data, as: UTF8.self), path: path, baseDirectory: baseDirectory)
  }

  /// Parses a participants file's text.
  public static func parse(_ text: String, path: String, baseDirectory: String) throws -> Participants {
    let reader = YAMLReader(file: path, code: .participantsInvalid)
    let root = try reader.root(text)
    let top = try reader.mapping(
      root, "the participants file", allowed: ["officers", "unseal-holders", "crypto-user", "acting"])
    func resolve(_ relative: String) -> String {
      let expanded = (relative as NSString).expandingTildeInPath
      let joined = expanded.hasPrefix("/") ? expanded : baseDirectory + "/" + expanded
      return URL(fileURLWithPath: joined).standardizedFileURL.path
    }
    var names = Set<String>()
    func unique(_ name: String, _ node: Node) throws {
      guard names.insert(name).inserted else { throw reader.fail(node, "'\(name)' is named twice") }
    }

    guard let officersNode = top["officers"] else { throw reader.fail(root, "'officers' is missing") }
    var officers = [Officer]()
    for node in try reader.sequence(officersNode, "'officers'") {
      let fields = try reader.mapping(node, "an officer", allowed: ["name", "roles", "token", "pin"])
      let name = try reader.string(fields["name"], "an officer's 'name'", in: node)
      do { try OfficerToken.validateName(name) } catch let error as HSMBridgeError {
        throw reader.fail(node, error.reason)
      }
      try unique(name, node)
      let roleNames = try reader.strings(fields["roles"], "\(name)'s 'roles'", in: node)
      let roles = try roleNames.map { roleName -> Role in
        guard let role = Role(rawValue: roleName), role.usesOfficerToken else {
          throw reader.fail(
            fields["roles"],
            "\(name): '\(roleName)' is not an officer role (\(Role.officerRoles.map(\.rawValue).joined(separator: ", ")))"
          )
        }
        return role
      }
      guard !roles.isEmpty else { throw reader.fail(node, "\(name) has no role") }
      officers.append(
        Officer(
          name: name, roles: roles, token: resolve(try reader.string(fields["token"], "\(name)'s 'token'", in: node)),
          pin: try reader.optionalString(fields["pin"], "\(name)'s 'pin'").map(SecretBytes.init(utf8:))))
    }

    guard let holdersNode = top["unseal-holders"] else { throw reader.fail(root, "'unseal-holders' is missing") }
    var holders = [UnsealHolder]()
    for node in try reader.sequence(holdersNode, "'unseal-holders'") {
      let fields = try reader.mapping(
        node, "an unseal key holder", allowed: ["name", "share", "password", "unseal-password"])
      let name = try reader.string(fields["name"], "an unseal key holder's 'name'", in: node)
      try unique(name, node)
      holders.append(
        UnsealHolder(
          name: name, share: resolve(try reader.string(fields["share"], "\(name)'s 'share'", in: node)),
          password: try reader.optionalString(fields["password"], "\(name)'s 'password'").map(SecretBytes.init(utf8:)),
          unsealPassword: try reader.optionalString(fields["unseal-password"], "\(name)'s 'unseal-password'").map(
            SecretBytes.init(utf8:))))
    }

    guard let cryptoUserNode = top["crypto-user"] else { throw reader.fail(root, "'crypto-user' is missing") }
    let cryptoUser = try reader.mapping(cryptoUserNode, "'crypto-user'", allowed: ["credential"])
    let credential = resolve(
      try reader.string(
        cryptoUser["credential"], "'crypto-user: credential' (where the credential is written)", in: cryptoUserNode))

    var acting = [Int: [String]]()
    if let actingNode = top["acting"] {
      guard let mapping = actingNode.mapping else {
        throw reader.fail(actingNode, "'acting' must map step numbers to names")
      }
      for (key, value) in mapping {
        guard let step = key.int else { throw reader.fail(key, "'acting' keys are step numbers") }
        acting[step] = try reader.strings(value, "'acting' for step \(step)", in: actingNode)
      }
    }
    return Participants(
      officers: officers, holders: holders, cryptoUserCredential: credential, acting: acting, path: path,
      baseDirectory: baseDirectory)
  }

  /// The officer called `name`.
  public func officer(_ name: String) -> Officer? { officers.first { $0.name == name } }

  /// The unseal key holder called `name`.
  public func holder(_ name: String) -> UnsealHolder? { holders.first { $0.name == name } }

  /// Refuses PINs and passwords in the file outside a rehearsal, and requires them in one.
  func checkSecrets(rehearsal: Bool) throws {
    let officersWithPIN = officers.filter { $0.pin != nil }.map(\.name)
    let holdersWithPassword = holders.filter { $0.password != nil || $0.unsealPassword != nil }.map(\.name)
    if rehearsal {
      let missing =
        officers.filter { $0.pin == nil }.map { "\($0.name)'s pin" }
        + holders.filter { $0.password == nil }.map { "\($0.name)'s password" }
      guard missing.isEmpty else {
        throw CeremonyError(
          .participantsInvalid, "\(path): a rehearsal runs unattended and needs \(missing.joined(separator: ", "))")
      }
    } else if !officersWithPIN.isEmpty || !holdersWithPassword.isEmpty {
      throw CeremonyError(
        .participantsInvalid,
        "\(path) holds PINs or passwords (\((officersWithPIN + holdersWithPassword).joined(separator: ", "))): they are for rehearsals only (--rehearsal); a real ceremony prompts each person"
      )
    }
  }

  /// Opens every officer's token; in a rehearsal, creates the missing ones with the PIN the
  /// file gives.
  func openTokens(rehearsal: Bool, logger: Logger) throws -> [String: OfficerToken] {
    var tokens = [String: OfficerToken]()
    for officer in officers {
      do {
        if rehearsal, !FileManager.default.fileExists(atPath: officer.token), let pin = officer.pin {
          try FileManager.default.createDirectory(
            atPath: (officer.token as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700])
          tokens[officer.name] = try OfficerToken.create(
            at: officer.token, name: officer.name, pin: pin, logger: logger)
        } else {
          let token = try OfficerToken.open(at: officer.token, logger: logger)
          guard token.name == officer.name else {
            throw CeremonyError(
              .participantsInvalid, "\(officer.token) is the officer token of \(token.name), not of \(officer.name)")
          }
          tokens[officer.name] = token
        }
      } catch let error as HSMBridgeError {
        throw CeremonyError(
          .participantsInvalid, "\(officer.name)'s officer token at \(officer.token): \(error.reason)")
      }
    }
    return tokens
  }
}

extension Participants {
  /// The unseal shares of a quorum, to activate a device: each named holder's share file with
  /// their password, taken from the file in a rehearsal and asked on the terminal without echo
  /// otherwise.
  ///
  /// With no names, a rehearsal takes the first `threshold` holders of the file, and a real run
  /// asks on the terminal who is present.
  public func unsealShares(holders names: [String], threshold: Int, rehearsal: Bool) throws -> [UnsealShare] {
    let withPasswords = holders.filter { $0.password != nil || $0.unsealPassword != nil }.map(\.name)
    guard rehearsal || withPasswords.isEmpty else {
      throw CeremonyError(
        .participantsInvalid,
        "\(path) holds passwords (\(withPasswords.joined(separator: ", "))): they belong in a participants file only for rehearsals (--rehearsal); a real unseal asks each holder"
      )
    }
    var chosen = names
    if chosen.isEmpty {
      if rehearsal {
        chosen = holders.prefix(threshold).map(\.name)
      } else {
        chosen = try (1...max(threshold, 1)).map { index in
          try TerminalInput.line(
            "Unseal key holder \(index) of \(threshold), your name (enrolled: \(holders.map(\.name).joined(separator: ", ")))"
          )
        }
      }
    }
    return try chosen.map { name in
      guard let holder = holder(name) else {
        throw CeremonyError(.unknownParticipant, "\(path) has no unseal key holder '\(name)'")
      }
      if rehearsal {
        guard let password = holder.unsealPassword ?? holder.password else {
          throw CeremonyError(.participantsInvalid, "\(path) gives no password for \(name), which a rehearsal needs")
        }
        return UnsealShare(path: holder.share, password: password)
      }
      return UnsealShare(
        path: holder.share, password: try TerminalInput.secret("\(name), the password of your share file"))
    }
  }
}
